package k8stest

import (
	"testing"
)

func TestBuildBase(t *testing.T) {
	objs, err := Build("../base")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		t.Log(o.ID())
	}
}
