package delivery_test

import (
	"context"
	"strings"
	"testing"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
	"github.com/campaignmesh/campaignmesh/services/delivery"
)

// A bad header fails the whole import before any row is read (the nil store is never
// reached).
func TestImportCSVHeader(t *testing.T) {
	a := delivery.NewAudiences(nil, nil)
	for name, file := range map[string]string{
		"empty":            "",
		"unknown column":   "email,shoe_size\na@b.io,44\n",
		"bad attr name":    "email,attr.Shoe Size\n",
		"twice":            "email,Email\n",
		"first_name twice": "email,first_name,attr.first_name\n",
		"no identifier":    "first_name,attr.plan\nAnn,pro\n",
		"broken quoting":   "\"email\nx",
	} {
		t.Run(name, func(t *testing.T) {
			res, err := a.ImportCSV(context.Background(), "t1", strings.NewReader(file))
			if !apperr.HasCode(err, apperr.Invalid) {
				t.Errorf("error %v, want Invalid", err)
			}
			if res.Created+res.Updated+res.Failed != 0 {
				t.Errorf("result %+v, want nothing done", res)
			}
		})
	}
	cols := "email,"
	for i := range delivery.DefaultImportLimits.MaxColumns {
		cols += "attr.c" + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ","
	}
	if _, err := a.ImportCSV(context.Background(), "t1", strings.NewReader(strings.TrimSuffix(cols, ",")+"\n")); !apperr.HasCode(err, apperr.Invalid) {
		t.Errorf("too many columns: %v, want Invalid", err)
	}
}
