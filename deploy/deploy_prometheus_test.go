package deploy_test

// The Prometheus configuration and alerts in deploy/prometheus: promtool checks them and runs the
// alert unit tests (alerts_test.yml), TestPrometheusAlertsComplete checks that every alert says what
// to do and is tested firing and not firing, and TestPrometheusScrapesARealWorker runs a real
// Prometheus on the shipped configuration against an in-process worker. promtool and prometheus come
// from Debian's prometheus package (or $PROMTOOL and $PROMETHEUS); without them these tests fail when
// CI=true and are skipped otherwise. Identifiers here start with prom: other tests share the package.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v4"

	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/metrics"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
	"github.com/versori/activator/worker"
)

const (
	promConfigFile = "prometheus/prometheus.yml"
	promAlertsFile = "prometheus/alerts.yml"
	promTestsFile  = "prometheus/alerts_test.yml"
	promWorkerJob  = "activator-worker"
)

// promBinary finds a Prometheus tool: $env, or name on PATH. Without it the test fails in CI
// (CI=true) and is skipped elsewhere.
func promBinary(t *testing.T, name, env string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	msg := fmt.Sprintf("%s not found (set %s, or install it: apt-get install --no-install-recommends prometheus)", name, env)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI must have it")
	}
	t.Skip(msg + "; skipping")
	return ""
}

// promtoolRun runs promtool and fails t, with its output, unless it succeeds.
func promtoolRun(t *testing.T, tool string, args ...string) {
	t.Helper()
	out, err := exec.Command(tool, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
}

type promRule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// promAlerts reads the alerting rules of alerts.yml.
func promAlerts(t *testing.T) []promRule {
	t.Helper()
	var f struct {
		Groups []struct {
			Name  string     `yaml:"name"`
			Rules []promRule `yaml:"rules"`
		} `yaml:"groups"`
	}
	promLoadYAML(t, promAlertsFile, &f)
	var out []promRule
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out = append(out, r)
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s has no alerts", promAlertsFile)
	}
	return out
}

func promLoadYAML(t *testing.T, path string, out any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, out); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestPromtoolChecksConfigAndRules(t *testing.T) {
	t.Parallel()
	tool := promBinary(t, "promtool", "PROMTOOL")
	t.Run("check config", func(t *testing.T) { promtoolRun(t, tool, "check", "config", promConfigFile) })
	t.Run("check rules", func(t *testing.T) { promtoolRun(t, tool, "check", "rules", promAlertsFile) })
	t.Run("test rules", func(t *testing.T) { promtoolRun(t, tool, "test", "rules", promTestsFile) })

	// The commented-out kubernetes_sd job, put in place of the static one, is a valid configuration
	// too.
	t.Run("kubernetes_sd example", func(t *testing.T) {
		src, err := os.ReadFile(promConfigFile)
		if err != nil {
			t.Fatal(err)
		}
		s := string(src)
		begin, end := strings.Index(s, "# BEGIN kubernetes_sd example"), strings.Index(s, "# END kubernetes_sd example")
		if begin < 0 || end < begin {
			t.Fatalf("%s: no kubernetes_sd example between # BEGIN and # END markers", promConfigFile)
		}
		var lines []string
		for _, l := range strings.Split(s[begin:end], "\n")[1:] {
			l = strings.TrimSpace(l)
			lines = append(lines, strings.TrimPrefix(strings.TrimPrefix(l, "#"), " "))
		}
		var example []map[string]any
		if err := yaml.Unmarshal([]byte(strings.Join(lines, "\n")), &example); err != nil || len(example) != 1 {
			t.Fatalf("kubernetes_sd example: %v (%d jobs, want 1)", err, len(example))
		}
		if example[0]["job_name"] != promWorkerJob {
			t.Errorf("kubernetes_sd example's job is %v, want %s: the alerts select on it", example[0]["job_name"], promWorkerJob)
		}
		cfg := promShippedConfig(t)
		cfg["scrape_configs"] = []any{example[0]}
		path := promWriteConfig(t, cfg)
		out, err := exec.Command(tool, "check", "config", path).CombinedOutput()
		if err != nil && strings.Contains(string(out), "field kubernetes_sd_configs not found") {
			// Debian builds Prometheus without Kubernetes service discovery; its promtool cannot
			// read the job. TestPrometheusScrapesTheWorkers still checks it against the Deployment.
			t.Skipf("this promtool has no Kubernetes service discovery (Debian's is built without it):\n%s", out)
		}
		if err != nil {
			t.Fatalf("promtool check config (the kubernetes_sd example in place of the static job): %v\n%s", err, out)
		}
	})
}

// promShippedConfig reads prometheus.yml with its rule files made absolute, so that a copy written
// elsewhere still finds them.
func promShippedConfig(t *testing.T) map[string]any {
	t.Helper()
	var cfg map[string]any
	promLoadYAML(t, promConfigFile, &cfg)
	files, _ := cfg["rule_files"].([]any)
	if len(files) == 0 {
		t.Fatalf("%s loads no rule files", promConfigFile)
	}
	for i, f := range files {
		p, err := filepath.Abs(filepath.Join(filepath.Dir(promConfigFile), fmt.Sprint(f)))
		if err != nil {
			t.Fatal(err)
		}
		files[i] = p
	}
	return cfg
}

func promWriteConfig(t *testing.T, cfg map[string]any) string {
	t.Helper()
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "prometheus.yml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestPrometheusAlertsComplete checks, without promtool, that every alert has a for:, a severity and
// annotations saying what to do, that alerts_test.yml tests each one both firing and not firing, and
// that the jobs the alerts select on are scraped by prometheus.yml.
func TestPrometheusAlertsComplete(t *testing.T) {
	t.Parallel()
	alerts := promAlerts(t)

	var cfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName string `yaml:"job_name"`
		} `yaml:"scrape_configs"`
	}
	promLoadYAML(t, promConfigFile, &cfg)
	if !slices.Contains(cfg.RuleFiles, filepath.Base(promAlertsFile)) {
		t.Errorf("%s rule_files = %v, want %s", promConfigFile, cfg.RuleFiles, filepath.Base(promAlertsFile))
	}
	jobs := map[string]bool{}
	for _, sc := range cfg.ScrapeConfigs {
		jobs[sc.JobName] = true
	}
	if !jobs[promWorkerJob] {
		t.Errorf("%s has no job %s", promConfigFile, promWorkerJob)
	}

	var tests struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			Name          string `yaml:"name"`
			AlertRuleTest []struct {
				EvalTime  string           `yaml:"eval_time"`
				AlertName string           `yaml:"alertname"`
				ExpAlerts []map[string]any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	promLoadYAML(t, promTestsFile, &tests)
	if !slices.Equal(tests.RuleFiles, []string{filepath.Base(promAlertsFile)}) {
		t.Errorf("%s rule_files = %v, want [%s]", promTestsFile, tests.RuleFiles, filepath.Base(promAlertsFile))
	}
	firing, quiet := map[string]int{}, map[string]int{}
	for _, tc := range tests.Tests {
		for _, at := range tc.AlertRuleTest {
			if len(at.ExpAlerts) > 0 {
				firing[at.AlertName]++
			} else {
				quiet[at.AlertName]++
			}
		}
	}

	jobRE := regexp.MustCompile(`\bjob\s*=\s*"([^"]*)"`)
	headings := promDocHeadings(t, promRunbookDoc)
	names := map[string]bool{}
	for _, a := range alerts {
		if names[a.Alert] {
			t.Errorf("alert %s is defined twice", a.Alert)
		}
		names[a.Alert] = true
		if d, err := time.ParseDuration(a.For); err != nil || d <= 0 {
			t.Errorf("%s: for: %q, want a positive duration", a.Alert, a.For)
		}
		if s := a.Labels["severity"]; s != "warning" && s != "critical" {
			t.Errorf("%s: severity %q, want warning or critical", a.Alert, s)
		}
		for _, k := range []string{"summary", "description"} {
			if strings.TrimSpace(a.Annotations[k]) == "" {
				t.Errorf("%s has no %s annotation", a.Alert, k)
			}
		}
		if firing[a.Alert] == 0 {
			t.Errorf("%s: %s has no case where it fires", a.Alert, promTestsFile)
		}
		if quiet[a.Alert] == 0 {
			t.Errorf("%s: %s has no case where it does not fire (exp_alerts empty)", a.Alert, promTestsFile)
		}
		for _, m := range jobRE.FindAllStringSubmatch(a.Expr, -1) {
			if !jobs[m[1]] {
				t.Errorf("%s selects job %q, which %s does not scrape", a.Alert, m[1], promConfigFile)
			}
		}
		// Critical alerts page: the kubernetes-mixin's critical ones (KubeAPIDown, KubeletDown) wait
		// 15m, so that a rollout or a blip does not wake anyone.
		if d, err := time.ParseDuration(a.For); err == nil && a.Labels["severity"] == "critical" && d < 15*time.Minute {
			t.Errorf("%s: critical with for: %s, want at least 15m", a.Alert, a.For)
		}
		if why := promRunbookProblem(a.Annotations["runbook_url"], headings); why != "" {
			t.Errorf("%s: runbook_url %q: %s", a.Alert, a.Annotations["runbook_url"], why)
		}
		for _, why := range promScopeProblems(a.Expr) {
			t.Errorf("%s: %s", a.Alert, why)
		}
	}
	for name := range firing {
		if !names[name] {
			t.Errorf("%s tests %s, which %s does not define", promTestsFile, name, promAlertsFile)
		}
	}
	for name := range quiet {
		if !names[name] {
			t.Errorf("%s tests %s, which %s does not define", promTestsFile, name, promAlertsFile)
		}
	}
}

// promRunbookDoc is where every alert's runbook_url points: promRunbookBase + the anchor of a heading.
const (
	promRunbookDoc  = "../docs/operations.md"
	promRunbookBase = "https://github.com/versori/activator/blob/main/docs/operations.md#"
)

// promDocHeadings returns the anchors GitHub gives the Markdown headings of path (lower case,
// punctuation other than - and _ dropped, spaces made -).
func promDocHeadings(t *testing.T, path string) map[string]bool {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	inFence := false
	for _, l := range strings.Split(string(src), "\n") {
		if strings.HasPrefix(l, "```") {
			inFence = !inFence
		}
		if inFence || !strings.HasPrefix(l, "#") {
			continue
		}
		out[promAnchor(strings.TrimLeft(l, "# "))] = true
	}
	return out
}

func promAnchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || ('a' <= r && r <= 'z') || ('0' <= r && r <= '9'):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// promRunbookProblem says what is wrong with a runbook_url, or "".
func promRunbookProblem(u string, headings map[string]bool) string {
	anchor, ok := strings.CutPrefix(u, promRunbookBase)
	switch {
	case u == "":
		return "missing: every alert links to its section of docs/operations.md"
	case !ok:
		return "want " + promRunbookBase + "<heading>"
	case !headings[anchor]:
		return fmt.Sprintf("%s has no heading whose anchor is %q", promRunbookDoc, anchor)
	}
	return ""
}

var (
	// A metric name and its matchers, if any (label values are skipped as strings).
	promSelectorRE = regexp.MustCompile(`\b((?:activator|asynq|go|process)_[a-z_]+|up)\b(\{(?:[^}"]|"[^"]*")*\})?`)
	// An aggregation and its by (...) clause, if any.
	promAggRE = regexp.MustCompile(`\b(sum|max|min|avg|count|group|topk|bottomk|quantile|stddev|stdvar)\s*(by\s*\(([^)]*)\))?\s*\(`)
)

// promScopeProblems lists what in expr could mix environments or other applications: a metric
// selected without job="activator-worker", or an aggregation that drops namespace.
func promScopeProblems(expr string) []string {
	var out []string
	for _, m := range promSelectorRE.FindAllStringSubmatch(expr, -1) {
		if !strings.Contains(m[2], `job="`+promWorkerJob+`"`) {
			out = append(out, fmt.Sprintf("%s%s is not scoped by job=%q: another app's series would match", m[1], m[2], promWorkerJob))
		}
	}
	for _, m := range promAggRE.FindAllStringSubmatch(expr, -1) {
		if !slices.Contains(strings.Fields(strings.ReplaceAll(m[3], ",", " ")), "namespace") {
			out = append(out, fmt.Sprintf("%q drops namespace: aggregate by (namespace, ...) so that each environment alerts apart", strings.TrimSuffix(m[0], "(")))
		}
	}
	return out
}

func TestPromScopeProblems(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want int
	}{
		{`max by (namespace, queue) (asynq_queue_latency_seconds{job="activator-worker"}) > 300`, 0},
		{`absent(up{job="activator-worker"} == 1)`, 0},
		{`max by (queue) (asynq_queue_latency_seconds) > 300`, 2},
		{`sum(rate(activator_job_attempts_total{class!~"ok|x"}[10m]))`, 2},
		{`sum by (namespace) (increase(activator_x_total{code="}", job="activator-worker"}[5m]))`, 0},
		{`max by (namespace) (up{job="other"})`, 1},
	} {
		if got := promScopeProblems(tc.expr); len(got) != tc.want {
			t.Errorf("promScopeProblems(%q) = %q, want %d problems", tc.expr, got, tc.want)
		}
	}
	for _, tc := range []struct{ heading, anchor string }{
		{"ActivatorNoWorkerUp", "activatornoworkerup"},
		{"Alerts and what to do", "alerts-and-what-to-do"},
		{"Batches and `enqueue status`", "batches-and-enqueue-status"},
	} {
		if got := promAnchor(tc.heading); got != tc.anchor {
			t.Errorf("promAnchor(%q) = %q, want %q", tc.heading, got, tc.anchor)
		}
	}
}

// TestPrometheusScrapesARealWorker runs Prometheus on the shipped configuration (scraping every
// second) against an in-process worker that activates a few requests, and checks through its HTTP
// API that every alert is loaded and evaluates cleanly, that the series the alerts use arrive, and
// that none of the alerts' conditions holds for a healthy worker.
func TestPrometheusScrapesARealWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Prometheus server; skipped with -short")
	}
	t.Parallel()
	bin := promBinary(t, "prometheus", "PROMETHEUS")
	alerts := promAlerts(t)

	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	w, err := worker.New(db.Client, worker.Config{
		Queue: "activations", Concurrency: 4, PollInterval: 50 * time.Millisecond, SweepInterval: 500 * time.Millisecond,
		ShutdownGrace: 2 * time.Second, MetricsAddr: "127.0.0.1:0", QueueMetrics: true,
		Versori: versori.Config{BaseURL: api.URL(), HubID: api.HubID(), Auth: versori.APIKey(api.APIKey()), Timeout: 5 * time.Second},
		Logger:  slog.New(slog.NewJSONHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker.Run: %v", err)
		}
	})

	const n = 5
	p := producer.New(db.Client, producer.Config{Queue: "activations"})
	for i := range n {
		req := testutil.Request(fmt.Sprintf("prom-user-%d", i))
		if res, err := p.Enqueue(context.Background(), req); err != nil || res.Status != producer.Enqueued {
			t.Fatalf("Enqueue = %+v, %v", res, err)
		}
	}

	// The shipped configuration, scraping the worker every second.
	cfg := promShippedConfig(t)
	global, _ := cfg["global"].(map[string]any)
	if global == nil {
		global = map[string]any{}
		cfg["global"] = global
	}
	global["scrape_interval"], global["scrape_timeout"], global["evaluation_interval"] = "1s", "1s", "1s"
	delete(cfg, "alerting")
	scrapes, _ := cfg["scrape_configs"].([]any)
	var job map[string]any
	for _, sc := range scrapes {
		if m, _ := sc.(map[string]any); m["job_name"] == promWorkerJob {
			job = m
		}
	}
	if job == nil {
		t.Fatalf("%s has no job %s", promConfigFile, promWorkerJob)
	}
	job["static_configs"] = []any{map[string]any{"targets": []any{w.MetricsAddr()}}}
	cfg["scrape_configs"] = []any{job}
	base := promStart(t, bin, promWriteConfig(t, cfg))

	// Every alert is loaded and has been evaluated without error.
	promEventually(t, 20*time.Second, "every alert of alerts.yml loaded with health ok", func() (bool, string) {
		var rules struct {
			Groups []struct {
				File  string `json:"file"`
				Rules []struct {
					Name      string `json:"name"`
					Type      string `json:"type"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		}
		if err := promAPI(base, "/api/v1/rules", nil, &rules); err != nil {
			return false, err.Error()
		}
		health := map[string]string{}
		for _, g := range rules.Groups {
			for _, r := range g.Rules {
				if r.Type == "alerting" {
					health[r.Name] = r.Health + r.LastError
				}
			}
		}
		var bad []string
		for _, a := range alerts {
			if h := health[a.Alert]; h != "ok" {
				bad = append(bad, fmt.Sprintf("%s: %q", a.Alert, h))
			}
		}
		return len(bad) == 0, strings.Join(bad, "; ")
	})

	// The worker is scraped under the job the alerts select on, and its figures arrive: every result
	// the worker's metrics start with (at zero), whatever operations they count.
	results := promWorkerResults(t)
	promEventually(t, 20*time.Second, "up, the activations and asynq's pending backlog", func() (bool, string) {
		up, err := promQuery(base, `up{job="`+promWorkerJob+`"}`)
		if err != nil || len(up) != 1 || up[0].Value != 1 {
			return false, fmt.Sprintf("up = %+v, %v", up, err)
		}
		acts, err := promQuery(base, "activator_activations_total")
		if err != nil || len(acts) != len(results) {
			return false, fmt.Sprintf("activator_activations_total = %+v, %v; want every result of %v", acts, err, slices.Sorted(maps.Keys(results)))
		}
		var activated float64
		for _, s := range acts {
			if s.Metric["job"] != promWorkerJob || !results[s.Metric["result"]] {
				return false, fmt.Sprintf("activator_activations_total sample without job or a known result: %v", s.Metric)
			}
			if s.Metric["result"] == "activated" {
				activated = s.Value
			}
		}
		if activated != n {
			return false, fmt.Sprintf("activator_activations_total{result=\"activated\"} = %v, want %d", activated, n)
		}
		pending, err := promQuery(base, `asynq_tasks_enqueued_total{state="pending"}`)
		if err != nil || !slices.ContainsFunc(pending, func(s promSample) bool { return s.Metric["queue"] == "activations" }) {
			return false, fmt.Sprintf(`asynq_tasks_enqueued_total{state="pending"} = %+v, %v`, pending, err)
		}
		return true, ""
	})

	// Every metric an alert uses exists (so a misspelt name cannot silently never fire), and no
	// alert's condition holds for a healthy worker.
	nameRE := regexp.MustCompile(`\b(?:activator|asynq)_[a-z_]+\b`)
	used := map[string]bool{}
	for _, a := range alerts {
		for _, name := range nameRE.FindAllString(a.Expr, -1) {
			used[name] = true
		}
	}
	promEventually(t, 10*time.Second, "every metric the alerts use", func() (bool, string) {
		var missing []string
		for _, name := range slices.Sorted(maps.Keys(used)) {
			if s, err := promQuery(base, name); err != nil || len(s) == 0 {
				missing = append(missing, fmt.Sprintf("%s (%v)", name, err))
			}
		}
		return len(missing) == 0, strings.Join(missing, ", ")
	})
	for _, a := range alerts {
		if s, err := promQuery(base, a.Expr); err != nil || len(s) != 0 {
			t.Errorf("%s's condition on a healthy worker = %+v, %v; want no series", a.Alert, s, err)
		}
	}
}

// promStart runs prometheus on config until the test ends and returns its base URL once it is ready.
func promStart(t *testing.T, bin, config string) string {
	t.Helper()
	for attempt := 1; ; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		logPath := filepath.Join(t.TempDir(), "prometheus.log")
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "--config.file="+config, "--storage.tsdb.path="+t.TempDir(),
			"--web.listen-address="+addr, "--log.level=warn")
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			logf.Close()
			t.Fatalf("starting %s: %v", bin, err)
		}
		logf.Close()
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		log := func() string { b, _ := os.ReadFile(logPath); return string(b) }
		base := "http://" + addr
		deadline := time.Now().Add(15 * time.Second)
		for {
			select {
			case err := <-exited:
				if attempt < 3 && strings.Contains(log(), "address already in use") {
					t.Logf("prometheus lost its port %s to another process; retrying", addr)
				} else {
					t.Fatalf("prometheus exited: %v\n%s", err, log())
				}
			default:
				resp, err := http.Get(base + "/-/ready")
				if err == nil {
					resp.Body.Close()
				}
				if err == nil && resp.StatusCode == http.StatusOK {
					t.Cleanup(func() {
						cmd.Process.Kill()
						<-exited
						if l := log(); t.Failed() && l != "" {
							t.Logf("prometheus log:\n%s", l)
						}
					})
					return base
				}
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					<-exited
					t.Fatalf("prometheus not ready at %s after 15s (%v)\n%s", base, err, log())
				}
				time.Sleep(100 * time.Millisecond)
				continue
			}
			break
		}
	}
}

// promAPI GETs a Prometheus HTTP API path and decodes its data into out.
func promAPI(base, path string, q url.Values, out any) error {
	u := base + path
	if q != nil {
		u += "?" + q.Encode()
	}
	resp, err := http.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
		Error  string          `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("GET %s: %d: %w", path, resp.StatusCode, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("GET %s: %d %s: %s", path, resp.StatusCode, body.Status, body.Error)
	}
	return json.Unmarshal(body.Data, out)
}

type promSample struct {
	Metric map[string]string
	Value  float64
}

// promQuery runs an instant query that returns a vector.
func promQuery(base, query string) ([]promSample, error) {
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	if err := promAPI(base, "/api/v1/query", url.Values{"query": {query}}, &data); err != nil {
		return nil, err
	}
	if data.ResultType != "vector" {
		return nil, fmt.Errorf("query %q: result type %s, want vector", query, data.ResultType)
	}
	out := make([]promSample, 0, len(data.Result))
	for _, r := range data.Result {
		s, _ := r.Value[1].(string)
		var v float64
		if _, err := fmt.Sscan(s, &v); err != nil {
			return nil, fmt.Errorf("query %q: value %v: %w", query, r.Value[1], err)
		}
		out = append(out, promSample{Metric: r.Metric, Value: v})
	}
	return out, nil
}

// promEventually polls cond until it holds, failing t with cond's last word after timeout.
func promEventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// promWorkerResults is the set of activator_activations_total's result values a worker exports from
// its start: the ones its metrics initialise at zero.
func promWorkerResults(t *testing.T) map[string]bool {
	t.Helper()
	mfs, err := metrics.NewWorker().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, mf := range mfs {
		if mf.GetName() != "activator_activations_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" {
					out[l.GetValue()] = true
				}
			}
		}
	}
	if !out["activated"] || !out["already_active"] {
		t.Fatalf("a worker's metrics start without activated and already_active results: %v", out)
	}
	return out
}
