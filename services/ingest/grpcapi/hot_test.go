package grpcapi_test

import (
	"testing"

	ingestv1 "github.com/campaignmesh/campaignmesh/gen/campaignmesh/ingest/v1"
	"github.com/campaignmesh/campaignmesh/services/ingest/grpcapi"
)

// HotMethods names every RPC of the service that carries events, by its full name (a renamed RPC
// would silently log at info again). TailEvents carries none in: a tail is rare and long, and
// its calls log at info.
func TestHotMethodsAreTheEventRPCs(t *testing.T) {
	hot := map[string]bool{}
	for _, m := range grpcapi.HotMethods {
		hot[m] = true
	}
	desc := ingestv1.IngestService_ServiceDesc
	var all []string
	for _, m := range desc.Methods {
		all = append(all, "/"+desc.ServiceName+"/"+m.MethodName)
	}
	for _, s := range desc.Streams {
		all = append(all, "/"+desc.ServiceName+"/"+s.StreamName)
	}
	for _, m := range all {
		if m == ingestv1.IngestService_TailEvents_FullMethodName {
			if hot[m] {
				t.Errorf("%s is in HotMethods", m)
			}
			continue
		}
		if !hot[m] {
			t.Errorf("%s is not in HotMethods", m)
		}
		delete(hot, m)
	}
	for m := range hot {
		t.Errorf("HotMethods names %s, which the service does not have", m)
	}
}
