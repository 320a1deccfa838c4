package k8stest

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// NameLabel is the label naming a process (or an infrastructure service) on its pods.
const NameLabel = "app.kubernetes.io/name"

// Check inspects a built set of objects and returns what breaks the rules (nil: none).
type Check func(objs []Object) []string

// Checks are every rule a built overlay or test combination must pass, by name.
var Checks = map[string]Check{
	"pod-security":  CheckPodSecurity,
	"resources":     CheckResources,
	"probes":        CheckProbes,
	"service-ports": CheckServicePorts,
	"selectors":     CheckSelectors,
	"images":        CheckImages,
	"default-deny":  CheckDefaultDeny,
	"writers":       CheckWriters,
	"certificates":  CheckCertificates,
	"namespaces":    CheckNamespaces,
}

// Workload is a pod template with the object that owns it.
type Workload struct {
	Object
	Selector *metav1.LabelSelector
	Replicas *int32
	Pod      corev1.PodTemplateSpec
}

// Workloads returns the Deployments and StatefulSets of objs.
func Workloads(objs []Object) []Workload {
	var ws []Workload
	for _, o := range objs {
		switch t := o.Typed.(type) {
		case *appsv1.Deployment:
			ws = append(ws, Workload{o, t.Spec.Selector, t.Spec.Replicas, t.Spec.Template})
		case *appsv1.StatefulSet:
			ws = append(ws, Workload{o, t.Spec.Selector, t.Spec.Replicas, t.Spec.Template})
		}
	}
	return ws
}

func containers(w Workload) []corev1.Container {
	return append(slices.Clone(w.Pod.Spec.InitContainers), w.Pod.Spec.Containers...)
}

// CheckPodSecurity: every container runs as non-root with a read-only root file system, no
// privilege escalation, every capability dropped and seccomp RuntimeDefault (its own setting or
// the pod's); no pod gets a service-account token; secret volumes (and projected volumes of
// secrets) are mounted whole (a subPath mount never sees a renewed certificate or secret).
func CheckPodSecurity(objs []Object) []string {
	var p []string
	for _, w := range Workloads(objs) {
		ps := w.Pod.Spec.SecurityContext
		if ps == nil {
			ps = &corev1.PodSecurityContext{}
		}
		if a := w.Pod.Spec.AutomountServiceAccountToken; a == nil || *a {
			p = append(p, w.ID()+": automountServiceAccountToken is not false")
		}
		if w.Pod.Spec.HostNetwork || w.Pod.Spec.HostPID || w.Pod.Spec.HostIPC {
			p = append(p, w.ID()+": shares a host namespace")
		}
		secretVols := map[string]bool{}
		for _, v := range w.Pod.Spec.Volumes {
			if v.Secret != nil || (v.Projected != nil && slices.ContainsFunc(v.Projected.Sources, func(s corev1.VolumeProjection) bool { return s.Secret != nil })) {
				secretVols[v.Name] = true
			}
			if !restrictedVolumes(v) {
				p = append(p, w.ID()+": volume "+v.Name+" is of a type the restricted standard refuses")
			}
		}
		for _, c := range containers(w) {
			id := w.ID() + " container " + c.Name
			sc := c.SecurityContext
			if sc == nil {
				sc = &corev1.SecurityContext{}
			}
			if !isTrue(sc.RunAsNonRoot) && !(sc.RunAsNonRoot == nil && isTrue(ps.RunAsNonRoot)) {
				p = append(p, id+": runAsNonRoot is not true")
			}
			if uid := sc.RunAsUser; (uid != nil && *uid == 0) || (uid == nil && ps.RunAsUser != nil && *ps.RunAsUser == 0) {
				p = append(p, id+": runs as uid 0")
			}
			if !isTrue(sc.ReadOnlyRootFilesystem) {
				p = append(p, id+": readOnlyRootFilesystem is not true")
			}
			if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
				p = append(p, id+": allowPrivilegeEscalation is not false")
			}
			if isTrue(sc.Privileged) {
				p = append(p, id+": privileged")
			}
			if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
				p = append(p, id+": capabilities do not drop ALL (or add some)")
			}
			seccomp := sc.SeccompProfile
			if seccomp == nil {
				seccomp = ps.SeccompProfile
			}
			if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
				p = append(p, id+": seccompProfile is not RuntimeDefault")
			}
			for _, cp := range c.Ports {
				if cp.HostPort != 0 {
					p = append(p, fmt.Sprintf("%s: host port %d", id, cp.HostPort))
				}
			}
			for _, m := range c.VolumeMounts {
				if secretVols[m.Name] && m.SubPath != "" {
					p = append(p, id+": secret volume "+m.Name+" mounted with subPath (renewals would not reach the process)")
				}
			}
		}
	}
	return p
}

func isTrue(b *bool) bool { return b != nil && *b }

// CheckResources: every container requests and is limited in CPU and memory.
func CheckResources(objs []Object) []string {
	var p []string
	for _, w := range Workloads(objs) {
		for _, c := range containers(w) {
			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if _, ok := c.Resources.Requests[r]; !ok {
					p = append(p, fmt.Sprintf("%s container %s: no %s request", w.ID(), c.Name, r))
				}
				if _, ok := c.Resources.Limits[r]; !ok {
					p = append(p, fmt.Sprintf("%s container %s: no %s limit", w.ID(), c.Name, r))
				}
			}
		}
	}
	return p
}

// CheckProbes: every (non-init) container has startup, readiness and liveness probes, and a
// probe on a port names one the container declares.
func CheckProbes(objs []Object) []string {
	var p []string
	for _, w := range Workloads(objs) {
		for _, c := range w.Pod.Spec.Containers {
			id := w.ID() + " container " + c.Name
			for kind, pr := range map[string]*corev1.Probe{"startup": c.StartupProbe, "readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
				if pr == nil {
					p = append(p, id+": no "+kind+" probe")
					continue
				}
				var port string
				switch {
				case pr.GRPC != nil:
					port = strconv.Itoa(int(pr.GRPC.Port))
				case pr.HTTPGet != nil:
					port = pr.HTTPGet.Port.String()
				case pr.TCPSocket != nil:
					port = pr.TCPSocket.Port.String()
				case pr.Exec != nil:
					continue
				}
				if !declaresPort(c, port) {
					p = append(p, fmt.Sprintf("%s: %s probe on port %s, which the container does not declare", id, kind, port))
				}
			}
		}
	}
	return p
}

// declaresPort reports whether port (a number or a name) is one of c's container ports.
func declaresPort(c corev1.Container, port string) bool {
	for _, cp := range c.Ports {
		if cp.Name == port || strconv.Itoa(int(cp.ContainerPort)) == port {
			return true
		}
	}
	return false
}

// CheckServicePorts: every Service selects at least one workload and each target port exists
// in every workload it selects.
func CheckServicePorts(objs []Object) []string {
	var p []string
	ws := Workloads(objs)
	for _, o := range objs {
		svc, ok := o.Typed.(*corev1.Service)
		if !ok || svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		sel := labels.SelectorFromSet(svc.Spec.Selector)
		var hit int
		for _, w := range ws {
			if len(svc.Spec.Selector) == 0 || !sel.Matches(labels.Set(w.Pod.Labels)) {
				continue
			}
			hit++
			for _, sp := range svc.Spec.Ports {
				target := sp.TargetPort.String()
				if sp.TargetPort.IntValue() == 0 && sp.TargetPort.StrVal == "" {
					target = strconv.Itoa(int(sp.Port))
				}
				if !slices.ContainsFunc(w.Pod.Spec.Containers, func(c corev1.Container) bool { return declaresPort(c, target) }) {
					p = append(p, fmt.Sprintf("%s port %s: target port %s is not a port of %s", o.ID(), sp.Name, target, w.ID()))
				}
			}
		}
		if hit == 0 {
			p = append(p, o.ID()+": selects no workload")
		}
	}
	return p
}

// CheckSelectors: every workload's selector matches its own pods; every PodDisruptionBudget
// selects a workload; every HPA and ScaledObject scales an existing workload, which leaves its
// replica count to it (an apply would otherwise reset it); one autoscaler per workload.
func CheckSelectors(objs []Object) []string {
	var p []string
	ws := Workloads(objs)
	for _, w := range ws {
		sel, err := metav1.LabelSelectorAsSelector(w.Selector)
		if err != nil || sel.Empty() || !sel.Matches(labels.Set(w.Pod.Labels)) {
			p = append(p, w.ID()+": selector does not match its pod template")
		}
	}
	scaled := map[string]string{}
	scales := func(by, kind, name string, ownsReplicas bool) {
		i := slices.IndexFunc(ws, func(w Workload) bool { return w.Kind == kind && w.Name == name })
		switch {
		case i < 0:
			p = append(p, fmt.Sprintf("%s: scales %s/%s, which does not exist", by, kind, name))
		case scaled[kind+"/"+name] != "":
			p = append(p, fmt.Sprintf("%s: %s/%s is already scaled by %s", by, kind, name, scaled[kind+"/"+name]))
		case ownsReplicas && ws[i].Replicas != nil:
			p = append(p, fmt.Sprintf("%s: %s/%s sets replicas, which the autoscaler owns", by, kind, name))
		}
		scaled[kind+"/"+name] = by
	}
	for _, o := range objs {
		switch t := o.Typed.(type) {
		case *policyv1.PodDisruptionBudget:
			sel, err := metav1.LabelSelectorAsSelector(t.Spec.Selector)
			if err != nil || sel.Empty() || !slices.ContainsFunc(ws, func(w Workload) bool { return sel.Matches(labels.Set(w.Pod.Labels)) }) {
				p = append(p, o.ID()+": selects no workload")
			}
		case *autoscalingv2.HorizontalPodAutoscaler:
			scales(o.ID(), t.Spec.ScaleTargetRef.Kind, t.Spec.ScaleTargetRef.Name, true)
		}
		if o.Kind == "ScaledObject" {
			ref, _ := dig(o.Raw, "spec", "scaleTargetRef").(map[string]any)
			kind, _ := ref["kind"].(string)
			name, _ := ref["name"].(string)
			if kind == "" {
				kind = "Deployment"
			}
			// KEDA sets replicas itself (between idle and max); the StatefulSet's own count is
			// the one writer-count must equal (CheckWriters).
			scales(o.ID(), kind, name, false)
		}
	}
	return p
}

// dig walks nested maps.
func dig(m map[string]any, keys ...string) any {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

// CheckImages: every image has a tag (or digest) and the tag is not latest.
func CheckImages(objs []Object) []string {
	var p []string
	for _, w := range Workloads(objs) {
		for _, c := range containers(w) {
			img := c.Image
			if strings.Contains(img, "@sha256:") {
				continue
			}
			slash := strings.LastIndex(img, "/")
			colon := strings.LastIndex(img, ":")
			if colon <= slash {
				p = append(p, fmt.Sprintf("%s container %s: image %s has no tag", w.ID(), c.Name, img))
			} else if img[colon+1:] == "latest" {
				p = append(p, fmt.Sprintf("%s container %s: image %s uses latest", w.ID(), c.Name, img))
			}
		}
	}
	return p
}

// CheckDefaultDeny: every namespace with workloads has a policy selecting all its pods that
// isolates them for ingress and egress and allows nothing, and a policy allowing DNS (UDP and
// TCP 53 to kube-dns) and nothing else.
func CheckDefaultDeny(objs []Object) []string {
	namespaces := map[string]bool{}
	for _, w := range Workloads(objs) {
		namespaces[w.Namespace] = true
	}
	deny, dns := map[string]bool{}, map[string]bool{}
	for _, o := range objs {
		np, ok := o.Typed.(*networkingv1.NetworkPolicy)
		if !ok || len(np.Spec.PodSelector.MatchLabels) > 0 || len(np.Spec.PodSelector.MatchExpressions) > 0 {
			continue
		}
		if len(np.Spec.Ingress) == 0 && len(np.Spec.Egress) == 0 &&
			slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) && slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeEgress) {
			deny[o.Namespace] = true
		}
		if len(np.Spec.Ingress) == 0 && len(np.Spec.Egress) == 1 && isDNSRule(np.Spec.Egress[0]) {
			dns[o.Namespace] = true
		}
	}
	var p []string
	for ns := range namespaces {
		if !deny[ns] {
			p = append(p, "namespace "+ns+": no default-deny NetworkPolicy (ingress and egress)")
		}
		if !dns[ns] {
			p = append(p, "namespace "+ns+": no NetworkPolicy allowing DNS")
		}
	}
	return p
}

// isDNSRule: to kube-dns in kube-system, on port 53 only.
func isDNSRule(r networkingv1.NetworkPolicyEgressRule) bool {
	if len(r.To) != 1 || len(r.Ports) == 0 {
		return false
	}
	for _, port := range r.Ports {
		if port.Port == nil || port.Port.IntValue() != 53 {
			return false
		}
	}
	t := r.To[0]
	return t.NamespaceSelector != nil && t.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] == "kube-system" &&
		t.PodSelector != nil && t.PodSelector.MatchLabels["k8s-app"] == "kube-dns"
}

// CheckWriters: the analytics writers are consistent: writer-count (ConfigMap analytics-writers)
// is 1 to 8 (the stream's partitions) and equals the StatefulSet's replicas; a KEDA
// ScaledObject switches all of them at once (min = max = writer-count).
func CheckWriters(objs []Object) []string {
	var p []string
	count := -1
	var replicas *int32
	for _, o := range objs {
		if cm, ok := o.Typed.(*corev1.ConfigMap); ok && cm.Name == "analytics-writers" {
			n, err := strconv.Atoi(cm.Data["writer-count"])
			if err != nil || n < 1 || n > 8 {
				p = append(p, fmt.Sprintf("%s: writer-count %q is not 1 to 8", o.ID(), cm.Data["writer-count"]))
			}
			count = n
		}
		if s, ok := o.Typed.(*appsv1.StatefulSet); ok && s.Name == "analytics-writer" {
			replicas = s.Spec.Replicas
		}
	}
	if count < 0 || replicas == nil {
		return append(p, "no ConfigMap analytics-writers or StatefulSet analytics-writer with replicas")
	}
	if int(*replicas) != count {
		p = append(p, fmt.Sprintf("StatefulSet analytics-writer: %d replicas, writer-count %d", *replicas, count))
	}
	for _, o := range objs {
		if o.Kind != "ScaledObject" {
			continue
		}
		mn, _ := dig(o.Raw, "spec", "minReplicaCount").(float64)
		mx, _ := dig(o.Raw, "spec", "maxReplicaCount").(float64)
		if int(mn) != count || int(mx) != count {
			p = append(p, fmt.Sprintf("%s: min %v and max %v replicas must both be writer-count %d (writers start with a fixed count)", o.ID(), mn, mx, count))
		}
	}
	return p
}

// CheckCertificates: where cert-manager issues the mesh certificates, every process's mounted
// <process>-tls secret has a Certificate with exactly one URI SAN, the SPIFFE ID of the mesh
// identity the process uses (analytics-writer is analytics), 24h long and renewed 8h ahead.
func CheckCertificates(objs []Object) []string {
	certs := map[string]map[string]any{}
	for _, o := range objs {
		if o.Kind == "Certificate" {
			sn, _ := dig(o.Raw, "spec", "secretName").(string)
			certs[sn] = o.Raw
		}
	}
	if len(certs) == 0 {
		return nil
	}
	var p []string
	for _, w := range Workloads(objs) {
		if w.Pod.Labels["app.kubernetes.io/part-of"] != "campaignmesh" {
			continue
		}
		identity := strings.TrimSuffix(w.Name, "-writer")
		secret := w.Name + "-tls"
		c, ok := certs[secret]
		if !ok {
			p = append(p, w.ID()+": no Certificate for "+secret)
			continue
		}
		if !slices.ContainsFunc(w.Pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == secret }) {
			p = append(p, w.ID()+": does not mount "+secret)
		}
		uris, _ := dig(c, "spec", "uris").([]any)
		want := "spiffe://campaignmesh.local/" + identity
		if len(uris) != 1 || uris[0] != want {
			p = append(p, fmt.Sprintf("Certificate %s: URI SANs %v, want exactly [%s]", secret, uris, want))
		}
		if d, r := dig(c, "spec", "duration"), dig(c, "spec", "renewBefore"); d != "24h" || r != "8h" {
			p = append(p, fmt.Sprintf("Certificate %s: duration %v renewBefore %v, want 24h and 8h", secret, d, r))
		}
	}
	return p
}

// CheckNamespaces: every namespace with workloads is one of the built Namespaces and enforces
// the restricted Pod Security Standard.
func CheckNamespaces(objs []Object) []string {
	restricted := map[string]bool{}
	for _, o := range objs {
		if ns, ok := o.Typed.(*corev1.Namespace); ok && ns.Labels["pod-security.kubernetes.io/enforce"] == "restricted" {
			restricted[ns.Name] = true
		}
	}
	var p []string
	for _, w := range Workloads(objs) {
		if !restricted[w.Namespace] {
			p = append(p, w.ID()+": namespace "+strconv.Quote(w.Namespace)+" is not built here with pod-security.kubernetes.io/enforce=restricted")
		}
	}
	return p
}

// restrictedVolumes reports whether v is of a type the restricted Pod Security Standard allows.
func restrictedVolumes(v corev1.Volume) bool {
	s := v.VolumeSource
	return s.ConfigMap != nil || s.Secret != nil || s.EmptyDir != nil || s.PersistentVolumeClaim != nil ||
		s.Projected != nil || s.DownwardAPI != nil || s.CSI != nil || s.Ephemeral != nil
}
