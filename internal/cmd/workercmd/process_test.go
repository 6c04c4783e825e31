package workercmd

import (
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/versori/activator/internal/testutil"
)

// These tests run the worker as a person does: the built binary, its stderr read as it comes.

// workerProcess is a worker binary running with env (and nothing else of the test's environment).
type workerProcess struct {
	cmd    *exec.Cmd
	stderr *testutil.SyncBuffer
	done   chan struct{}
	code   int
}

// processEnv is a complete environment for a worker that serves no metrics and never reaches an API.
func processEnv(redisURL string, extra ...string) []string {
	return append([]string{
		"REDIS_URL=" + redisURL, "VERSORI_API_KEY=" + settingsAPIKey, "VERSORI_HUB_ID=" + settingsHubID,
		"VERSORI_BASE_URL=http://127.0.0.1:1", "METRICS_ADDR=", "SHUTDOWN_GRACE=1s",
	}, extra...)
}

func startWorker(t *testing.T, env []string, args ...string) *workerProcess {
	t.Helper()
	p := &workerProcess{stderr: &testutil.SyncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(testutil.GoBuild(t, "github.com/versori/activator/cmd/worker"), args...)
	p.cmd.Env, p.cmd.Stderr = env, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *workerProcess) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(60 * time.Second):
		t.Fatalf("the worker has not exited; stderr:\n%s", p.stderr)
		return -1
	}
}

// TestProcessRefusedSettings checks that a setting Redis or the checks refuse stops the worker before
// it starts: one line saying what to fix, exit 2. REDIS_URL=…/99 used to start a worker that logged
// "ERR DB index is out of range" forever; VERSORI_HUB_ID=hub1 was accepted.
func TestProcessRefusedSettings(t *testing.T) {
	t.Parallel()
	addr := testutil.RedisAddr()
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"database Redis does not have", processEnv("redis://" + addr + "/99"),
			"worker: REDIS_URL (redis://" + addr + "/99) names database 99, which Redis refuses (ERR DB index is out of range)"},
		{"hub id not a ULID", processEnv("redis://"+addr+"/99", "VERSORI_HUB_ID=hub1"),
			`worker: VERSORI_HUB_ID "hub1" is not a ULID (26 Crockford base32 characters)`},
		{"log format", processEnv("redis://"+addr+"/99", "LOG_FORMAT=logfmt"),
			`worker: LOG_FORMAT="logfmt": want json or text`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startWorker(t, tc.env)
			if code := p.wait(t); code != 2 {
				t.Errorf("exit %d, want 2", code)
			}
			if out := p.stderr.String(); strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, tc.want) {
				t.Errorf("stderr = %q, want one line starting %q", out, tc.want)
			}
		})
	}
}

// jsonLines returns out's lines, failing t for any that is not a JSON object.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var recs []map[string]any
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Errorf("a log line is not JSON: %q", l)
			continue
		}
		recs = append(recs, m)
	}
	return recs
}

// TestProcessRedisDown checks what a worker logs while Redis is down: at start it waits, saying so
// (and not that it started) until Redis answers; while running, go-redis's and asynq's refused
// connections come out as the worker's own JSON lines, each repeat written once per
// LOG_REPEAT_INTERVAL with its count, never as go-redis's plain "redis: 2026/12/03 … pool.go:770:"
// lines. SIGTERM still stops it, with exit 0.
func TestProcessRedisDown(t *testing.T) {
	t.Parallel()
	r := testutil.StartRedisServer(t, false)
	r.Stop()
	p := startWorker(t, processEnv(r.URL(), "LOG_REPEAT_INTERVAL=5s"))

	waiting := `"msg":"waiting for Redis: it does not answer"`
	testutil.WaitFor(t, 30*time.Second, "the wait for Redis, repeated and counted", func() bool {
		for _, l := range strings.Split(p.stderr.String(), "\n") {
			if strings.Contains(l, waiting) && strings.Contains(l, `"repeated":`) {
				return true
			}
		}
		return false
	})
	if strings.Contains(p.stderr.String(), "worker started") {
		t.Fatalf("the worker said it started while Redis was down:\n%s", p.stderr)
	}

	r.Start()
	testutil.WaitFor(t, 30*time.Second, "worker started", func() bool { return strings.Contains(p.stderr.String(), `"msg":"worker started"`) })
	started := len(p.stderr.String())

	r.Stop()
	testutil.WaitFor(t, 60*time.Second, "go-redis's refused connections, counted", func() bool {
		after := p.stderr.String()[started:]
		for _, l := range strings.Split(after, "\n") {
			if strings.Contains(l, `"source":"go-redis"`) && strings.Contains(l, `"repeated":`) {
				return true
			}
		}
		return false
	})
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0", code)
	}
	out := p.stderr.String()
	recs := jsonLines(t, out)
	lastWait, start := -1, -1
	for i, rec := range recs {
		switch rec["msg"] {
		case "waiting for Redis: it does not answer":
			lastWait = i
		case "worker started":
			start = i
		}
	}
	if start < lastWait {
		t.Errorf("worker started (line %d) before Redis answered (last wait: line %d)", start+1, lastWait+1)
	}
	if strings.Contains(out, "redis: ") || strings.Contains(out, "pool.go") {
		t.Errorf("go-redis's own log lines are in the output")
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("stderr:\n%s", out)
	}
}

// TestProcessHealthWhileWaitingForRedis checks that METRICS_ADDR is served from the start: while the
// worker waits for Redis at start, /healthz answers 200 (the process is alive; a liveness probe must not
// kill it) and /readyz 503; once Redis answers and the worker has started, /readyz answers 200. It
// served nothing until Redis answered, so Kubernetes killed a pod started during a Redis outage.
func TestProcessHealthWhileWaitingForRedis(t *testing.T) {
	t.Parallel()
	r := testutil.StartRedisServer(t, false)
	r.Stop()
	addr := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	p := startWorker(t, processEnv(r.URL(), "METRICS_ADDR="+addr))
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	testutil.WaitFor(t, 30*time.Second, "the wait for Redis", func() bool {
		return strings.Contains(p.stderr.String(), `"msg":"waiting for Redis: it does not answer"`)
	})
	if code, body := get("/healthz"); code != http.StatusOK {
		t.Errorf("waiting for Redis: GET /healthz = %d %q, want 200", code, body)
	}
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not ready") {
		t.Errorf("waiting for Redis: GET /readyz = %d %q, want 503 not ready", code, body)
	}
	if code, _ := get("/metrics"); code != http.StatusServiceUnavailable {
		t.Errorf("waiting for Redis: GET /metrics = %d, want 503", code)
	}
	if strings.Contains(p.stderr.String(), "worker started") {
		t.Fatalf("the worker said it started while Redis was down:\n%s", p.stderr)
	}

	r.Start()
	testutil.WaitFor(t, 30*time.Second, "/readyz 200 once Redis answers", func() bool {
		code, _ := get("/readyz")
		return code == http.StatusOK
	})
	testutil.WaitFor(t, 30*time.Second, "worker started", func() bool { return strings.Contains(p.stderr.String(), `"msg":"worker started"`) })
	if code, body := get("/healthz"); code != http.StatusOK {
		t.Errorf("started: GET /healthz = %d %q, want 200", code, body)
	}
	if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, "activator_") {
		t.Errorf("started: GET /metrics = %d, want 200 and the worker's metrics", code)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0; stderr:\n%s", code, p.stderr)
	}
}

// TestProcessLogFormatText checks LOG_FORMAT=text: every line, go-redis's too, is slog's text form.
func TestProcessLogFormatText(t *testing.T) {
	t.Parallel()
	r := testutil.StartRedisServer(t, false)
	r.Stop()
	p := startWorker(t, processEnv(r.URL(), "LOG_FORMAT=text"))
	testutil.WaitFor(t, 30*time.Second, "go-redis's refused connection and the wait", func() bool {
		out := p.stderr.String()
		return strings.Contains(out, `msg="waiting for Redis: it does not answer"`) && strings.Contains(out, "source=go-redis")
	})
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0", code)
	}
	for _, l := range strings.Split(strings.TrimSuffix(p.stderr.String(), "\n"), "\n") {
		if !strings.HasPrefix(l, "time=") || !strings.Contains(l, " level=") {
			t.Errorf("line is not slog's text form: %q", l)
		}
	}
}
