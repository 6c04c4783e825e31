package deploy_test

// These tests read the deployment files as data and check what would otherwise only fail at deploy
// time: YAML that does not parse, probes on the wrong port, a grace period shorter than the worker's
// shutdown, a KEDA list name that is not asynq's, compose mounts of files that do not exist, settings
// the worker does not know, and a Dockerfile that builds differently from the Makefile. No Docker
// engine or cluster is needed (none is assumed: the docker CLI alone cannot build or run anything).
// Identifiers here start with mf (manifests): other tests share package deploy_test.

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v4"

	"github.com/versori/activator/internal/cmd/enqueuecmd"
	"github.com/versori/activator/internal/cmd/envflag"
	"github.com/versori/activator/internal/cmd/workercmd"
	"github.com/versori/activator/internal/rediskeys"
)

// The test runs in deploy/; the repository root is its parent.
const mfRoot = ".."

// mfWorkerShutdownOverhead is how long the worker may still take after SHUTDOWN_GRACE once it is told
// to stop: asynq's ShutdownTimeout is SHUTDOWN_GRACE + 10s (worker/worker.go) and the last archive sweep
// is bounded by 5s. A kill grace period must exceed SHUTDOWN_GRACE by more than this.
const mfWorkerShutdownOverhead = 15 * time.Second

// mfDefaultShutdownGrace is SHUTDOWN_GRACE's default (worker.DefaultConfig).
const mfDefaultShutdownGrace = 10 * time.Second

// TestWorkerShutdownOverhead keeps mfWorkerShutdownOverhead in step with worker/worker.go.
func TestWorkerShutdownOverhead(t *testing.T) {
	src := mfReadFile(t, filepath.Join(mfRoot, "worker", "worker.go"))
	var total time.Duration
	for what, re := range map[string]string{
		"asynq's ShutdownTimeout beyond SHUTDOWN_GRACE": `ShutdownTimeout:\s*cfg\.ShutdownGrace \+ (\d+)\*time\.Second`,
		"the final archive sweep's timeout":             `sctx, cancel := context\.WithTimeout\(context\.Background\(\), (\d+)\*time\.Second\)\s*defer cancel\(\)\s*if _, err := w\.sweeper\.Sweep\(sctx\)`,
	} {
		m := regexp.MustCompile(re).FindStringSubmatch(src)
		if m == nil {
			t.Errorf("worker/worker.go: %s not found (%s): update mfWorkerShutdownOverhead and this test", what, re)
			continue
		}
		n, _ := strconv.Atoi(m[1])
		total += time.Duration(n) * time.Second
	}
	if total > mfWorkerShutdownOverhead {
		t.Errorf("the worker may take SHUTDOWN_GRACE + %s to stop, more than mfWorkerShutdownOverhead %s: raise it, and the grace periods", total, mfWorkerShutdownOverhead)
	}
}

// ---------------------------------------------------------------------------------------------------
// (a) every YAML file parses; Kubernetes objects are well formed

func TestYAMLFilesParse(t *testing.T) {
	var files []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ext := filepath.Ext(path); !d.IsDir() && (ext == ".yaml" || ext == ".yml") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, must := range []string{"compose.yaml", "k8s/deployment.yaml"} {
		if !slices.Contains(files, filepath.FromSlash(must)) {
			t.Errorf("deploy/%s not found among %v", must, files)
		}
	}
	for _, f := range files {
		docs := mfLoadDocs(t, f)
		if len(docs) == 0 {
			t.Errorf("%s: no YAML document", f)
		}
	}
}

func TestKubernetesObjectsWellFormed(t *testing.T) {
	objs := mfLoadK8s(t)
	if len(objs) == 0 {
		t.Fatal("no objects under deploy/k8s")
	}
	seen := map[string]string{}
	for _, o := range objs {
		switch {
		case o.APIVersion == "" || o.Kind == "" || o.Metadata.Name == "":
			t.Errorf("%s: an object lacks apiVersion, kind or metadata.name: %+v", o.file, o.mfObject)
			continue
		case o.Metadata.Namespace != "":
			t.Errorf("%s: %s/%s sets metadata.namespace %q: the manifests are namespace-less (kubectl -n chooses)",
				o.file, o.Kind, o.Metadata.Name, o.Metadata.Namespace)
		}
		id := o.Kind + "/" + o.Metadata.Name
		if prev, dup := seen[id]; dup {
			t.Errorf("%s is defined twice (%s and %s)", id, prev, o.file)
		}
		seen[id] = o.file
	}
	for _, kind := range []string{"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "ConfigMap", "ScaledObject", "TriggerAuthentication"} {
		if !slices.ContainsFunc(objs, func(o mfK8sObject) bool { return o.Kind == kind }) {
			t.Errorf("no %s under deploy/k8s", kind)
		}
	}
	for _, o := range objs {
		if o.Kind == "ScaledObject" || o.Kind == "TriggerAuthentication" {
			if o.APIVersion != "keda.sh/v1alpha1" {
				t.Errorf("%s/%s: apiVersion %q, want keda.sh/v1alpha1", o.Kind, o.Metadata.Name, o.APIVersion)
			}
		}
	}
}

// ---------------------------------------------------------------------------------------------------
// (b) the worker Deployment, its Service, Secret, ConfigMap, PodDisruptionBudget and ScaledObject agree

func TestDeploymentProbesAndPorts(t *testing.T) {
	m := mfLoadManifests(t)
	c := m.mfContainer(t)

	metricsAddr := m.config.Data["METRICS_ADDR"]
	if metricsAddr == "" {
		metricsAddr = mfSettingDefault(t, "METRICS_ADDR")
	}
	_, p, err := net.SplitHostPort(metricsAddr)
	if err != nil {
		t.Fatalf("METRICS_ADDR %q: %v", metricsAddr, err)
	}
	metricsPort, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("METRICS_ADDR %q: port: %v", metricsAddr, err)
	}
	named := map[string]int{}
	for _, cp := range c.Ports {
		named[cp.Name] = cp.ContainerPort
	}
	if named["metrics"] != metricsPort {
		t.Errorf("container port named metrics is %d, want METRICS_ADDR's %d", named["metrics"], metricsPort)
	}
	resolve := func(port any) int {
		switch v := port.(type) {
		case int:
			return v
		case string:
			if n, err := strconv.Atoi(v); err == nil {
				return n
			}
			return named[v]
		}
		return 0
	}
	for _, pr := range []struct {
		name, path string
		mfProbe    *mfProbe
	}{{"livenessProbe", "/healthz", c.LivenessProbe}, {"readinessProbe", "/readyz", c.ReadinessProbe}} {
		switch {
		case pr.mfProbe == nil || pr.mfProbe.HTTPGet == nil:
			t.Errorf("%s: want an httpGet probe on %s", pr.name, pr.path)
		case pr.mfProbe.HTTPGet.Path != pr.path:
			t.Errorf("%s: path %q, want %q", pr.name, pr.mfProbe.HTTPGet.Path, pr.path)
		case resolve(pr.mfProbe.HTTPGet.Port) != metricsPort:
			t.Errorf("%s: port %v is not METRICS_ADDR's %d", pr.name, pr.mfProbe.HTTPGet.Port, metricsPort)
		}
	}

	found := false
	for _, sp := range m.mfService.Spec.Ports {
		if sp.Port == metricsPort && resolve(sp.TargetPort) == metricsPort {
			found = true
			if sp.Name != "metrics" {
				t.Errorf("Service port %d is named %q, want metrics", sp.Port, sp.Name)
			}
		}
	}
	if !found {
		t.Errorf("Service %s exposes no port %d targeting the container's metrics port: %+v", m.mfService.Metadata.Name, metricsPort, m.mfService.Spec.Ports)
	}

	labels := m.mfDeployment.Spec.Template.Metadata.Labels
	for what, sel := range map[string]map[string]string{
		"Deployment selector":          m.mfDeployment.Spec.Selector.MatchLabels,
		"Service selector":             m.mfService.Spec.Selector,
		"PodDisruptionBudget selector": m.mfPdb.Spec.Selector.MatchLabels,
	} {
		if len(sel) == 0 {
			t.Errorf("%s is empty", what)
		}
		for k, v := range sel {
			if labels[k] != v {
				t.Errorf("%s %s=%s does not match the pod template's labels %v", what, k, v, labels)
			}
		}
	}
}

func TestDeploymentShutdownAndSecurity(t *testing.T) {
	m := mfLoadManifests(t)
	spec := m.mfDeployment.Spec.Template.Spec
	c := m.mfContainer(t)

	grace := mfDefaultShutdownGrace
	if s, ok := m.config.Data["SHUTDOWN_GRACE"]; ok {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("ConfigMap SHUTDOWN_GRACE %q: %v", s, err)
		}
		grace = d
	}
	if spec.TerminationGracePeriodSeconds == nil {
		t.Errorf("terminationGracePeriodSeconds is unset (Kubernetes' default 30s)")
	} else if got := time.Duration(*spec.TerminationGracePeriodSeconds) * time.Second; got <= grace+mfWorkerShutdownOverhead {
		t.Errorf("terminationGracePeriodSeconds %s must exceed SHUTDOWN_GRACE %s + %s", got, grace, mfWorkerShutdownOverhead)
	}

	// The container's setting, when there is one, overrides the pod's.
	nonRoot := spec.SecurityContext.RunAsNonRoot
	if c.SecurityContext.RunAsNonRoot != nil {
		nonRoot = c.SecurityContext.RunAsNonRoot
	}
	if !mfIsTrue(nonRoot) {
		t.Error("the container does not run with runAsNonRoot: true (its own setting, or else the pod's)")
	}
	if spec.SecurityContext.RunAsUser != nil && *spec.SecurityContext.RunAsUser == 0 {
		t.Error("pod runAsUser is 0")
	}
	if !mfIsTrue(c.SecurityContext.ReadOnlyRootFilesystem) {
		t.Error("container readOnlyRootFilesystem is not true")
	}
	if c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
		t.Error("container allowPrivilegeEscalation is not false")
	}
	if !slices.Contains(c.SecurityContext.Capabilities.Drop, "ALL") {
		t.Errorf("container capabilities drop %v, want ALL", c.SecurityContext.Capabilities.Drop)
	}
	for _, r := range []string{"cpu", "memory"} {
		if c.Resources.Requests[r] == "" {
			t.Errorf("no %s request", r)
		}
	}
	if c.Resources.Limits["memory"] == "" {
		t.Error("no memory limit")
	}
}

func TestDeploymentConfigAndSecrets(t *testing.T) {
	m := mfLoadManifests(t)
	c := m.mfContainer(t)

	// The ConfigMap and Secret the container refers to exist, with the keys it asks for.
	defined := map[string]bool{}
	for _, ef := range c.EnvFrom {
		switch {
		case ef.ConfigMapRef != nil:
			if ef.ConfigMapRef.Name != m.config.Metadata.Name {
				t.Errorf("envFrom ConfigMap %q is not in deploy/k8s", ef.ConfigMapRef.Name)
			}
			for k := range m.config.Data {
				defined[k] = true
			}
		case ef.SecretRef != nil:
			t.Errorf("envFrom secretRef %q: take secrets one key at a time (secretKeyRef)", ef.SecretRef.Name)
		}
	}
	if len(defined) == 0 {
		t.Errorf("the container takes no settings from ConfigMap %s (envFrom)", m.config.Metadata.Name)
	}
	secretKeys := map[string]bool{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			ref := e.ValueFrom.SecretKeyRef
			if ref.Name != m.mfSecret.Metadata.Name {
				t.Errorf("env %s: Secret %q is not the one %s shows", e.Name, ref.Name, mfSecretExample)
			} else if !m.mfSecret.has(ref.Key) {
				t.Errorf("env %s: Secret %s has no key %q", e.Name, ref.Name, ref.Key)
			}
			secretKeys[e.Name] = true
		}
		// $(VAR) expands only variables defined before it (envFrom first, then env in order).
		for _, ref := range regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).FindAllStringSubmatch(e.Value, -1) {
			if !defined[ref[1]] {
				t.Errorf("env %s refers to $(%s), which is not defined before it", e.Name, ref[1])
			}
		}
		defined[e.Name] = true
	}
	if !secretKeys["VERSORI_API_KEY"] {
		t.Error("VERSORI_API_KEY does not come from the Secret (secretKeyRef)")
	}
	if _, inConfig := m.config.Data["VERSORI_API_KEY"]; inConfig {
		t.Error("VERSORI_API_KEY is in the ConfigMap")
	}
	// The Secret is an example: no real credential is committed.
	for k, v := range m.mfSecret.StringData {
		if v != "replace-me" && v != "" {
			t.Errorf("Secret %s: %s holds a value other than the placeholder \"replace-me\"", m.mfSecret.Metadata.Name, k)
		}
	}
	if len(m.mfSecret.Data) > 0 {
		t.Errorf("Secret %s: use stringData placeholders, not data", m.mfSecret.Metadata.Name)
	}

	// Every variable the worker gets is one it reads, or one named here with its reason.
	helpers := map[string]string{
		"REDIS_ADDRESS":  "host:port the Deployment builds REDIS_URL from; KEDA's addressFromEnv",
		"REDIS_PASSWORD": "the Secret's password the Deployment builds REDIS_URL from",
		"GOMEMLIMIT":     "read by the Go runtime (TestDeploymentGoMemLimit)",
	}
	settings := mfEnvNames(workercmd.Vars())
	for name := range defined {
		if _, ok := helpers[name]; !ok && !settings[name] {
			t.Errorf("worker env %s is not a setting of the worker (internal/cmd/workercmd)", name)
		}
	}
	u, err := url.Parse(os.Expand(mfEnvValue(c, "REDIS_URL"), func(k string) string {
		if v, ok := m.config.Data[k]; ok {
			return v
		}
		return "placeholder"
	}))
	if err != nil || u.Scheme == "" || u.Host == "" {
		t.Errorf("REDIS_URL %q does not expand to a Redis URL (%v)", mfEnvValue(c, "REDIS_URL"), err)
	}
}

func TestScaledObject(t *testing.T) {
	m := mfLoadManifests(t)
	so := m.mfScaledObject
	c := m.mfContainer(t)

	ref := so.Spec.ScaleTargetRef
	if ref.Name != m.mfDeployment.Metadata.Name || (ref.Kind != "" && ref.Kind != "Deployment") {
		t.Errorf("scaleTargetRef %+v, want Deployment %s", ref, m.mfDeployment.Metadata.Name)
	}
	if so.Spec.MinReplicaCount == nil || so.Spec.MaxReplicaCount == nil {
		t.Fatal("minReplicaCount and maxReplicaCount must be set")
	}
	if *so.Spec.MinReplicaCount < 1 || *so.Spec.MaxReplicaCount < *so.Spec.MinReplicaCount {
		t.Errorf("replicas %d..%d: want 1 <= min <= max", *so.Spec.MinReplicaCount, *so.Spec.MaxReplicaCount)
	}
	// With minAvailable equal to the replicas, no pod could be evicted and node drains would hang.
	if minAvail, ok := m.mfPdb.Spec.MinAvailable.(int); ok && *so.Spec.MinReplicaCount <= minAvail {
		t.Errorf("minReplicaCount %d must exceed the PodDisruptionBudget's minAvailable %d", *so.Spec.MinReplicaCount, minAvail)
	}

	queue := m.config.Data["QUEUE"]
	if queue == "" {
		queue = mfSettingDefault(t, "QUEUE")
	}
	if len(so.Spec.Triggers) != 1 {
		t.Fatalf("%d triggers, want the one redis trigger", len(so.Spec.Triggers))
	}
	tr := so.Spec.Triggers[0]
	md := tr.Metadata
	if tr.Type != "redis" {
		t.Errorf("trigger type %q, want redis", tr.Type)
	}
	if want := rediskeys.AsynqPending(queue); md["listName"] != want {
		t.Errorf("listName %q, want %q (asynq's pending list of QUEUE %q)", md["listName"], want, queue)
	}
	if n, err := strconv.Atoi(md["listLength"]); err != nil || n < 1 {
		t.Errorf("listLength %q is not a positive integer", md["listLength"])
	}
	// KEDA reads addressFromEnv from the scale target's container.
	if env := md["addressFromEnv"]; env == "" {
		t.Error("the trigger takes its Redis address from neither addressFromEnv")
	} else if _, inConfig := m.config.Data[env]; !inConfig && mfEnvValue(c, env) == "" {
		t.Errorf("addressFromEnv %s is not defined in the worker container", env)
	} else if _, _, err := net.SplitHostPort(m.config.Data[env]); err != nil {
		t.Errorf("addressFromEnv %s = %q is not host:port: %v", env, m.config.Data[env], err)
	}
	// KEDA must look at the database the worker uses.
	db := "0"
	if s := strings.TrimPrefix(regexp.MustCompile(`/\d+$`).FindString(mfEnvValue(c, "REDIS_URL")), "/"); s != "" {
		db = s
	}
	if got := mfOrDefault(md["databaseIndex"], "0"); got != db {
		t.Errorf("databaseIndex %s, but the worker's REDIS_URL uses database %s", got, db)
	}

	if tr.AuthenticationRef == nil || tr.AuthenticationRef.Name != m.mfTriggerAuth.Metadata.Name {
		t.Fatalf("authenticationRef %+v, want TriggerAuthentication %s", tr.AuthenticationRef, m.mfTriggerAuth.Metadata.Name)
	}
	var password bool
	for _, s := range m.mfTriggerAuth.Spec.SecretTargetRef {
		if s.Name != m.mfSecret.Metadata.Name || !m.mfSecret.has(s.Key) {
			t.Errorf("TriggerAuthentication %s: secret %s key %s is not in deploy/k8s", m.mfTriggerAuth.Metadata.Name, s.Name, s.Key)
		}
		password = password || s.Parameter == "password"
	}
	if !password {
		t.Errorf("TriggerAuthentication %s gives the redis trigger no password parameter", m.mfTriggerAuth.Metadata.Name)
	}
}

// ---------------------------------------------------------------------------------------------------
// (c) the compose file

func TestComposeFile(t *testing.T) {
	cf := mfLoadCompose(t)
	for _, name := range []string{"redis", "standin", "worker", "prometheus", "grafana", "enqueue"} {
		if _, ok := cf.Services[name]; !ok {
			t.Errorf("no service %s", name)
		}
	}
	if !slices.Contains(cf.Services["enqueue"].Profiles, "seed") {
		t.Errorf("enqueue is not under the seed profile: %v", cf.Services["enqueue"].Profiles)
	}
	if cmd := strings.Join(cf.Services["redis"].Command, " "); !strings.Contains(cmd, "--appendonly yes") {
		t.Errorf("redis command %q does not turn on AOF", cmd)
	}

	// Bind mounts name files in the repository; named volumes are declared.
	for name, s := range cf.Services {
		for _, v := range s.Volumes {
			src, dst, _ := strings.Cut(v, ":")
			dst, _, _ = strings.Cut(dst, ":")
			if !strings.HasPrefix(src, ".") && !strings.HasPrefix(src, "/") {
				if _, ok := cf.Volumes[src]; !ok {
					t.Errorf("%s: volume %q is not declared under volumes:", name, src)
				}
				continue
			}
			if strings.HasPrefix(src, "/") {
				t.Errorf("%s: %s is an absolute host path; use one relative to deploy/", name, src)
				continue
			}
			mfCheckBind(t, name, filepath.FromSlash(src), dst)
		}
	}
	// The files the Prometheus and Grafana mounts are for.
	for _, f := range []string{"prometheus/prometheus.yml", "prometheus/alerts.yml", "grafana/provisioning/datasources", "grafana/provisioning/dashboards", "grafana/dashboards"} {
		mfCheckBind(t, "files", filepath.FromSlash(f), "")
	}
	mounts := func(svc string) map[string]string { // target -> source
		m := map[string]string{}
		for _, v := range cf.Services[svc].Volumes {
			parts := strings.Split(v, ":")
			if len(parts) >= 2 {
				m[parts[1]] = filepath.Clean(parts[0])
			}
		}
		return m
	}
	for svc, want := range map[string]map[string]string{
		"prometheus": {"/etc/prometheus": "prometheus"},
		"grafana":    {"/etc/grafana/provisioning": filepath.Join("grafana", "provisioning"), "/var/lib/grafana/dashboards": filepath.Join("grafana", "dashboards")},
		"enqueue":    {"/data/sample.jsonl": filepath.Join("..", "internal", "cmd", "demo", "sample.jsonl")},
	} {
		got := mounts(svc)
		for dst, src := range want {
			if got[dst] != src {
				t.Errorf("%s: %s is mounted from %q, want deploy/%s", svc, dst, got[dst], filepath.ToSlash(src))
			}
		}
	}
	if !slices.Contains(cf.Services["enqueue"].Command, "/data/sample.jsonl") {
		t.Errorf("enqueue command %v does not enqueue the mounted sample", cf.Services["enqueue"].Command)
	}

	// Environment names are settings of the program that reads them.
	ev := enqueuecmd.Vars()
	for svc, vars := range map[string][]envflag.Var{
		"worker":  workercmd.Vars(),
		"enqueue": slices.Concat(ev[""], ev["file"], ev["serve"]),
	} {
		settings := mfEnvNames(vars)
		env := cf.Services[svc].Environment
		if len(env) == 0 {
			t.Errorf("%s has no environment", svc)
		}
		for name := range env {
			if !settings[name] {
				t.Errorf("%s env %s is not a setting of %s (internal/cmd)", svc, name, svc)
			}
		}
	}
	if q := cf.Services["enqueue"].Environment["QUEUE"]; q != cf.Services["worker"].Environment["QUEUE"] {
		t.Errorf("enqueue QUEUE %q is not the worker's %q", q, cf.Services["worker"].Environment["QUEUE"])
	}

	// The worker talks to the compose Redis and stand-in, with the stand-in's key and hub.
	w := cf.Services["worker"]
	ep := cf.Services["standin"].Entrypoint
	if len(ep) == 0 || ep[0] != "/versori-standin" {
		t.Fatalf("standin entrypoint %q, want /versori-standin and its flags", ep)
	}
	standinFlags := mfFlagValues(ep[1:])
	for _, e := range []struct{ env, host, port string }{
		{"REDIS_URL", "redis", "6379"},
		{"VERSORI_BASE_URL", "standin", mfPortOf(standinFlags["addr"])},
	} {
		u, err := url.Parse(w.Environment[e.env])
		if err != nil || u.Hostname() != e.host || u.Port() != e.port {
			t.Errorf("worker %s=%q: want host %s port %s", e.env, w.Environment[e.env], e.host, e.port)
		}
	}
	if host, _, _ := net.SplitHostPort(standinFlags["addr"]); host != "0.0.0.0" && host != "" {
		t.Errorf("stand-in -addr %q listens on one interface only: the worker cannot reach it", standinFlags["addr"])
	}
	if w.Environment["VERSORI_API_KEY"] == "" || w.Environment["VERSORI_API_KEY"] != standinFlags["api-key"] {
		t.Errorf("worker VERSORI_API_KEY %q is not the stand-in's -api-key %q", w.Environment["VERSORI_API_KEY"], standinFlags["api-key"])
	}
	hub := standinFlags["hub-id"]
	if hub == "" {
		m := regexp.MustCompile(`DefaultHubID = "([0-9A-Z]+)"`).FindStringSubmatch(mfReadFile(t, filepath.Join(mfRoot, "versori", "versoritest", "server.go")))
		if m == nil {
			t.Fatal("versoritest.DefaultHubID not found")
		}
		hub = m[1]
	}
	if w.Environment["VERSORI_HUB_ID"] != hub {
		t.Errorf("worker VERSORI_HUB_ID %q, the stand-in serves hub %q", w.Environment["VERSORI_HUB_ID"], hub)
	}
	if w.Environment["QUEUE_METRICS"] != "true" {
		t.Errorf("worker QUEUE_METRICS %q, want true (the alerts and the dashboard use asynq's queue metrics)", w.Environment["QUEUE_METRICS"])
	}
	if _, p, _ := net.SplitHostPort(mfOrDefault(w.Environment["METRICS_ADDR"], mfSettingDefault(t, "METRICS_ADDR"))); !slices.ContainsFunc(w.Ports, func(s string) bool { return strings.HasSuffix(s, ":"+p) }) {
		t.Errorf("worker ports %v do not publish the metrics port %s", w.Ports, p)
	}
	if dep, ok := w.DependsOn["redis"]; !ok || dep.Condition != "service_healthy" {
		t.Errorf("worker depends_on redis %+v, want condition service_healthy", dep)
	}
	if len(cf.Services["redis"].Healthcheck.Test) == 0 {
		t.Error("redis has no healthcheck for service_healthy to wait on")
	}

	// docker stop's SIGKILL must not come before the worker's shutdown ends (compose default: 10s).
	grace := mfDefaultShutdownGrace
	if s := w.Environment["SHUTDOWN_GRACE"]; s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("worker SHUTDOWN_GRACE %q: %v", s, err)
		}
		grace = d
	}
	if d, err := time.ParseDuration(w.StopGracePeriod); err != nil || d <= grace+mfWorkerShutdownOverhead {
		t.Errorf("worker stop_grace_period %q must exceed SHUTDOWN_GRACE %s + %s", w.StopGracePeriod, grace, mfWorkerShutdownOverhead)
	}

	// Grafana lets anyone look, and no one change things, without logging in.
	g := cf.Services["grafana"].Environment
	if g["GF_AUTH_ANONYMOUS_ENABLED"] != "true" || g["GF_AUTH_ANONYMOUS_ORG_ROLE"] != "Viewer" {
		t.Errorf("grafana anonymous access %q role %q, want true and Viewer", g["GF_AUTH_ANONYMOUS_ENABLED"], g["GF_AUTH_ANONYMOUS_ORG_ROLE"])
	}
}

// TestPrometheusScrapesTheWorkers checks prometheus/prometheus.yml against the compose file (its static
// targets are the worker containers, on the metrics port) and, through its kubernetes_sd example, the
// Deployment (the pods it keeps are the worker's, on the port named metrics).
func TestPrometheusScrapesTheWorkers(t *testing.T) {
	const path = "prometheus/prometheus.yml"
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		t.Skipf("deploy/%s does not exist yet", path)
	}
	type scrapeConfig struct {
		JobName       string `yaml:"job_name"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
		RelabelConfigs []struct {
			SourceLabels []string `yaml:"source_labels"`
			Regex        string   `yaml:"regex"`
			Action       string   `yaml:"action"`
		} `yaml:"relabel_configs"`
	}
	var prom struct {
		ScrapeConfigs []scrapeConfig `yaml:"scrape_configs"`
	}
	src := mfReadFile(t, path)
	if err := yaml.Load([]byte(src), &prom); err != nil {
		t.Fatalf("%s: %v", path, err)
	}

	cf := mfLoadCompose(t)
	w := cf.Services["worker"]
	_, port, _ := net.SplitHostPort(mfOrDefault(w.Environment["METRICS_ADDR"], mfSettingDefault(t, "METRICS_ADDR")))
	replicas := 1
	if w.Deploy.Replicas != nil {
		replicas = *w.Deploy.Replicas
	}
	hosts := map[string]bool{"worker": true} // the service name resolves to every replica
	for i := 1; i <= replicas; i++ {
		if cf.Name == "" {
			t.Fatal("compose.yaml sets no project name: the worker containers' names depend on the directory")
		}
		hosts[fmt.Sprintf("%s-worker-%d", cf.Name, i)] = true
	}
	var targets int
	for _, sc := range prom.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				targets++
				host, p, err := net.SplitHostPort(target)
				if err != nil || !hosts[host] || p != port {
					t.Errorf("%s: job %s scrapes %s: no worker container of compose.yaml listens there (want one of %v on port %s)",
						path, sc.JobName, target, slices.Sorted(maps.Keys(hosts)), port)
				}
			}
		}
	}
	if targets == 0 {
		t.Errorf("%s has no static targets", path)
	}

	// The kubernetes_sd example is commented out between markers; uncomment and read it.
	begin, end := strings.Index(src, "# BEGIN kubernetes_sd example"), strings.Index(src, "# END kubernetes_sd example")
	if begin < 0 || end < begin {
		t.Logf("%s has no kubernetes_sd example between markers: not checked against the Deployment", path)
		return
	}
	var lines []string
	for _, l := range strings.Split(src[begin:end], "\n")[1:] {
		l = strings.TrimSpace(l)
		lines = append(lines, strings.TrimPrefix(strings.TrimPrefix(l, "#"), " "))
	}
	var example []scrapeConfig
	if err := yaml.Load([]byte(strings.Join(lines, "\n")), &example); err != nil || len(example) != 1 {
		t.Fatalf("%s: kubernetes_sd example: %v (%d jobs)", path, err, len(example))
	}
	m := mfLoadManifests(t)
	c := m.mfContainer(t)
	podLabels := map[string]string{}
	for k, v := range m.mfDeployment.Spec.Template.Metadata.Labels {
		podLabels["__meta_kubernetes_pod_label_"+regexp.MustCompile(`[^a-zA-Z0-9_]`).ReplaceAllString(k, "_")] = v
	}
	for _, rc := range example[0].RelabelConfigs {
		if rc.Action != "keep" || len(rc.SourceLabels) != 1 {
			continue
		}
		re := regexp.MustCompile("^(?:" + rc.Regex + ")$")
		switch l := rc.SourceLabels[0]; {
		case l == "__meta_kubernetes_pod_container_port_name":
			if !slices.ContainsFunc(c.Ports, func(p struct {
				Name          string `yaml:"name"`
				ContainerPort int    `yaml:"containerPort"`
			}) bool {
				return re.MatchString(p.Name) && strconv.Itoa(p.ContainerPort) == port
			}) {
				t.Errorf("%s keeps container ports named %q; the worker's metrics port is not one", path, rc.Regex)
			}
		case strings.HasPrefix(l, "__meta_kubernetes_pod_label_"):
			if !re.MatchString(podLabels[l]) {
				t.Errorf("%s keeps pods whose %s matches %q; the Deployment's pods have %q", path, l, rc.Regex, podLabels[l])
			}
		}
	}
}

// mfCheckBind fails when deploy/src does not exist. Files of deploy/prometheus and deploy/grafana are
// written alongside these; until their directory exists at all, their mounts are skipped (logged).
func mfCheckBind(t *testing.T, svc, src, dst string) {
	t.Helper()
	if _, err := os.Stat(src); err == nil {
		return
	}
	top := strings.Split(filepath.ToSlash(src), "/")[0]
	if top == "prometheus" || top == "grafana" {
		if _, err := os.Stat(top); errors.Is(err, fs.ErrNotExist) {
			t.Logf("%s: deploy/%s not checked: deploy/%s does not exist yet", svc, filepath.ToSlash(src), top)
			return
		}
	}
	t.Errorf("%s: mount %s -> %s: deploy/%s does not exist", svc, src, dst, filepath.ToSlash(filepath.Clean(src)))
}

// ---------------------------------------------------------------------------------------------------
// (d) the Dockerfile

func TestDockerfile(t *testing.T) {
	df := mfParseDockerfile(t, "Dockerfile")
	if len(df.stages) < 2 {
		t.Fatalf("%d stages, want a build stage and a final one", len(df.stages))
	}

	// The builder is the Go release go.mod asks for.
	build := df.stages[0]
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(mfReadFile(t, filepath.Join(mfRoot, "go.mod")))
	if goLine == nil {
		t.Fatal("no go line in go.mod")
	}
	if want := "golang:" + goLine[1]; !strings.HasPrefix(build.from, want) {
		t.Errorf("build stage FROM %s, want %s (go.mod)", build.from, want)
	}

	// go mod download comes before the sources are copied, in its own layer.
	var download, copyAll, goBuild = -1, -1, -1
	var buildArgs []string
	for i, in := range build.instrs {
		switch {
		case in.cmd == "RUN" && strings.Contains(in.args, "go mod download"):
			download = i
		case in.cmd == "COPY" && strings.Fields(in.args)[0] == ".":
			copyAll = i
		case in.cmd == "RUN" && strings.Contains(in.args, "go build"):
			goBuild, buildArgs = i, mfShellWords(t, in.args)
		}
	}
	if download < 0 || copyAll < 0 || goBuild < 0 || download > copyAll || copyAll > goBuild {
		t.Errorf("build stage order: go mod download at %d, COPY . at %d, go build at %d; want them in that order", download, copyAll, goBuild)
	}

	// The go build line is the Makefile's build target, but for -ldflags and the output directory.
	makeArgs := mfMakefileBuild(t)
	outDir := mfFlagArg(buildArgs, "-o")
	if got, want := mfNormalizeBuild(buildArgs), mfNormalizeBuild(makeArgs); !slices.Equal(got, want) {
		t.Errorf("Dockerfile builds %q, the Makefile %q (compared without -o and -ldflags)", buildArgs, makeArgs)
	}
	for _, must := range []string{"CGO_ENABLED=0", "-trimpath", "./cmd/..."} {
		if !slices.Contains(buildArgs, must) {
			t.Errorf("Dockerfile go build %q lacks %s", buildArgs, must)
		}
	}
	if !strings.HasSuffix(outDir, "/") {
		t.Errorf("go build -o %q: want a directory (ending in /) for ./cmd/...", outDir)
	}

	// The final stage runs as non-root, exposes the metrics port and starts the worker.
	final := df.stages[len(df.stages)-1]
	user := final.last("USER")
	switch name, _, _ := strings.Cut(user, ":"); {
	case user == "":
		t.Errorf("final stage (FROM %s) sets no USER", final.from)
	case name == "root" || name == "0":
		t.Errorf("final stage runs as %s", user)
	}
	if _, p, _ := net.SplitHostPort(mfSettingDefault(t, "METRICS_ADDR")); !slices.Contains(strings.Fields(final.last("EXPOSE")), p) {
		t.Errorf("final stage EXPOSE %q, want the default metrics port %s", final.last("EXPOSE"), p)
	}
	if ep := final.last("ENTRYPOINT"); ep != `["/worker"]` {
		t.Errorf("ENTRYPOINT %s, want [\"/worker\"]", ep)
	}

	// Which binaries the final stage has: the whole output directory, or named ones.
	var cmds []string
	entries, err := os.ReadDir(filepath.Join(mfRoot, "cmd"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() {
			cmds = append(cmds, e.Name())
		}
	}
	has := map[string]bool{}
	for _, in := range final.instrs {
		if in.cmd != "COPY" || !strings.Contains(in.args, "--from=") {
			continue
		}
		f := strings.Fields(in.args)
		dst := f[len(f)-1]
		for _, src := range f[1 : len(f)-1] {
			if strings.HasPrefix(src, "--") {
				continue
			}
			switch {
			case strings.TrimSuffix(src, "/") == strings.TrimSuffix(outDir, "/") && dst == "/":
				for _, c := range cmds {
					has["/"+c] = true
				}
			case strings.HasPrefix(src, outDir):
				has[filepath.Join(dst, filepath.Base(src))] = true
			}
		}
	}

	// Every binary an entrypoint runs is built (cmd/<name> is a main package) and in the image.
	used := map[string]string{"/worker": "Dockerfile ENTRYPOINT"}
	cf := mfLoadCompose(t)
	for name, s := range cf.Services {
		if s.Image == "" || !strings.HasPrefix(s.Image, "activator") {
			continue
		}
		if s.Build == nil {
			t.Errorf("compose service %s uses image %s but has no build", name, s.Image)
		}
		if len(s.Entrypoint) > 0 {
			used[s.Entrypoint[0]] = "compose service " + name
		}
	}
	m := mfLoadManifests(t)
	for _, c := range m.mfDeployment.Spec.Template.Spec.Containers {
		if len(c.Command) > 0 {
			used[c.Command[0]] = "Deployment container " + c.Name
		}
	}
	for bin, by := range used {
		name := strings.TrimPrefix(bin, "/")
		if !mfIsMainPackage(t, filepath.Join(mfRoot, "cmd", name)) {
			t.Errorf("%s runs %s, but cmd/%s is not a main package", by, bin, name)
		}
		if !has[bin] {
			t.Errorf("%s runs %s, which the final stage does not copy", by, bin)
		}
	}
	for _, want := range []string{"/worker", "/enqueue", "/versori-standin"} {
		if !has[want] {
			t.Errorf("the image lacks %s", want)
		}
	}
}

// mfNormalizeBuild drops what may differ between the Makefile and the Dockerfile: the output path,
// linker flags and RUN's own --mount flags; $(GO) is go.
func mfNormalizeBuild(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o" || a == "-ldflags":
			i++
		case strings.HasPrefix(a, "-o=") || strings.HasPrefix(a, "-ldflags=") || strings.HasPrefix(a, "--mount="):
		case a == "$(GO)":
			out = append(out, "go")
		default:
			out = append(out, a)
		}
	}
	return out
}

// mfMakefileBuild returns the words of the go build line in the Makefile's build target.
func mfMakefileBuild(t *testing.T) []string {
	t.Helper()
	lines := strings.Split(mfReadFile(t, filepath.Join(mfRoot, "Makefile")), "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, "build:") {
			continue
		}
		for _, r := range lines[i+1:] {
			if !strings.HasPrefix(r, "\t") {
				break
			}
			if strings.Contains(r, " build ") {
				return mfShellWords(t, strings.TrimSpace(r))
			}
		}
	}
	t.Fatal("no go build line in the Makefile's build target")
	return nil
}

// ---------------------------------------------------------------------------------------------------
// Kubernetes manifests

type mfK8sObject struct {
	mfObject
	file string
	node *yaml.Node
}

type mfObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string            `yaml:"name"`
		Namespace string            `yaml:"namespace"`
		Labels    map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
}

type mfDeployment struct {
	mfObject `yaml:",inline"`
	Spec     struct {
		// Replicas stays unset: the ScaledObject's HPA owns the count (TestDeploymentReplicasOwnedByKEDA).
		Replicas *int `yaml:"replicas"`
		Selector struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec struct {
				Affinity                      *mfAffinity `yaml:"affinity"`
				TerminationGracePeriodSeconds *int        `yaml:"terminationGracePeriodSeconds"`
				SecurityContext               struct {
					RunAsNonRoot *bool `yaml:"runAsNonRoot"`
					RunAsUser    *int  `yaml:"runAsUser"`
				} `yaml:"securityContext"`
				Containers []mfContainer `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type mfContainer struct {
	Name            string   `yaml:"name"`
	Image           string   `yaml:"image"`
	ImagePullPolicy string   `yaml:"imagePullPolicy"`
	Command         []string `yaml:"command"`
	Ports           []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	EnvFrom []struct {
		ConfigMapRef *struct {
			Name string `yaml:"name"`
		} `yaml:"configMapRef"`
		SecretRef *struct {
			Name string `yaml:"name"`
		} `yaml:"secretRef"`
	} `yaml:"envFrom"`
	Env []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	LivenessProbe   *mfProbe `yaml:"livenessProbe"`
	ReadinessProbe  *mfProbe `yaml:"readinessProbe"`
	SecurityContext struct {
		RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	Resources struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
}

type mfProbe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port any    `yaml:"port"`
	} `yaml:"httpGet"`
}

type mfService struct {
	mfObject `yaml:",inline"`
	Spec     struct {
		Selector map[string]string `yaml:"selector"`
		Ports    []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort any    `yaml:"targetPort"`
		} `yaml:"ports"`
	} `yaml:"spec"`
}

type mfPdb struct {
	mfObject `yaml:",inline"`
	Spec     struct {
		MinAvailable any `yaml:"minAvailable"`
		Selector     struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
	} `yaml:"spec"`
}

type mfConfigMap struct {
	mfObject `yaml:",inline"`
	Data     map[string]string `yaml:"data"`
}

type mfSecret struct {
	mfObject   `yaml:",inline"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
}

func (s mfSecret) has(key string) bool {
	_, a := s.Data[key]
	_, b := s.StringData[key]
	return a || b
}

type mfScaledObject struct {
	mfObject `yaml:",inline"`
	Spec     struct {
		ScaleTargetRef struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
			Name       string `yaml:"name"`
		} `yaml:"scaleTargetRef"`
		MinReplicaCount *int `yaml:"minReplicaCount"`
		MaxReplicaCount *int `yaml:"maxReplicaCount"`
		Fallback        *struct {
			FailureThreshold int    `yaml:"failureThreshold"`
			Replicas         int    `yaml:"replicas"`
			Behavior         string `yaml:"behavior"`
		} `yaml:"fallback"`
		Triggers []struct {
			Type              string            `yaml:"type"`
			MetricType        string            `yaml:"metricType"`
			Metadata          map[string]string `yaml:"metadata"`
			AuthenticationRef *struct {
				Name string `yaml:"name"`
			} `yaml:"authenticationRef"`
		} `yaml:"triggers"`
	} `yaml:"spec"`
}

type mfTriggerAuth struct {
	mfObject `yaml:",inline"`
	Spec     struct {
		SecretTargetRef []struct {
			Parameter string `yaml:"parameter"`
			Name      string `yaml:"name"`
			Key       string `yaml:"key"`
		} `yaml:"secretTargetRef"`
	} `yaml:"spec"`
}

type mfManifests struct {
	mfDeployment   mfDeployment
	mfService      mfService
	mfPdb          mfPdb
	config         mfConfigMap
	mfSecret       mfSecret
	mfScaledObject mfScaledObject
	mfTriggerAuth  mfTriggerAuth
	mfNetPol       mfNetworkPolicy
}

// mfContainer returns the worker container: the Deployment's only one.
func (m mfManifests) mfContainer(t *testing.T) mfContainer {
	t.Helper()
	cs := m.mfDeployment.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("Deployment %s has %d containers, want 1", m.mfDeployment.Metadata.Name, len(cs))
	}
	return cs[0]
}

// mfLoadManifests decodes the one object of each kind the worker's manifests have.
func mfLoadManifests(t *testing.T) mfManifests {
	t.Helper()
	var m mfManifests
	targets := map[string]any{
		"Deployment":            &m.mfDeployment,
		"Service":               &m.mfService,
		"PodDisruptionBudget":   &m.mfPdb,
		"ConfigMap":             &m.config,
		"ScaledObject":          &m.mfScaledObject,
		"TriggerAuthentication": &m.mfTriggerAuth,
		"NetworkPolicy":         &m.mfNetPol,
	}
	count := map[string]int{}
	for _, o := range mfLoadK8s(t) {
		target, ok := targets[o.Kind]
		if !ok {
			continue
		}
		count[o.Kind]++
		if err := o.node.Decode(target); err != nil {
			t.Fatalf("%s: %s/%s: %v", o.file, o.Kind, o.Metadata.Name, err)
		}
	}
	for kind := range targets {
		if count[kind] != 1 {
			t.Fatalf("deploy/k8s has %d objects of kind %s, want 1", count[kind], kind)
		}
	}
	// The Secret is created by hand (deploy/k8s/README.md); the example shows its name and keys.
	docs := mfLoadDocs(t, mfSecretExample)
	if len(docs) != 1 {
		t.Fatalf("%s: %d documents, want the one Secret", mfSecretExample, len(docs))
	}
	if err := docs[0].Decode(&m.mfSecret); err != nil || m.mfSecret.Kind != "Secret" {
		t.Fatalf("%s: %v (kind %q, want Secret)", mfSecretExample, err, m.mfSecret.Kind)
	}
	return m
}

// mfSecretExample is the Secret's example, outside the applied directory.
var mfSecretExample = filepath.Join("k8s", "examples", "secret.example.yaml")

// mfLoadK8s returns every object under deploy/k8s.
func mfLoadK8s(t *testing.T) []mfK8sObject {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("k8s", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no deploy/k8s/*.yaml (%v)", err)
	}
	var objs []mfK8sObject
	for _, f := range files {
		if filepath.Base(f) == mfKustomization {
			continue // kustomize's own file, not an object (TestKubernetesNoSecretApplied reads it)
		}
		for _, n := range mfLoadDocs(t, f) {
			o := mfK8sObject{file: f, node: n}
			if err := n.Decode(&o.mfObject); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			objs = append(objs, o)
		}
	}
	return objs
}

// mfLoadDocs returns the non-empty documents of a YAML file.
func mfLoadDocs(t *testing.T, path string) []*yaml.Node {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	l, err := yaml.NewLoader(f)
	if err != nil {
		t.Fatal(err)
	}
	var docs []*yaml.Node
	for {
		n := new(yaml.Node)
		err := l.Load(n)
		if err == io.EOF {
			return docs
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", path, len(docs)+1, err)
		}
		if n.Kind != 0 && !(len(n.Content) == 1 && n.Content[0].Tag == "!!null") {
			docs = append(docs, n)
		}
	}
}

// mfEnvValue returns the literal value of the container's env var name ("" if it has none).
func mfEnvValue(c mfContainer, name string) string {
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

// ---------------------------------------------------------------------------------------------------
// compose

type mfComposeFile struct {
	Name     string                      `yaml:"name"`
	Services map[string]mfComposeService `yaml:"services"`
	Volumes  map[string]any              `yaml:"volumes"`
}

type mfComposeService struct {
	Image           string       `yaml:"image"`
	Build           any          `yaml:"build"`
	Entrypoint      mfStringList `yaml:"entrypoint"`
	Command         mfStringList `yaml:"command"`
	Environment     mfEnvMap     `yaml:"environment"`
	Volumes         []string     `yaml:"volumes"`
	Ports           []string     `yaml:"ports"`
	Profiles        []string     `yaml:"profiles"`
	StopGracePeriod string       `yaml:"stop_grace_period"`
	Deploy          struct {
		Replicas *int `yaml:"replicas"`
	} `yaml:"deploy"`
	DependsOn   mfDependsOn `yaml:"depends_on"`
	Healthcheck struct {
		Test mfStringList `yaml:"test"`
	} `yaml:"healthcheck"`
}

// mfStringList is a compose field that is either a list or one string (split on spaces, as compose does
// for the shell-less form's simple cases).
type mfStringList []string

func (s *mfStringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*s = strings.Fields(n.Value)
		return nil
	}
	var l []string
	err := n.Decode(&l)
	*s = l
	return err
}

// mfEnvMap is a compose environment, in its map or its list ("NAME=value") form.
type mfEnvMap map[string]string

func (e *mfEnvMap) UnmarshalYAML(n *yaml.Node) error {
	m := map[string]string{}
	if n.Kind == yaml.SequenceNode {
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		for _, kv := range l {
			k, v, _ := strings.Cut(kv, "=")
			m[k] = v
		}
	} else if err := n.Decode(&m); err != nil {
		return err
	}
	*e = m
	return nil
}

// mfDependsOn is a compose depends_on, in its list form (condition service_started) or its map form.
type mfDependsOn map[string]struct {
	Condition string `yaml:"condition"`
}

func (d *mfDependsOn) UnmarshalYAML(n *yaml.Node) error {
	m := map[string]struct {
		Condition string `yaml:"condition"`
	}{}
	if n.Kind == yaml.SequenceNode {
		var l []string
		if err := n.Decode(&l); err != nil {
			return err
		}
		for _, s := range l {
			m[s] = struct {
				Condition string `yaml:"condition"`
			}{"service_started"}
		}
	} else if err := n.Decode(&m); err != nil {
		return err
	}
	*d = m
	return nil
}

func mfLoadCompose(t *testing.T) mfComposeFile {
	t.Helper()
	docs := mfLoadDocs(t, "compose.yaml")
	if len(docs) != 1 {
		t.Fatalf("compose.yaml has %d documents, want 1", len(docs))
	}
	var cf mfComposeFile
	if err := docs[0].Decode(&cf); err != nil {
		t.Fatalf("compose.yaml: %v (this test reads the short form of volumes and ports)", err)
	}
	return cf
}

// mfFlagValues maps -name=value (or -name value; one or two dashes) command-line flags to their values.
func mfFlagValues(args []string) map[string]string {
	m := map[string]string{}
	for i := 0; i < len(args); i++ {
		if !strings.HasPrefix(args[i], "-") {
			continue
		}
		name := strings.TrimPrefix(strings.TrimPrefix(args[i], "-"), "-")
		if k, v, found := strings.Cut(name, "="); found {
			m[k] = v
		} else if i+1 < len(args) {
			m[name] = args[i+1]
			i++
		}
	}
	return m
}

func mfPortOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// ---------------------------------------------------------------------------------------------------
// Dockerfile

type mfDockerfile struct{ stages []mfStage }

type mfStage struct {
	from   string
	instrs []mfInstruction
}

type mfInstruction struct{ cmd, args string }

// last returns the arguments of the stage's last instruction cmd ("" if none).
func (s mfStage) last(cmd string) string {
	for i := len(s.instrs) - 1; i >= 0; i-- {
		if s.instrs[i].cmd == cmd {
			return s.instrs[i].args
		}
	}
	return ""
}

// mfParseDockerfile reads instructions, joining continued lines and dropping comments.
func mfParseDockerfile(t *testing.T, path string) mfDockerfile {
	t.Helper()
	var df mfDockerfile
	var cur string
	for _, l := range strings.Split(mfReadFile(t, path), "\n") {
		trimmed := strings.TrimSpace(l)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur == "") {
			continue
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur += strings.TrimSuffix(trimmed, `\`) + " "
			continue
		}
		cur += trimmed
		cmd, args, _ := strings.Cut(cur, " ")
		cmd, args, cur = strings.ToUpper(cmd), strings.TrimSpace(args), ""
		if cmd == "FROM" {
			df.stages = append(df.stages, mfStage{from: strings.Fields(args)[0]})
			continue
		}
		if len(df.stages) == 0 {
			t.Fatalf("%s: %s before FROM", path, cmd)
		}
		s := &df.stages[len(df.stages)-1]
		s.instrs = append(s.instrs, mfInstruction{cmd, args})
	}
	return df
}

// mfShellWords splits a shell command line into words, honouring single and double quotes (enough for
// the go build lines compared here).
func mfShellWords(t *testing.T, s string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	var quote rune
	inWord := false
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		t.Fatalf("unbalanced quote in %q", s)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// mfFlagArg returns the value of flag name (-o DIR or -o=DIR) in args.
func mfFlagArg(args []string, name string) string {
	for i, a := range args {
		if a == name && i+1 < len(args) {
			return args[i+1]
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			return v
		}
	}
	return ""
}

// mfIsMainPackage reports whether dir holds a non-test Go file of package main.
func mfIsMainPackage(t *testing.T, dir string) bool {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.go"))
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		if regexp.MustCompile(`(?m)^package main$`).MatchString(mfReadFile(t, f)) {
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------------------------------------------
// helpers

func mfReadFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mfSettingDefault returns a worker setting's default.
func mfSettingDefault(t *testing.T, env string) string {
	t.Helper()
	for _, v := range workercmd.Vars() {
		if v.Env == env {
			return v.Default
		}
	}
	t.Fatalf("the worker has no setting %s", env)
	return ""
}

// mfEnvNames is the set of the variables of vars.
func mfEnvNames(vars []envflag.Var) map[string]bool {
	out := map[string]bool{}
	for _, v := range vars {
		if v.Env != "" {
			out[v.Env] = true
		}
	}
	return out
}

func mfIsTrue(b *bool) bool { return b != nil && *b }

// mfOrDefault returns s, or def when s is empty.
func mfOrDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
