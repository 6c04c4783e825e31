package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/activator/internal/redisconn"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
	"github.com/versori/activator/worker"
)

// adminTasks is how many activation jobs the admin UI tests run through the worker before looking.
const adminTasks = 12

// startAdminWorkerOn enqueues adminTasks valid requests on db, starts a worker with the queue UI
// configured by ui, and waits until every job has completed (asynq keeps completed tasks for the
// producer's retention, so they stay visible in the UI). It returns the listener's base URL.
func startAdminWorkerOn(t *testing.T, db *testutil.RedisDB, ui worker.AdminUI) (base string, insp *asynq.Inspector) {
	t.Helper()
	api := versoritest.New(t, versoritest.Options{})
	p := producer.New(db.Client, producer.Config{Queue: queue})
	ctx := context.Background()
	for i := range adminTasks {
		req := testutil.Request(fmt.Sprintf("ui-user-%03d", i))
		if r, err := p.Enqueue(ctx, req); err != nil || r.Status != producer.Enqueued {
			t.Fatalf("Enqueue = %+v, %v", r, err)
		}
	}
	w, _ := startWorker(t, db.Client, api, func(c *worker.Config) { c.AdminUI, c.AdminAddr = ui, "127.0.0.1:0" })
	insp = asynq.NewInspectorFromRedisClient(db.Client)
	testutil.WaitFor(t, 30*time.Second, "all jobs completed", func() bool {
		qi, err := insp.GetQueueInfo(queue)
		return err == nil && qi.Completed == adminTasks
	})
	// Never on the metrics listener, which scrapers and probes reach.
	if code, _, _ := do(t, http.MethodGet, "http://"+w.MetricsAddr()+worker.AdminUIPath); code != http.StatusNotFound {
		t.Errorf("GET METRICS_ADDR%s = %d, want 404: the UI is served on AdminAddr only", worker.AdminUIPath, code)
	}
	return "http://" + w.AdminAddr(), insp
}

// adminRedis is the UI's own connection to the test's database, built from its URL as the worker
// command builds it from REDIS_URL.
func adminRedis(t *testing.T, db *testutil.RedisDB) asynq.RedisConnOpt {
	t.Helper()
	opt, err := redisconn.Parse(db.URL())
	if err != nil {
		t.Fatal(err)
	}
	return opt
}

// do sends one request and returns the status, content type and body.
func do(t *testing.T, method, url string) (int, string, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

type queueSnapshot struct {
	Queue     string `json:"queue"`
	Completed int    `json:"completed"`
	Paused    bool   `json:"paused"`
}

func listQueues(t *testing.T, base string) []queueSnapshot {
	t.Helper()
	code, ctype, body := do(t, http.MethodGet, base+"/ui/api/queues")
	if code != http.StatusOK {
		t.Fatalf("GET /ui/api/queues = %d %q", code, body)
	}
	var out struct {
		Queues []queueSnapshot `json:"queues"`
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatalf("GET /ui/api/queues (%s) is not JSON: %v\n%s", ctype, err, body)
	}
	return out.Queues
}

func TestAdminUIReadOnly(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	base, insp := startAdminWorkerOn(t, db, worker.AdminUI{Enabled: true, Redis: adminRedis(t, db)})

	t.Run("page and API", func(t *testing.T) {
		code, ctype, body := do(t, http.MethodGet, base+"/ui/")
		if code != http.StatusOK || !strings.HasPrefix(ctype, "text/html") {
			t.Fatalf("GET /ui/ = %d %q, want 200 text/html", code, ctype)
		}
		if !strings.Contains(body, `<div id="root">`) || !strings.Contains(body, `window.FLAG_READ_ONLY="true"`) {
			t.Errorf("GET /ui/ is not asynqmon's page in read-only mode:\n%s", body)
		}
		// Its scripts are served under /ui too.
		_, rest, ok := strings.Cut(body, `<script src="`)
		src, _, _ := strings.Cut(rest, `"`)
		if !ok || !strings.HasPrefix(src, "/ui/static/js/") {
			t.Fatalf("GET /ui/: no script under /ui/static/js/:\n%s", body)
		}
		if code, ctype, _ := do(t, http.MethodGet, base+src); code != http.StatusOK || !strings.HasPrefix(ctype, "application/javascript") {
			t.Errorf("GET %s = %d %q, want 200 application/javascript", src, code, ctype)
		}
		// A deep link is the same single-page app.
		if code, ctype, _ := do(t, http.MethodGet, base+"/ui/queues/"+queue); code != http.StatusOK || !strings.HasPrefix(ctype, "text/html") {
			t.Errorf("GET /ui/queues/%s = %d %q, want 200 text/html", queue, code, ctype)
		}
		qs := listQueues(t, base)
		if len(qs) != 1 || qs[0].Queue != queue || qs[0].Completed != adminTasks || qs[0].Paused {
			t.Errorf("GET /ui/api/queues = %+v, want %q with %d completed, not paused", qs, queue, adminTasks)
		}
		// Metrics and probes stay on the metrics listener; the admin listener serves the UI alone.
		for _, p := range []string{"/metrics", "/healthz", "/readyz", "/debug/pprof/"} {
			if code, _, body := do(t, http.MethodGet, base+p); code != http.StatusNotFound {
				t.Errorf("GET ADMIN_ADDR%s = %d %q, want 404", p, code, body)
			}
		}
	})

	t.Run("mutations refused", func(t *testing.T) {
		for _, c := range []struct{ method, path string }{
			{http.MethodPost, "/ui/api/queues/" + queue + ":pause"},
			{http.MethodDelete, "/ui/api/queues/" + queue},
			{http.MethodDelete, "/ui/api/queues/" + queue + "/completed_tasks:delete_all"},
			{http.MethodPost, "/ui/api/queues/" + queue + "/completed_tasks:batch_delete"},
		} {
			code, _, body := do(t, c.method, base+c.path)
			if code != http.StatusMethodNotAllowed || !strings.Contains(body, "read-only") {
				t.Errorf("%s %s = %d %q, want 405 read-only", c.method, c.path, code, body)
			}
		}
		qi, err := insp.GetQueueInfo(queue)
		if err != nil {
			t.Fatal(err)
		}
		if qi.Paused || qi.Completed != adminTasks {
			t.Errorf("after refused mutations: paused %v, completed %d; want not paused, %d completed", qi.Paused, qi.Completed, adminTasks)
		}
	})

	t.Run("chromium", func(t *testing.T) {
		chrome := chromiumOrSkip(t)
		dir := t.TempDir()
		dom := runChromium(t, chrome, dir, "--dump-dom", base+"/ui/")
		if !strings.Contains(dom, queue) {
			t.Errorf("the rendered dashboard does not mention queue %q:\n%s", queue, dom)
		}
		if !strings.Contains(dom, `href="/ui/queues/`+queue+`"`) {
			t.Errorf("the rendered dashboard has no link to /ui/queues/%s", queue)
		}
		shot := filepath.Join(dir, "admin-ui.png")
		runChromium(t, chrome, dir, "--screenshot="+shot, "--window-size=1280,800", base+"/ui/")
		if fi, err := os.Stat(shot); err != nil || fi.Size() == 0 {
			t.Fatalf("no screenshot at %s: %v", shot, err)
		}
		t.Logf("screenshot of the queue UI: %s", shot)
		if keep := os.Getenv("TEST_ADMIN_UI_SCREENSHOT"); keep != "" {
			if b, err := os.ReadFile(shot); err == nil {
				if err := os.WriteFile(keep, b, 0o644); err != nil {
					t.Errorf("copying the screenshot to TEST_ADMIN_UI_SCREENSHOT: %v", err)
				} else {
					t.Logf("screenshot copied to %s", keep)
				}
			}
		}
	})
}

func TestAdminUIOffByDefault(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	w, _ := startWorker(t, db.Client, api, func(c *worker.Config) { c.AdminAddr = "127.0.0.1:0" })
	if a := w.AdminAddr(); a != "" {
		t.Errorf("AdminAddr() = %q with the UI and the profiler off, want no listener", a)
	}
	base := "http://" + w.MetricsAddr()
	for _, p := range []string{"/ui/", "/ui/api/queues", "/ui/queues/" + queue} {
		if code, _, body := do(t, http.MethodGet, base+p); code != http.StatusNotFound {
			t.Errorf("GET %s with the UI off = %d %q, want 404", p, code, body)
		}
	}
	if code, _, _ := do(t, http.MethodGet, base+"/metrics"); code != http.StatusOK {
		t.Errorf("GET /metrics = %d", code)
	}
}

func TestAdminUIWriteSharesClient(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	// No Redis option: the UI shares the worker's client.
	base, insp := startAdminWorkerOn(t, db, worker.AdminUI{Enabled: true, Write: true})
	code, _, body := do(t, http.MethodGet, base+"/ui/")
	if code != http.StatusOK || !strings.Contains(body, `window.FLAG_READ_ONLY="false"`) {
		t.Fatalf("GET /ui/ = %d, want the page in write mode:\n%s", code, body)
	}
	if code, _, body := do(t, http.MethodPost, base+"/ui/api/queues/"+queue+":pause"); code != http.StatusNoContent && code != http.StatusOK {
		t.Fatalf("POST :pause with ADMIN_UI_WRITE = %d %q, want success", code, body)
	}
	qi, err := insp.GetQueueInfo(queue)
	if err != nil || !qi.Paused {
		t.Fatalf("queue after POST :pause: %+v, %v; want paused", qi, err)
	}
	if code, _, body := do(t, http.MethodPost, base+"/ui/api/queues/"+queue+":resume"); code != http.StatusNoContent && code != http.StatusOK {
		t.Fatalf("POST :resume = %d %q", code, body)
	}
	if qs := listQueues(t, base); len(qs) != 1 || qs[0].Paused {
		t.Errorf("queues after resume = %+v", qs)
	}
}

// TestAdminUIConfig checks that New refuses the queue UI without the admin listener to serve it on,
// even with a metrics listener.
func TestAdminUIConfig(t *testing.T) {
	t.Parallel()
	if _, err := worker.New(nil, worker.Config{Concurrency: 1, AdminUI: worker.AdminUI{Enabled: true}, MetricsAddr: "127.0.0.1:0",
		Versori: versori.Config{Auth: versori.APIKey("k"), HubID: "01J5TANDXN0000000000000HVB"}}); err == nil ||
		!strings.Contains(err.Error(), "worker: AdminUI.Enabled needs AdminAddr") {
		t.Errorf("New with the UI on and no AdminAddr: %v", err)
	}
}

// chromiumOrSkip returns the path of a Chromium, skipping the test without one, or failing it in CI.
func chromiumOrSkip(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const how = "no chromium on PATH: install it with `apt-get update && apt-get install -y chromium` (Debian's package; binary /usr/bin/chromium)"
	if os.Getenv("CI") == "true" {
		t.Fatal(how)
	}
	t.Skip(how)
	return ""
}

// runChromium loads a page in headless Chromium and returns what it printed. Every host name but
// 127.0.0.1 is made unresolvable, so the page's web-font stylesheets never leave the machine.
func runChromium(t *testing.T, chrome, dir string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	base := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
		"--user-data-dir=" + filepath.Join(dir, "profile"), "--virtual-time-budget=10000",
	}
	cmd := exec.CommandContext(ctx, chrome, append(base, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			t.Fatalf("chromium %v timed out; stderr:\n%s", args, stderr.String())
		}
		t.Fatalf("chromium %v: %v; stderr:\n%s", args, err, stderr.String())
	}
	return stdout.String()
}

// TestPprof checks that PPROF serves Go's profiles on the admin listener only, never on the metrics
// listener, and nothing when off.
func TestPprof(t *testing.T) {
	t.Parallel()
	api := versoritest.New(t, versoritest.Options{})
	for _, on := range []bool{false, true} {
		t.Run(fmt.Sprint("pprof=", on), func(t *testing.T) {
			db := testutil.Redis(t)
			w, _ := startWorker(t, db.Client, api, func(c *worker.Config) { c.Pprof, c.AdminAddr = on, "127.0.0.1:0" })
			if !on {
				if a := w.AdminAddr(); a != "" {
					t.Errorf("AdminAddr() = %q with the profiler off, want no listener", a)
				}
			}
			for _, p := range []string{"/debug/pprof/", "/debug/pprof/allocs", "/debug/pprof/cmdline", "/debug/pprof/profile?seconds=1"} {
				if code, _, body := do(t, http.MethodGet, "http://"+w.MetricsAddr()+p); code != http.StatusNotFound {
					t.Errorf("GET METRICS_ADDR%s = %d %.200q, want 404", p, code, body)
				}
				if on {
					if code, _, body := do(t, http.MethodGet, "http://"+w.AdminAddr()+p); code != http.StatusOK {
						t.Errorf("GET ADMIN_ADDR%s = %d %.200q, want 200", p, code, body)
					}
				}
			}
		})
	}
}

// TestAdminAddrTaken checks that an AdminAddr the worker cannot listen on is refused by New, naming
// the field, and that the metrics listener is not left open behind it.
func TestAdminAddrTaken(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	metricsAddr := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	_, err = worker.New(db.Client, worker.Config{Queue: queue, Concurrency: 1, Pprof: true, AdminAddr: ln.Addr().String(), MetricsAddr: metricsAddr,
		Versori: versori.Config{BaseURL: api.URL(), HubID: api.HubID(), Auth: versori.APIKey(api.APIKey())}})
	if err == nil || !strings.HasPrefix(err.Error(), "worker: AdminAddr "+ln.Addr().String()+" cannot be listened on: ") {
		t.Fatalf("New with a taken AdminAddr: %v", err)
	}
	if l, err := net.Listen("tcp", metricsAddr); err != nil {
		t.Errorf("MetricsAddr is held after New failed: %v", err)
	} else {
		l.Close()
	}
}
