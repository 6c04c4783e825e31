package deploy_test

// What kube-score and kube-linter would flag in deploy/k8s, and what only shows once applied in a
// real cluster: a Secret of placeholders overwriting the real one, a replicas field fighting KEDA's
// HPA, a Redis address KEDA's operator cannot resolve, GOMEMLIMIT at the memory limit, an image not
// pinned, and a pod open to every peer. Neither tool can be installed here (not served), so their
// rules that apply to these objects are checked by reading the manifests; deploy/check decodes every
// object strictly with the upstream Kubernetes types and KEDA's CRD schema.

import (
	"fmt"
	"maps"
	"math"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v4"
)

const mfKustomization = "kustomization.yaml"

type mfAffinity struct {
	PodAntiAffinity *struct {
		Preferred []mfWeightedTerm `yaml:"preferredDuringSchedulingIgnoredDuringExecution"`
	} `yaml:"podAntiAffinity"`
}

type mfWeightedTerm struct {
	Weight          int `yaml:"weight"`
	PodAffinityTerm struct {
		TopologyKey   string     `yaml:"topologyKey"`
		LabelSelector mfSelector `yaml:"labelSelector"`
	} `yaml:"podAffinityTerm"`
}

type mfSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type mfNetPolPeer struct {
	NamespaceSelector *mfSelector `yaml:"namespaceSelector"`
	PodSelector       *mfSelector `yaml:"podSelector"`
	IPBlock           *struct {
		CIDR   string   `yaml:"cidr"`
		Except []string `yaml:"except"`
	} `yaml:"ipBlock"`
}

type mfNetPolPort struct {
	Protocol string `yaml:"protocol"`
	Port     any    `yaml:"port"`
}

type mfNetPolRule struct {
	From  []mfNetPolPeer `yaml:"from"`
	To    []mfNetPolPeer `yaml:"to"`
	Ports []mfNetPolPort `yaml:"ports"`
}

type mfNetworkPolicy struct {
	mfObject `yaml:",inline"`
	Spec     struct {
		PodSelector mfSelector     `yaml:"podSelector"`
		PolicyTypes []string       `yaml:"policyTypes"`
		Ingress     []mfNetPolRule `yaml:"ingress"`
		Egress      []mfNetPolRule `yaml:"egress"`
	} `yaml:"spec"`
}

type mfKustomize struct {
	APIVersion string   `yaml:"apiVersion"`
	Kind       string   `yaml:"kind"`
	Namespace  string   `yaml:"namespace"`
	Resources  []string `yaml:"resources"`
	Images     []struct {
		Name    string `yaml:"name"`
		NewName string `yaml:"newName"`
		NewTag  string `yaml:"newTag"`
		Digest  string `yaml:"digest"`
	} `yaml:"images"`
}

func mfLoadKustomization(t *testing.T) (mfKustomize, string) {
	t.Helper()
	path := filepath.Join("k8s", mfKustomization)
	src := mfReadFile(t, path)
	var k mfKustomize
	if err := yaml.Load([]byte(src), &k, yaml.WithKnownFields()); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return k, src
}

// TestKubernetesNoSecretApplied: the directory one applies holds no Secret (a placeholder Secret
// applied over the real one would replace the API key with "replace-me"), kustomization.yaml applies
// every manifest of the directory and nothing under examples/, and the example exists.
func TestKubernetesNoSecretApplied(t *testing.T) {
	for _, o := range mfLoadK8s(t) {
		if o.Kind == "Secret" {
			t.Errorf("%s: Secret %s is in the applied directory: applying it would overwrite the real one; keep it under k8s/examples/",
				o.file, o.Metadata.Name)
		}
	}
	k, _ := mfLoadKustomization(t)
	if k.Kind != "Kustomization" || k.Namespace != "" {
		t.Errorf("%s: kind %q namespace %q; want a namespace-less Kustomization", mfKustomization, k.Kind, k.Namespace)
	}
	files, _ := filepath.Glob(filepath.Join("k8s", "*.yaml"))
	var want []string
	for _, f := range files {
		if b := filepath.Base(f); b != mfKustomization {
			want = append(want, b)
		}
	}
	got := slices.Clone(k.Resources)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s resources = %v, want every manifest of deploy/k8s: %v", mfKustomization, got, want)
	}
	for _, r := range k.Resources {
		if strings.Contains(r, "examples") || strings.Contains(strings.ToLower(r), "secret") {
			t.Errorf("%s applies %s", mfKustomization, r)
		}
	}
	if _, err := os.Stat(mfSecretExample); err != nil {
		t.Errorf("the Secret's example: %v", err)
	}
	readme := mfReadFile(t, filepath.Join("k8s", "README.md"))
	if !strings.Contains(readme, "kubectl -n NAMESPACE create secret generic activator-worker") {
		t.Error("k8s/README.md does not say how to create the real Secret")
	}
}

// TestDeploymentReplicasOwnedByKEDA: with a ScaledObject, spec.replicas in the Deployment resets the
// fleet to that figure on every apply, until the HPA scales it out again (kube-score's
// deployment-replicas check).
func TestDeploymentReplicasOwnedByKEDA(t *testing.T) {
	m := mfLoadManifests(t)
	if r := m.mfDeployment.Spec.Replicas; r != nil {
		t.Errorf("Deployment %s sets replicas: %d; ScaledObject %s owns the count: remove it", m.mfDeployment.Metadata.Name, *r, m.mfScaledObject.Metadata.Name)
	}
}

// TestScaledObjectReachesRedis: KEDA's operator resolves addressFromEnv from its own namespace, so a
// short Service name fails there (kedacore/keda#6247); and when it cannot read the list at all, a
// fallback must say how many replicas to run.
func TestScaledObjectReachesRedis(t *testing.T) {
	m := mfLoadManifests(t)
	so := m.mfScaledObject
	if len(so.Spec.Triggers) != 1 {
		t.Fatalf("%d triggers, want 1", len(so.Spec.Triggers))
	}
	tr := so.Spec.Triggers[0]
	addr := m.config.Data[tr.Metadata["addressFromEnv"]]
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("addressFromEnv %s = %q: %v", tr.Metadata["addressFromEnv"], addr, err)
	}
	if !mfFQDNService.MatchString(host) && net.ParseIP(host) == nil {
		t.Errorf("REDIS_ADDRESS host %q: KEDA's operator cannot resolve it from its namespace; use SERVICE.NAMESPACE.svc.cluster.local", host)
	}

	fb := so.Spec.Fallback
	switch {
	case fb == nil:
		t.Error("ScaledObject has no spec.fallback: when KEDA cannot read Redis, the HPA stays where it was")
	case fb.FailureThreshold < 1:
		t.Errorf("fallback.failureThreshold %d, want at least 1", fb.FailureThreshold)
	case so.Spec.MinReplicaCount != nil && fb.Replicas < *so.Spec.MinReplicaCount:
		t.Errorf("fallback.replicas %d is below minReplicaCount %d", fb.Replicas, *so.Spec.MinReplicaCount)
	case so.Spec.MaxReplicaCount != nil && fb.Replicas > *so.Spec.MaxReplicaCount:
		t.Errorf("fallback.replicas %d is above maxReplicaCount %d", fb.Replicas, *so.Spec.MaxReplicaCount)
	}
	// KEDA accepts a fallback only on AverageValue triggers.
	if fb != nil && tr.MetricType != "AverageValue" {
		t.Errorf("trigger metricType %q: a fallback needs AverageValue", tr.MetricType)
	}
}

// mfFQDNService is SERVICE.NAMESPACE.svc.cluster.local; its second group is the namespace.
var mfFQDNService = regexp.MustCompile(`^([a-z0-9-]+)\.([a-z0-9-]+)\.svc\.cluster\.local$`)

// TestDeploymentGoMemLimit: GOMEMLIMIT equal to the memory limit lets the heap reach the limit before
// the runtime collects hard, and the non-heap memory then gets the container OOM-killed. It is a
// literal at about 90% of limits.memory.
func TestDeploymentGoMemLimit(t *testing.T) {
	m := mfLoadManifests(t)
	c := m.mfContainer(t)
	limit, err := mfQuantityBytes(c.Resources.Limits["memory"])
	if err != nil {
		t.Fatalf("limits.memory: %v", err)
	}
	v := mfEnvValue(c, "GOMEMLIMIT")
	if v == "" {
		t.Fatal("GOMEMLIMIT is not a literal value (a resourceFieldRef gives the whole limit)")
	}
	gml, err := mfGoMemLimitBytes(v)
	if err != nil {
		t.Fatalf("GOMEMLIMIT %q: %v", v, err)
	}
	if r := gml / limit; r < 0.85 || r > 0.95 {
		t.Errorf("GOMEMLIMIT %s is %.0f%% of limits.memory %s; want about 90%% (85-95)", v, 100*r, c.Resources.Limits["memory"])
	}
}

func TestMemoryParsers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		k8s  bool
	}{
		{"512Mi", 512 << 20, true}, {"1Gi", 1 << 30, true}, {"500M", 500e6, true}, {"1e3", 1000, true},
		{"460MiB", 460 << 20, false}, {"1GiB", 1 << 30, false}, {"1000", 1000, false}, {"10B", 10, false},
	} {
		parse := mfGoMemLimitBytes
		if tc.k8s {
			parse = mfQuantityBytes
		}
		if got, err := parse(tc.in); err != nil || got != tc.want {
			t.Errorf("parse(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "12Q", "MiB"} {
		if _, err := mfGoMemLimitBytes(bad); err == nil {
			t.Errorf("mfGoMemLimitBytes(%q) accepted", bad)
		}
	}
}

// mfQuantityBytes reads a Kubernetes memory quantity (binary and decimal suffixes, or a plain number).
func mfQuantityBytes(q string) (float64, error) {
	return mfUnitBytes(q, map[string]float64{"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
		"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40})
}

// mfGoMemLimitBytes reads GOMEMLIMIT as the runtime does: bytes with B, KiB, MiB, GiB or TiB.
func mfGoMemLimitBytes(s string) (float64, error) {
	return mfUnitBytes(s, map[string]float64{"": 1, "B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40})
}

func mfUnitBytes(s string, units map[string]float64) (float64, error) {
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' && r != 'e' })
	if i < 0 {
		i = len(s)
	}
	n, err := strconv.ParseFloat(s[:i], 64)
	mult, ok := units[s[i:]]
	if err != nil || !ok || math.IsNaN(n) {
		return 0, fmt.Errorf("%q is not a number with one of the units %q", s, slices.Sorted(maps.Keys(units)))
	}
	return n * mult, nil
}

// TestDeploymentResources: kube-score's container-resources and container-ephemeral-storage checks,
// kube-linter's unset-cpu/memory-requirements; and the scheduling rules both tools look at.
func TestDeploymentResources(t *testing.T) {
	m := mfLoadManifests(t)
	c := m.mfContainer(t)
	for _, r := range []string{"cpu", "memory", "ephemeral-storage"} {
		if c.Resources.Requests[r] == "" {
			t.Errorf("no %s request", r)
		}
	}
	for _, r := range []string{"cpu", "memory", "ephemeral-storage"} {
		if c.Resources.Limits[r] == "" {
			t.Errorf("no %s limit", r)
		}
	}
	for _, r := range []string{"memory", "ephemeral-storage"} {
		req, err1 := mfQuantityBytes(c.Resources.Requests[r])
		lim, err2 := mfQuantityBytes(c.Resources.Limits[r])
		if err1 == nil && err2 == nil && req > lim {
			t.Errorf("%s request %s exceeds its limit %s", r, c.Resources.Requests[r], c.Resources.Limits[r])
		}
	}
	// kube-score: deployment-has-host-podantiaffinity.
	aff := m.mfDeployment.Spec.Template.Spec.Affinity
	if aff == nil || aff.PodAntiAffinity == nil || !slices.ContainsFunc(aff.PodAntiAffinity.Preferred, func(p mfWeightedTerm) bool {
		return p.PodAffinityTerm.TopologyKey == "kubernetes.io/hostname" &&
			mfSelects(p.PodAffinityTerm.LabelSelector.MatchLabels, m.mfDeployment.Spec.Template.Metadata.Labels)
	}) {
		t.Error("no preferred podAntiAffinity on kubernetes.io/hostname selecting the worker's pods")
	}
}

// mfSelects reports whether a non-empty matchLabels selects labels.
func mfSelects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// mfDigestRef is REGISTRY/NAME@sha256:<64 hex digits>.
var mfDigestRef = regexp.MustCompile(`^[^@\s]+@sha256:[0-9a-f]{64}$`)

// mfImagePlaceholder is the Deployment's image until a release pins one (k8s/README.md says how).
const mfImagePlaceholder = "activator:local"

// TestKubernetesImagePinned: the image that is applied (the Deployment's, after kustomization.yaml's
// images:) is pinned by digest with its version in a comment, or is the documented placeholder for a
// locally built image.
func TestKubernetesImagePinned(t *testing.T) {
	m := mfLoadManifests(t)
	c := m.mfContainer(t)
	k, ksrc := mfLoadKustomization(t)
	effective, versionSrc := c.Image, mfReadFile(t, filepath.Join("k8s", "deployment.yaml"))
	// The image's name without tag or digest: a ":" after the last "/" starts the tag (one before it
	// is a registry's port).
	name, _, _ := strings.Cut(c.Image, "@")
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name = name[:i]
	}
	for _, img := range k.Images {
		if img.Name != name {
			continue
		}
		if img.NewTag != "" {
			t.Errorf("%s images: %s sets newTag %q: pin a digest instead", mfKustomization, img.Name, img.NewTag)
		}
		effective, versionSrc = mfOrDefault(img.NewName, name)+"@"+img.Digest, ksrc
	}
	switch {
	case effective == mfImagePlaceholder:
		if !strings.Contains(mfReadFile(t, filepath.Join("k8s", "README.md")), "kustomize edit set image activator=REGISTRY/activator@sha256:") {
			t.Errorf("image %s is the placeholder, but k8s/README.md does not say how to pin it", effective)
		}
	case !mfDigestRef.MatchString(effective):
		t.Errorf("image %q is neither pinned by digest (NAME@sha256:...) nor the placeholder %q", effective, mfImagePlaceholder)
	default:
		digest := effective[strings.Index(effective, "sha256:"):]
		if !regexp.MustCompile(regexp.QuoteMeta(digest) + `.*#\s*v?\d+\.\d+`).MatchString(versionSrc) {
			t.Errorf("image %s is pinned, but no comment on its line names the version (# vX.Y.Z)", effective)
		}
	}
	if c.ImagePullPolicy != "IfNotPresent" {
		t.Errorf("imagePullPolicy %q: with a digest (or a locally loaded placeholder) IfNotPresent is exact and needs no registry round trip", c.ImagePullPolicy)
	}
}

func TestKubernetesImagePinnedPattern(t *testing.T) {
	for ref, want := range map[string]bool{
		"ghcr.io/versori/activator@sha256:" + strings.Repeat("ab", 32): true,
		"ghcr.io/versori/activator:v1.2.3":                             false,
		"activator@sha256:abc":                                         false,
		mfImagePlaceholder:                                             false,
	} {
		if got := mfDigestRef.MatchString(ref); got != want {
			t.Errorf("mfDigestRef(%q) = %v, want %v", ref, got, want)
		}
	}
}

// TestNetworkPolicy: the worker pods accept only Prometheus, on the metrics port, and reach only DNS,
// Redis (the ConfigMap's REDIS_ADDRESS namespace and port) and HTTPS. kube-score: pod-networkpolicy,
// networkpolicy-targets-pod.
func TestNetworkPolicy(t *testing.T) {
	m := mfLoadManifests(t)
	np := m.mfNetPol
	c := m.mfContainer(t)
	labels := m.mfDeployment.Spec.Template.Metadata.Labels
	if !mfSelects(np.Spec.PodSelector.MatchLabels, labels) {
		t.Errorf("NetworkPolicy podSelector %v does not select the worker's pods %v", np.Spec.PodSelector.MatchLabels, labels)
	}
	if !slices.Contains(np.Spec.PolicyTypes, "Ingress") || !slices.Contains(np.Spec.PolicyTypes, "Egress") {
		t.Errorf("policyTypes %v, want Ingress and Egress", np.Spec.PolicyTypes)
	}
	metricsPort := 0
	for _, p := range c.Ports {
		if p.Name == "metrics" {
			metricsPort = p.ContainerPort
		}
	}
	port := func(p mfNetPolPort) int {
		switch v := p.Port.(type) {
		case int:
			return v
		case string:
			if v == "metrics" {
				return metricsPort
			}
			n, _ := strconv.Atoi(v)
			return n
		}
		return 0
	}

	if len(np.Spec.Ingress) != 1 {
		t.Fatalf("%d ingress rules, want the one from Prometheus", len(np.Spec.Ingress))
	}
	in := np.Spec.Ingress[0]
	if len(in.Ports) != 1 || port(in.Ports[0]) != metricsPort || metricsPort == 0 {
		t.Errorf("ingress ports %+v, want only the metrics port %d", in.Ports, metricsPort)
	}
	if len(in.From) == 0 {
		t.Error("ingress has no from: every pod of the cluster could reach the worker")
	}
	for _, f := range in.From {
		if f.IPBlock != nil || f.NamespaceSelector == nil || len(f.NamespaceSelector.MatchLabels) == 0 || f.PodSelector == nil || len(f.PodSelector.MatchLabels) == 0 {
			t.Errorf("ingress peer %+v: want Prometheus's pods by namespace and pod labels", f)
		}
	}

	// What each egress rule allows, as "PROTO/PORT".
	allowed := map[string][]mfNetPolPeer{}
	for _, e := range np.Spec.Egress {
		if len(e.Ports) == 0 || len(e.To) == 0 {
			t.Errorf("egress rule %+v allows every port or every peer", e)
		}
		for _, p := range e.Ports {
			allowed[fmt.Sprintf("%s/%d", mfOrDefault(p.Protocol, "TCP"), port(p))] = e.To
		}
	}
	for _, want := range []string{"UDP/53", "TCP/53", "TCP/443"} {
		if allowed[want] == nil {
			t.Errorf("egress does not allow %s", want)
		}
	}
	for _, p := range allowed["UDP/53"] {
		if p.PodSelector == nil || p.PodSelector.MatchLabels["k8s-app"] != "kube-dns" {
			t.Errorf("DNS egress to %+v, want the kube-dns pods", p)
		}
	}
	host, rport, err := net.SplitHostPort(m.config.Data["REDIS_ADDRESS"])
	if err != nil {
		t.Fatalf("REDIS_ADDRESS: %v", err)
	}
	redis := allowed["TCP/"+rport]
	if redis == nil {
		t.Errorf("egress does not allow Redis's port %s", rport)
	}
	if mm := mfFQDNService.FindStringSubmatch(host); mm != nil {
		for _, p := range redis {
			if p.NamespaceSelector == nil || p.NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != mm[2] {
				t.Errorf("Redis egress peer %+v is not namespace %q, REDIS_ADDRESS's", p, mm[2])
			}
		}
	}
	// A REDIS_URL of redis-sentinel:// asks the Sentinels, on 26379, of the same Redis.
	if s := allowed["TCP/26379"]; s == nil || !reflect.DeepEqual(s, redis) {
		t.Errorf("egress to Sentinel (TCP/26379) = %+v, want Redis's peers %+v", s, redis)
	}
	for _, p := range allowed["TCP/443"] {
		if p.IPBlock == nil {
			continue
		}
		for _, private := range []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"} {
			if p.IPBlock.CIDR == "0.0.0.0/0" && !slices.Contains(p.IPBlock.Except, private) {
				t.Errorf("HTTPS egress to 0.0.0.0/0 does not except %s (cluster and metadata addresses)", private)
			}
		}
	}
	if len(allowed) != 5 {
		t.Errorf("egress allows %v; want DNS (UDP and TCP 53), Redis and its Sentinels, and HTTPS only", slices.Sorted(maps.Keys(allowed)))
	}
}
