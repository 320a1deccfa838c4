package grpcserver

import (
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/campaignmesh/campaignmesh/internal/platform/apperr"
)

// refuseNUL answers INVALID_ARGUMENT naming the first string field of m (at any depth: lists,
// map keys and values, nested messages, google.protobuf.Struct and Value) that holds a NUL
// byte. PostgreSQL cannot store NUL in text, and no CampaignMesh string has a use for it, so
// it is refused for every RPC here rather than failing inside a store. The same walk refuses
// a google.protobuf.Timestamp or Duration outside its documented range (years 1 to 9999,
// ±10,000 years, nanos in range), which only a hand-made gRPC message can carry and which
// would otherwise reach a store as a time it cannot hold.
func refuseNUL(req any) error {
	m, ok := req.(proto.Message)
	if !ok {
		return nil
	}
	field, reason := findNUL(m.ProtoReflect(), "")
	if field == "" {
		return nil
	}
	var v apperr.Violations
	v.Add(field, "%s", reason)
	return v.Err()
}

// findNUL returns the path of the first string holding NUL (or malformed time) in m and what
// is wrong with it, or "". The walk builds no path until it finds one, so a clean 1,000-event
// batch costs no allocations for names.
func findNUL(m protoreflect.Message, prefix string) (path, reason string) {
	trail, ok := nulTrail(m)
	if !ok {
		return "", ""
	}
	path, reason = prefix, "must not contain a NUL byte"
	for i := len(trail) - 1; i >= 0; i-- {
		switch e := trail[i]; {
		case e.reason != "":
			reason = e.reason
		case e.name != "":
			path = join(path, e.name)
		default:
			path = index(path, e.key)
		}
	}
	return orRequest(path), reason
}

// step is one element of a field path, collected innermost first: a field name, or a list
// index or map key.
type step struct{ name, key, reason string }

func nulTrail(m protoreflect.Message) ([]step, bool) {
	// Event properties are Structs: walk them as Go values, which reflection over their maps
	// would make ten times as costly.
	switch v := m.Interface().(type) {
	case *structpb.Struct:
		return structTrail(v)
	case *structpb.Value:
		return jsonValueTrail(v)
	case *structpb.ListValue:
		return listTrail(v)
	case *timestamppb.Timestamp:
		if v.CheckValid() != nil {
			return []step{{reason: "is not a valid time (years 1 to 9999)"}}, true
		}
		return nil, false
	case *durationpb.Duration:
		if v.CheckValid() != nil {
			return []step{{reason: "is not a valid duration"}}, true
		}
		return nil, false
	}
	md := m.Descriptor()
	structLike := isStructLike(md)
	fields := md.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !mayHoldString(fd) || !m.Has(fd) {
			continue
		}
		trail, found := fieldTrail(fd, m.Get(fd), structLike)
		if found {
			if !structLike {
				trail = append(trail, step{name: string(fd.Name())})
			}
			return trail, true
		}
	}
	return nil, false
}

// mayHoldString reports whether a field is or may contain a string.
func mayHoldString(fd protoreflect.FieldDescriptor) bool {
	if fd.IsMap() {
		return mayHoldString(fd.MapKey()) || mayHoldString(fd.MapValue())
	}
	switch fd.Kind() {
	case protoreflect.StringKind, protoreflect.MessageKind, protoreflect.GroupKind:
		return true
	}
	return false
}

func fieldTrail(fd protoreflect.FieldDescriptor, v protoreflect.Value, structLike bool) ([]step, bool) {
	switch {
	case fd.IsList():
		l := v.List()
		for i := 0; i < l.Len(); i++ {
			if trail, found := valueTrail(fd, l.Get(i)); found {
				return append(trail, step{key: strconv.Itoa(i)}), true
			}
		}
		return nil, false
	case fd.IsMap():
		return mapTrail(fd, v.Map(), structLike)
	}
	return valueTrail(fd, v)
}

func mapTrail(fd protoreflect.FieldDescriptor, m protoreflect.Map, structLike bool) (trail []step, found bool) {
	m.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
		if fd.MapKey().Kind() == protoreflect.StringKind && strings.IndexByte(k.String(), 0) >= 0 {
			found = true
			return false
		}
		if trail, found = valueTrail(fd.MapValue(), mv); found {
			if structLike {
				trail = append(trail, step{name: k.String()})
			} else {
				trail = append(trail, step{key: k.String()})
			}
		}
		return !found
	})
	return trail, found
}

func valueTrail(fd protoreflect.FieldDescriptor, v protoreflect.Value) ([]step, bool) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return nil, strings.IndexByte(v.String(), 0) >= 0
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return nulTrail(v.Message())
	}
	return nil, false
}

func structTrail(s *structpb.Struct) ([]step, bool) {
	for k, v := range s.GetFields() {
		if strings.IndexByte(k, 0) >= 0 {
			return nil, true
		}
		if trail, found := jsonValueTrail(v); found {
			return append(trail, step{name: k}), true
		}
	}
	return nil, false
}

func listTrail(l *structpb.ListValue) ([]step, bool) {
	for i, v := range l.GetValues() {
		if trail, found := jsonValueTrail(v); found {
			return append(trail, step{key: strconv.Itoa(i)}), true
		}
	}
	return nil, false
}

func jsonValueTrail(v *structpb.Value) ([]step, bool) {
	switch k := v.GetKind().(type) {
	case *structpb.Value_StringValue:
		return nil, strings.IndexByte(k.StringValue, 0) >= 0
	case *structpb.Value_StructValue:
		return structTrail(k.StructValue)
	case *structpb.Value_ListValue:
		return listTrail(k.ListValue)
	}
	return nil, false
}

// isStructLike reports the well-known JSON-shaped messages, whose inner field names
// (fields, string_value, values…) mean nothing to the caller: paths run through them as the
// JSON keys and indexes the caller wrote.
func isStructLike(md protoreflect.MessageDescriptor) bool {
	switch md.FullName() {
	case "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue":
		return true
	}
	return false
}
