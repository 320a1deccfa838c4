package delivery_test

import (
	"fmt"
	"math"
	"testing"

	"github.com/campaignmesh/campaignmesh/services/delivery"
)

func TestAssignVariantStableAndByWeight(t *testing.T) {
	t.Parallel()
	vs := []delivery.Variant{{Name: "a", Weight: 70}, {Name: "b", Weight: 30}}
	counts := map[string]int{}
	const n = 100_000
	for i := range n {
		id := fmt.Sprintf("contact-%d", i)
		v, err := delivery.AssignVariant("camp-1", id, vs)
		if err != nil {
			t.Fatal(err)
		}
		again, _ := delivery.AssignVariant("camp-1", id, vs)
		if again != v {
			t.Fatalf("%s: %s then %s", id, v, again)
		}
		counts[v]++
	}
	// Binomial standard deviation is sqrt(n*0.7*0.3) ≈ 145: 5 of them either way.
	if d := math.Abs(float64(counts["a"]) - 0.7*n); d > 5*145 {
		t.Fatalf("split %v, want 70/30 of %d", counts, n)
	}
}

func TestAssignVariantSaltedByCampaign(t *testing.T) {
	t.Parallel()
	vs := []delivery.Variant{{Name: "a", Weight: 1}, {Name: "b", Weight: 1}}
	same := 0
	for i := range 1000 {
		id := fmt.Sprintf("c%d", i)
		x, _ := delivery.AssignVariant("camp-1", id, vs)
		y, _ := delivery.AssignVariant("camp-2", id, vs)
		if x == y {
			same++
		}
	}
	if same < 400 || same > 600 {
		t.Fatalf("%d of 1000 contacts in the same arm of two campaigns; want about half", same)
	}
}

func TestAssignVariantWeights(t *testing.T) {
	t.Parallel()
	if _, err := delivery.AssignVariant("c", "x", nil); err == nil {
		t.Fatal("no variants: want an error")
	}
	if _, err := delivery.AssignVariant("c", "x", []delivery.Variant{{Name: "a", Weight: 0}}); err == nil {
		t.Fatal("zero total weight: want an error")
	}
	if _, err := delivery.AssignVariant("c", "x", []delivery.Variant{{Name: "a", Weight: -1}, {Name: "b", Weight: 2}}); err == nil {
		t.Fatal("negative weight: want an error")
	}
	for i := range 200 {
		v, err := delivery.AssignVariant("c", fmt.Sprint(i), []delivery.Variant{{Name: "off", Weight: 0}, {Name: "on", Weight: 5}})
		if err != nil || v != "on" {
			t.Fatalf("zero-weight arm chosen: %q %v", v, err)
		}
	}
}
