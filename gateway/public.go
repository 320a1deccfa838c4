package gateway

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/campaignmesh/campaignmesh/internal/platform/access"
)

// The edge describes and serves only what the public may call. Internal RPCs (whose access rule
// admits only mesh identities) have no REST mapping in the API definition; here the gRPC proxy
// refuses them as unknown and reflection leaves them out, so nobody outside learns they exist.

// publicMethod reports whether the edge may forward fullMethod ("/pkg.Service/Method").
func publicMethod(fullMethod string) bool { return !access.Internal(fullMethod) }

// publicFiles is a copy of the registry's files in which the backends' services have lost their
// internal methods: reflection resolves descriptors from it.
func publicFiles(backends []Backend) (*protoregistry.Files, error) {
	set := &descriptorpb.FileDescriptorSet{}
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		fdp := protodesc.ToFileDescriptorProto(fd)
		if ownedByBackend(string(fd.Package()), backends) {
			for _, sd := range fdp.GetService() {
				var kept []*descriptorpb.MethodDescriptorProto
				for _, md := range sd.GetMethod() {
					if publicMethod(fmt.Sprintf("/%s.%s/%s", fd.Package(), sd.GetName(), md.GetName())) {
						kept = append(kept, md)
					}
				}
				sd.Method = kept
			}
		}
		set.File = append(set.File, fdp)
		return true
	})
	files, err := protodesc.NewFiles(set)
	if err != nil {
		return nil, fmt.Errorf("build public descriptors: %w", err)
	}
	return files, nil
}

func ownedByBackend(pkg string, backends []Backend) bool {
	for _, b := range backends {
		if pkg == b.Package {
			return true
		}
	}
	return false
}

// meshServices lists, for reflection, the gateway's own services and every service of the
// backends' proto packages with its public methods.
type meshServices struct {
	own      *grpc.Server
	backends []Backend
	files    *protoregistry.Files
}

func (m meshServices) GetServiceInfo() map[string]grpc.ServiceInfo {
	out := m.own.GetServiceInfo()
	m.files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if !ownedByBackend(string(fd.Package()), m.backends) {
			return true
		}
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			info := grpc.ServiceInfo{Metadata: fd.Path()}
			for j := 0; j < sd.Methods().Len(); j++ {
				info.Methods = append(info.Methods, grpc.MethodInfo{Name: string(sd.Methods().Get(j).Name())})
			}
			if len(info.Methods) > 0 {
				out[string(sd.FullName())] = info
			}
		}
		return true
	})
	return out
}

// publicMethods is the set of full method names the edge forwards, plus its own services'.
func publicMethods(files *protoregistry.Files, backends []Backend) map[string]bool {
	out := map[string]bool{
		"/grpc.health.v1.Health/Check": true, "/grpc.health.v1.Health/Watch": true,
		"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      true,
		"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": true,
	}
	files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if !ownedByBackend(string(fd.Package()), backends) {
			return true
		}
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				out[fmt.Sprintf("/%s/%s", sd.FullName(), sd.Methods().Get(j).Name())] = true
			}
		}
		return true
	})
	return out
}
