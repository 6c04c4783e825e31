package metrics_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/metrics"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

// family is what dashboards and alerts (deploy/prometheus/alerts.yml) may rely on: a metric's type
// and label names.
type family struct {
	typ    dto.MetricType
	labels []string
}

// interfaceFamilies is every activator_* and asynq_* metric a worker exports. A metric added, removed
// or relabelled must be added here too, and to the metrics table of docs/operations.md
// (TestMetricsAreDocumented).
var interfaceFamilies = map[string]family{
	"activator_activations_total":                {dto.MetricType_COUNTER, []string{"result"}},
	"activator_dead_letters_total":               {dto.MetricType_COUNTER, []string{"reason"}},
	"activator_job_attempts_total":               {dto.MetricType_COUNTER, []string{"class"}},
	"activator_job_duration_seconds":             {dto.MetricType_HISTOGRAM, []string{"class"}},
	"activator_versori_requests_total":           {dto.MetricType_COUNTER, []string{"code", "operation"}},
	"activator_versori_request_duration_seconds": {dto.MetricType_HISTOGRAM, []string{"operation"}},
	"activator_queue_paused":                     {dto.MetricType_GAUGE, nil},
	"activator_rate_limit_wait_seconds":          {dto.MetricType_HISTOGRAM, nil},
	"activator_circuit_breaker_state":            {dto.MetricType_GAUGE, nil},
	"activator_dead_letter_store_size":           {dto.MetricType_GAUGE, nil},
	"activator_duplicate_activations_total":      {dto.MetricType_COUNTER, nil},
	"activator_retry_after_capped_total":         {dto.MetricType_COUNTER, nil},
	"activator_redis_restarts_total":             {dto.MetricType_COUNTER, nil},
	"activator_end_users_created_total":          {dto.MetricType_COUNTER, nil},
	// asynq's queue collector (QUEUE_METRICS). asynq_tasks_enqueued_total and
	// asynq_queue_paused_total are gauges despite their names.
	"asynq_tasks_enqueued_total":            {dto.MetricType_GAUGE, []string{"queue", "state"}},
	"asynq_queue_size":                      {dto.MetricType_GAUGE, []string{"queue"}},
	"asynq_queue_latency_seconds":           {dto.MetricType_GAUGE, []string{"queue"}},
	"asynq_queue_memory_usage_approx_bytes": {dto.MetricType_GAUGE, []string{"queue"}},
	"asynq_tasks_processed_total":           {dto.MetricType_COUNTER, []string{"queue"}},
	"asynq_tasks_failed_total":              {dto.MetricType_COUNTER, []string{"queue"}},
	"asynq_queue_paused_total":              {dto.MetricType_GAUGE, []string{"queue"}},
}

const testQueue = "metrics-test"

// apiOps are the operation labels of the client's calls.
var apiOps = []string{versori.OpActivate, versori.OpListActivations, versori.OpGetActivation, versori.OpDeleteActivation,
	versori.OpUpdateVariables, versori.OpGetEndUser, versori.OpCreateEndUser}

// boundedValues says, for every label name a worker may use, which values are allowed. Anything else,
// a user id, an integration id, an error text, would make a series per value.
func boundedValues() map[string]func(string) bool {
	oneOf := func(vs ...string) func(string) bool { return func(v string) bool { return slices.Contains(vs, v) } }
	var reasons, classes []string
	for _, r := range tasks.Reasons() {
		reasons = append(reasons, string(r))
	}
	for _, c := range versori.Classes() {
		classes = append(classes, string(c))
	}
	classes = append(classes, "circuit_open")
	code := regexp.MustCompile(`^(error|[1-5][0-9][0-9])$`)
	return map[string]func(string) bool{
		"result":    oneOf(metrics.Results()...),
		"reason":    oneOf(reasons...),
		"class":     oneOf(classes...),
		"operation": oneOf(apiOps...),
		"code":      code.MatchString,
		"queue":     oneOf(testQueue),
		"state":     oneOf("active", "pending", "scheduled", "retry", "archived", "completed"),
	}
}

// exercised returns a worker's metrics with every metric observed at least once, asynq's queue
// collector watching a paused queue that holds one pending task, and a dead-letter store of 3.
func exercised(t *testing.T) *metrics.Worker {
	t.Helper()
	db := testutil.Redis(t)
	client := asynq.NewClientFromRedisClient(db.Client)
	if _, err := client.Enqueue(asynq.NewTask("metrics:test", nil), asynq.Queue(testQueue)); err != nil {
		t.Fatal(err)
	}
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	if err := insp.PauseQueue(testQueue); err != nil {
		t.Fatal(err)
	}

	m := metrics.NewWorker()
	m.WatchQueues(insp)
	m.WatchDeadLetterStore(func() (int64, error) { return 3, nil })

	m.Activations.WithLabelValues(metrics.ResultActivated).Inc()
	m.Activations.WithLabelValues(metrics.ResultAlreadyActive).Inc()
	for _, r := range tasks.Reasons() {
		m.DeadLetters.WithLabelValues(string(r)).Inc()
	}
	for _, c := range versori.Classes() {
		m.ObserveAttempt(c, 20*time.Millisecond)
	}
	m.ObserveAttempt("circuit_open", 0)
	m.EndUsersCreated.Inc()
	for _, op := range apiOps {
		for _, status := range []int{200, 401, 429, 503, 0} {
			m.ObserveVersori(op, status, 30*time.Millisecond)
		}
	}
	m.QueuePaused.Set(1)
	m.RateLimitWaits.Observe(0.2)
	m.BreakerState.Set(2)
	return m
}

func TestMetricsInterface(t *testing.T) {
	t.Parallel()
	m := exercised(t)
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	bounded := boundedValues()
	got := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		name := mf.GetName()
		got[name] = mf
		want, ours := interfaceFamilies[name]
		switch {
		case ours:
		case strings.HasPrefix(name, "activator_") || strings.HasPrefix(name, "asynq_"):
			t.Errorf("%s is exported but not in interfaceFamilies: add it there and to the metrics table of docs/operations.md", name)
			continue
		case strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_"):
			// The Go and process collectors: no labels but go_info's Go version.
			for _, s := range mf.GetMetric() {
				for _, l := range s.GetLabel() {
					if name != "go_info" || l.GetName() != "version" {
						t.Errorf("%s has label %s=%q", name, l.GetName(), l.GetValue())
					}
				}
			}
			continue
		default:
			t.Errorf("unexpected metric %s", name)
			continue
		}
		if mf.GetType() != want.typ {
			t.Errorf("%s is a %v, want %v", name, mf.GetType(), want.typ)
		}
		if mf.GetHelp() == "" {
			t.Errorf("%s has no help text", name)
		}
		for _, s := range mf.GetMetric() {
			var names []string
			for _, l := range s.GetLabel() {
				names = append(names, l.GetName())
				ok, known := bounded[l.GetName()]
				if !known {
					t.Errorf("%s has label %q; label names are limited to result, reason, class, operation, code, queue, state", name, l.GetName())
				} else if !ok(l.GetValue()) {
					t.Errorf("%s{%s=%q}: not one of the label's bounded values", name, l.GetName(), l.GetValue())
				}
			}
			sort.Strings(names)
			if !slices.Equal(names, want.labels) {
				t.Errorf("%s has labels %v, want %v", name, names, want.labels)
			}
		}
	}
	for name := range interfaceFamilies {
		if got[name] == nil {
			t.Errorf("%s is not exported", name)
		}
	}

	// Every label value known in advance is there from the start, so that rate() and increase()
	// see the first event; and what was observed is counted.
	value := func(name string, labels map[string]string) (float64, bool) {
		mf := got[name]
		if mf == nil {
			return 0, false
		}
	series:
		for _, s := range mf.GetMetric() {
			if len(s.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range s.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue series
				}
			}
			switch {
			case s.Counter != nil:
				return s.GetCounter().GetValue(), true
			case s.Gauge != nil:
				return s.GetGauge().GetValue(), true
			case s.Histogram != nil:
				return float64(s.GetHistogram().GetSampleCount()), true
			}
		}
		return 0, false
	}
	checks := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"activator_activations_total", map[string]string{"result": "activated"}, 1},
		{"activator_activations_total", map[string]string{"result": "already_active"}, 1},
		{"activator_activations_total", map[string]string{"result": "superseded"}, 0},
		{"activator_activations_total", map[string]string{"result": "variables_updated"}, 0},
		{"activator_activations_total", map[string]string{"result": "deactivated"}, 0},
		{"activator_activations_total", map[string]string{"result": "already_inactive"}, 0},
		{"activator_end_users_created_total", nil, 1},
		{"activator_versori_requests_total", map[string]string{"operation": "create_end_user", "code": "503"}, 1},
		{"activator_versori_requests_total", map[string]string{"operation": "update_variables", "code": "200"}, 1},
		{"activator_job_attempts_total", map[string]string{"class": "circuit_open"}, 1},
		{"activator_job_duration_seconds", map[string]string{"class": "circuit_open"}, 1},
		{"activator_versori_requests_total", map[string]string{"operation": "activate", "code": "error"}, 1},
		{"activator_versori_requests_total", map[string]string{"operation": "list_activations", "code": "401"}, 1},
		{"activator_versori_request_duration_seconds", map[string]string{"operation": "activate"}, 5},
		{"activator_queue_paused", nil, 1},
		{"activator_rate_limit_wait_seconds", nil, 1},
		{"activator_circuit_breaker_state", nil, 2},
		{"activator_dead_letter_store_size", nil, 3},
		{"asynq_tasks_enqueued_total", map[string]string{"queue": testQueue, "state": "pending"}, 1},
		{"asynq_tasks_enqueued_total", map[string]string{"queue": testQueue, "state": "active"}, 0},
		{"asynq_queue_paused_total", map[string]string{"queue": testQueue}, 1},
		{"asynq_queue_size", map[string]string{"queue": testQueue}, 1},
	}
	for _, r := range tasks.Reasons() {
		checks = append(checks, struct {
			name   string
			labels map[string]string
			want   float64
		}{"activator_dead_letters_total", map[string]string{"reason": string(r)}, 1})
	}
	for _, c := range versori.Classes() {
		checks = append(checks, struct {
			name   string
			labels map[string]string
			want   float64
		}{"activator_job_attempts_total", map[string]string{"class": string(c)}, 1})
	}
	for _, c := range checks {
		if v, ok := value(c.name, c.labels); !ok || v != c.want {
			t.Errorf("%s%v = %v (present: %v), want %v", c.name, c.labels, v, ok, c.want)
		}
	}
}

func TestMetricsInitialisedAtZero(t *testing.T) {
	t.Parallel()
	m := metrics.NewWorker()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]int{}
	for _, mf := range mfs {
		for _, s := range mf.GetMetric() {
			if strings.HasPrefix(mf.GetName(), "activator_") && s.Counter != nil && s.GetCounter().GetValue() != 0 {
				t.Errorf("%s%v = %v before anything happened", mf.GetName(), s.GetLabel(), s.GetCounter().GetValue())
			}
		}
		series[mf.GetName()] = len(mf.GetMetric())
	}
	want := map[string]int{
		"activator_activations_total":  len(metrics.Results()),
		"activator_dead_letters_total": len(tasks.Reasons()),
		"activator_job_attempts_total": len(versori.Classes()) + 1, // and circuit_open
	}
	for name, n := range want {
		if series[name] != n {
			t.Errorf("%s has %d series before any event, want %d (every known label value, at zero)", name, series[name], n)
		}
	}
}

func TestDeadLetterStoreSizeUnknownIsNaN(t *testing.T) {
	t.Parallel()
	m := metrics.NewWorker()
	m.WatchDeadLetterStore(func() (int64, error) { return 0, errors.New("redis down") })
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "activator_dead_letter_store_size" {
			if v := mf.GetMetric()[0].GetGauge().GetValue(); !math.IsNaN(v) {
				t.Errorf("store size when the count fails = %v, want NaN (not a misleading 0)", v)
			}
			return
		}
	}
	t.Error("activator_dead_letter_store_size not exported")
}

// promtool finds promtool ($PROMTOOL, or on PATH). Without it, the test fails in CI (CI=true) and is
// skipped elsewhere.
func promtool(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("PROMTOOL"); p != "" {
		return p
	}
	p, err := exec.LookPath("promtool")
	if err == nil {
		return p
	}
	const msg = "promtool not found (set PROMTOOL, or install it: apt-get install --no-install-recommends prometheus)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; CI must have it")
	}
	t.Skip(msg + "; skipping")
	return ""
}

// knownLintProblems are promtool's complaints about asynq's own metric names, which are not ours to
// change: gauges named _total.
var knownLintProblems = []string{
	`asynq_tasks_enqueued_total non-counter metrics should not have "_total" suffix`,
	`asynq_queue_paused_total non-counter metrics should not have "_total" suffix`,
}

// TestMetricsExpositionLints serves the metrics the way a worker does and runs `promtool check
// metrics` over the scrape.
func TestMetricsExpositionLints(t *testing.T) {
	t.Parallel()
	tool := promtool(t)
	m := exercised(t)
	srv, err := metrics.Listen("127.0.0.1:0", m.Registry, func(context.Context) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})

	get := func(path string) (int, []byte) {
		t.Helper()
		resp, err := http.Get("http://" + srv.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body := get(p); code != http.StatusOK {
			t.Errorf("GET %s = %d %s", p, code, body)
		}
	}
	code, body := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics = %d %s", code, body)
	}
	for _, want := range []string{`activator_activations_total{result="activated"} 1`, `asynq_tasks_enqueued_total{queue="` + testQueue + `",state="pending"} 1`} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("scrape lacks %s", want)
		}
	}

	cmd := exec.Command(tool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	out, err := cmd.CombinedOutput()
	t.Logf("promtool check metrics: %v\n%s", err, out)
	var problems []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line = strings.TrimSpace(line); line != "" && !slices.Contains(knownLintProblems, line) {
			problems = append(problems, line)
		}
	}
	if len(problems) > 0 {
		t.Errorf("promtool check metrics (%v):\n%s", err, strings.Join(problems, "\n"))
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running promtool: %v", err)
	}
}

// TestHotPathCountsIntoTheLabelledSeries checks that the children the worker caches for the happy
// path are the same series a label lookup finds, so that dashboards see every job.
func TestHotPathCountsIntoTheLabelledSeries(t *testing.T) {
	t.Parallel()
	value := func(c interface{ Write(*dto.Metric) error }) float64 {
		var m dto.Metric
		if err := c.Write(&m); err != nil {
			t.Fatal(err)
		}
		if m.Counter != nil {
			return m.Counter.GetValue()
		}
		return float64(m.Histogram.GetSampleCount())
	}
	m := metrics.NewWorker()
	m.ObserveAttempt(versori.ClassOK, time.Millisecond)
	m.ObserveAttempt(versori.ClassTransient, time.Millisecond)
	m.Activated(metrics.ResultActivated)
	m.Activated(metrics.ResultAlreadyActive)
	for _, status := range []int{200, 201, 201, 503} {
		m.ObserveVersori(versori.OpActivate, status, time.Millisecond)
	}
	m.ObserveVersori(versori.OpListActivations, 200, time.Millisecond)
	tests := []struct {
		name   string
		series interface{ Write(*dto.Metric) error }
		want   float64
	}{
		{"attempts ok", m.Attempts.WithLabelValues(string(versori.ClassOK)), 1},
		{"attempts transient", m.Attempts.WithLabelValues(string(versori.ClassTransient)), 1},
		{"duration ok", m.JobDuration.WithLabelValues(string(versori.ClassOK)).(prometheus.Histogram), 1},
		{"activated", m.Activations.WithLabelValues(metrics.ResultActivated), 1},
		{"already active", m.Activations.WithLabelValues(metrics.ResultAlreadyActive), 1},
		{"activate 200", m.VersoriRequests.WithLabelValues(versori.OpActivate, "200"), 1},
		{"activate 201", m.VersoriRequests.WithLabelValues(versori.OpActivate, "201"), 2},
		{"activate 503", m.VersoriRequests.WithLabelValues(versori.OpActivate, "503"), 1},
		{"activate duration", m.VersoriDuration.WithLabelValues(versori.OpActivate).(prometheus.Histogram), 4},
		{"list 200", m.VersoriRequests.WithLabelValues(versori.OpListActivations, "200"), 1},
	}
	for _, tt := range tests {
		if got := value(tt.series); got != tt.want {
			t.Errorf("%s = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestMetricsAreDocumented keeps the operators' metrics table honest: every metric a worker exports is
// named in docs/operations.md.
func TestMetricsAreDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	for name := range interfaceFamilies {
		if !bytes.Contains(doc, []byte("`"+name)) {
			t.Errorf("%s is exported but docs/operations.md does not name it: add it to the metrics table", name)
		}
	}
}
