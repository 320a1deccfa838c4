// Package k8stest validates the Kubernetes manifests under deploy/ offline: it builds every
// overlay and test combination with the kustomize API, decodes every object strictly into its
// Kubernetes API type and checks the objects against the project's rules (checks.go) and the
// mesh's call graph derived from the code (graph.go).
package k8stest

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// Object is one built object: its typed form for the kinds of the Kubernetes API, else (CRD
// kinds of the allow-list) its generic map.
type Object struct {
	APIVersion, Kind, Name, Namespace string
	// Typed is a pointer to the k8s.io/api struct, nil for custom resources.
	Typed any
	// Raw is the object as built.
	Raw map[string]any
}

// ID names the object in messages.
func (o Object) ID() string { return o.Kind + "/" + o.Name }

// typed makes the empty typed struct of a built-in kind (apiVersion/kind).
var typed = map[string]func() any{
	"v1/Namespace":                           func() any { return &corev1.Namespace{} },
	"v1/ConfigMap":                           func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                              func() any { return &corev1.Secret{} },
	"v1/Service":                             func() any { return &corev1.Service{} },
	"v1/ServiceAccount":                      func() any { return &corev1.ServiceAccount{} },
	"apps/v1/Deployment":                     func() any { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":                    func() any { return &appsv1.StatefulSet{} },
	"networking.k8s.io/v1/NetworkPolicy":     func() any { return &networkingv1.NetworkPolicy{} },
	"policy/v1/PodDisruptionBudget":          func() any { return &policyv1.PodDisruptionBudget{} },
	"autoscaling/v2/HorizontalPodAutoscaler": func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
}

// customKinds are the custom resources the manifests may use (their CRDs come with the
// operators: cert-manager, KEDA, the Prometheus operator, External Secrets). They stay generic
// maps; any other kind is an error.
var customKinds = []string{
	"cert-manager.io/v1/Issuer",
	"cert-manager.io/v1/ClusterIssuer",
	"cert-manager.io/v1/Certificate",
	"keda.sh/v1alpha1/ScaledObject",
	"monitoring.coreos.com/v1/ServiceMonitor",
	"monitoring.coreos.com/v1/PodMonitor",
	"monitoring.coreos.com/v1/PrometheusRule",
	"external-secrets.io/v1/ExternalSecret",
	"external-secrets.io/v1/SecretStore",
}

// Build runs kustomize on dir (as `kubectl apply -k dir` would: load restrictions on, files
// only from within dir's tree) and decodes every object strictly.
func Build(dir string) ([]Object, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize %s: %w", dir, err)
	}
	var objs []Object
	for _, r := range m.Resources() {
		b, err := r.MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.CurId(), err)
		}
		o, err := Decode(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", dir, r.CurId(), err)
		}
		objs = append(objs, o)
	}
	return objs, nil
}

// Decode decodes one object (JSON) into its type, rejecting unknown and duplicate fields.
func Decode(b []byte) (Object, error) {
	var o Object
	if err := json.Unmarshal(b, &o.Raw); err != nil {
		return o, err
	}
	o.APIVersion, _ = o.Raw["apiVersion"].(string)
	o.Kind, _ = o.Raw["kind"].(string)
	if md, ok := o.Raw["metadata"].(map[string]any); ok {
		o.Name, _ = md["name"].(string)
		o.Namespace, _ = md["namespace"].(string)
	}
	gvk := o.APIVersion + "/" + o.Kind
	if slices.Contains(customKinds, gvk) {
		return o, nil
	}
	mk, ok := typed[gvk]
	if !ok {
		return o, fmt.Errorf("kind %s is neither a known API type nor an allowed custom resource", gvk)
	}
	o.Typed = mk()
	strict, err := kjson.UnmarshalStrict(b, o.Typed)
	if err != nil {
		return o, err
	}
	if len(strict) > 0 {
		return o, fmt.Errorf("strict decoding: %w", errors.Join(strict...))
	}
	return o, nil
}
