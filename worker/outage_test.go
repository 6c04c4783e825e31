package worker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/versori/activator/internal/cmd/enqueuecmd"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/redisconn"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/versori/versoritest"
)

// startProcOn is startProc against any Redis URL, with metrics served on metricsAddr.
func startProcOn(t *testing.T, redisURL string, api *versoritest.Server, metricsAddr string, extraEnv ...string) *proc {
	t.Helper()
	cmd := exec.Command(testutil.GoBuild(t, "github.com/versori/activator/cmd/worker"))
	cmd.Env = append(os.Environ(),
		"REDIS_URL="+redisURL, "VERSORI_BASE_URL="+api.URL(), "VERSORI_API_KEY="+api.APIKey(),
		"VERSORI_HUB_ID="+api.HubID(), "WORKER_CONCURRENCY=50", "QUEUE="+queue, "METRICS_ADDR="+metricsAddr,
		"POLL_INTERVAL=50ms", "DLQ_SWEEP_INTERVAL=500ms", "LOG_LEVEL=warn", "SETTLE_TIME="+testSettle.String())
	cmd.Env = append(cmd.Env, extraEnv...)
	p := &proc{cmd: cmd, logs: &bytes.Buffer{}, done: make(chan error, 1)}
	cmd.Stderr = p.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("worker logs:\n%s", p.logs.String())
		}
	})
	return p
}

// procExited reports whether p has exited, and how; ask from one goroutine only.
func procExited(p *proc) (bool, error) {
	if p.cmd.ProcessState != nil {
		return true, nil
	}
	select {
	case err := <-p.done:
		p.done <- err // keep it for whoever waits next
		return true, err
	default:
		return false, nil
	}
}

// httpStatus is the status of GET url, or 0 and the error when there is no answer.
func httpStatus(url string) (int, error) {
	c := http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	return resp.StatusCode, nil
}

// TestWorkerRidesOutRedisOutage stops Redis under a busy worker process and starts it again: the
// worker stays up (/healthz 200) but says it is not ready (/readyz 503) while Redis is away, takes
// up the queue again once it is back, and every pair ends activated exactly once.
func TestWorkerRidesOutRedisOutage(t *testing.T) {
	t.Parallel()
	const (
		n           = 300
		concurrency = 5
		// held is what the worker has fetched at most: its call slots and WORKER_PREFETCH's default.
		held = concurrency + max(concurrency/5, 1)
	)
	// The queue lives in Redis, so it outlives a restart only if Redis persists it: this server keeps
	// an append-only file, exactly as docs/operations.md advises (appendonly yes,
	// appendfsync everysec). Without it, the jobs not yet run would be lost with the restart.
	rs := testutil.StartRedisServer(t, true)
	api := versoritest.New(t, versoritest.Options{Faults: versoritest.Faults{Latency: 50 * time.Millisecond}})
	path, pairs := writeRequests(t, n, 0)
	ctx := context.Background()
	sum, err := producer.New(rs.Client, producer.Config{Queue: queue}).EnqueueFile(ctx, producer.FileOptions{Path: path})
	if err != nil || sum.Enqueued != n {
		t.Fatalf("EnqueueFile = %+v, %v; want %d enqueued", sum, err, n)
	}

	maddr := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	healthz, readyz := "http://"+maddr+"/healthz", "http://"+maddr+"/readyz"
	w := startProcOn(t, rs.URL(), api, maddr, "WORKER_CONCURRENCY="+strconv.Itoa(concurrency))
	testutil.WaitFor(t, 10*time.Second, "/readyz 200", func() bool { c, _ := httpStatus(readyz); return c == http.StatusOK })
	testutil.WaitFor(t, 20*time.Second, "50 activations before the outage", func() bool { return api.Stats().Activations >= 50 })

	down := time.Now()
	rs.Stop()
	stopped := time.Since(down)
	atStop := api.Stats().Activations
	var flipped time.Duration
	testutil.WaitFor(t, 10*time.Second, "/readyz 503 while Redis is down", func() bool {
		c, _ := httpStatus(readyz)
		flipped = time.Since(down)
		return c == http.StatusServiceUnavailable
	})
	// The outage lasts a while: the worker must stay up and alive all along.
	for time.Since(down) < 3*time.Second {
		if c, err := httpStatus(healthz); c != http.StatusOK {
			t.Fatalf("/healthz = %d, %v while Redis is down; want 200", c, err)
		}
		if c, err := httpStatus(readyz); c != http.StatusServiceUnavailable {
			t.Fatalf("/readyz = %d, %v while Redis is down; want 503", c, err)
		}
		if gone, err := procExited(w); gone {
			t.Fatalf("the worker exited (%v) while Redis was down", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Jobs already fetched when Redis went may finish; nothing new is taken while it is away.
	duringOutage := api.Stats().Activations
	if duringOutage > atStop+held {
		t.Errorf("%d activations while Redis was down (from %d to %d), more than the %d jobs the worker held",
			duringOutage-atStop, atStop, duringOutage, held)
	}

	up := time.Now()
	rs.Start()
	restarted := time.Since(up)
	left := testutil.Unfinished(t, rs.Client, queue)
	if left <= 0 || left > n-atStop+held {
		t.Errorf("%d jobs left in the queue after the restart; want the %d or so not yet done", left, n-duringOutage)
	}
	testutil.WaitFor(t, 10*time.Second, "/readyz 200 after Redis is back", func() bool {
		c, _ := httpStatus(readyz)
		return c == http.StatusOK
	})
	ready := time.Since(up)
	testutil.WaitFor(t, 25*time.Second, "every pair active and the queue drained", func() bool {
		return api.Stats().Activations >= n && testutil.Unfinished(t, rs.Client, queue) == 0
	})
	drained := time.Since(up)
	assertExactlyOnce(t, api, pairs)
	if dl, err := deadletter.NewStore(rs.Client, queue).Count(ctx, ""); err != nil || dl != 0 {
		t.Errorf("dead letters = %d, %v; want none", dl, err)
	}

	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-w.done:
		if err != nil {
			t.Fatalf("worker exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("worker did not exit within 20 s of SIGTERM")
	}
	t.Logf("Redis stopped after %d activations (SIGTERM took %s); /readyz said 503 %s after; %d activations during the outage; "+
		"restart took %s with %d jobs left; /readyz 200 %s after it; all %d active and the queue drained %s after it",
		atStop, stopped.Round(time.Millisecond), flipped.Round(time.Millisecond), duringOutage-atStop,
		restarted.Round(time.Millisecond), left, ready.Round(time.Millisecond), n, drained.Round(time.Millisecond))
}

// TestEnqueueWhileRedisDown runs `enqueue file` while Redis is down: it fails with exit 3 and says
// that nothing was enqueued and to re-run; re-run once Redis is back, it enqueues every row, and a
// third run finds them all already queued.
func TestEnqueueWhileRedisDown(t *testing.T) {
	t.Parallel()
	const n = 50
	rs := testutil.StartRedisServer(t, false)
	rs.Stop()
	path, _ := writeRequests(t, n, 0)
	run := func() (int, string, string) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		env := enqueuecmd.Env{
			Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr,
			Lookup: func(k string) (string, bool) {
				switch k {
				case "REDIS_URL":
					return rs.URL(), true
				case "QUEUE":
					return queue, true
				}
				return "", false
			},
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		code := enqueuecmd.Run(ctx, []string{"file", path, "--quiet"}, env)
		return code, stdout.String(), stderr.String()
	}

	start := time.Now()
	code, stdout, stderr := run()
	took := time.Since(start)
	downMsg := strings.TrimSpace(stderr)
	if code != enqueuecmd.ExitFailed {
		t.Errorf("with Redis down: exit %d, want %d (ExitFailed)\nstdout:\n%s\nstderr:\n%s", code, enqueuecmd.ExitFailed, stdout, stderr)
	}
	for _, want := range []string{"nothing was enqueued", "re-run"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("with Redis down: stderr does not say %q:\n%s", want, stderr)
		}
	}
	if took > 6*time.Second {
		t.Errorf("with Redis down, enqueue took %s to fail", took)
	}
	if _, err := os.Stat(path + ".rejects.jsonl"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a rejects file exists after the failed run: %v", err)
	}

	rs.Start()
	if size, err := rs.Client.DBSize(context.Background()).Result(); err != nil || size != 0 {
		t.Fatalf("Redis holds %d keys (%v) after the failed run; want none", size, err)
	}
	code, stdout, stderr = run()
	if code != enqueuecmd.ExitOK || !strings.Contains(stdout, fmt.Sprintf("enqueued: %d\n", n)) {
		t.Errorf("after Redis is back: exit %d, want 0 and %d enqueued\nstdout:\n%s\nstderr:\n%s", code, n, stdout, stderr)
	}
	if got := testutil.Unfinished(t, rs.Client, queue); got != n {
		t.Errorf("%d jobs in the queue, want %d", got, n)
	}
	code, stdout, stderr = run()
	if code != enqueuecmd.ExitOK || !strings.Contains(stdout, "enqueued: 0\n") ||
		!strings.Contains(stdout, fmt.Sprintf("already queued or done: %d\n", n)) {
		t.Errorf("third run: exit %d, want 0, none enqueued and %d already queued\nstdout:\n%s\nstderr:\n%s", code, n, stdout, stderr)
	}
	if got := testutil.Unfinished(t, rs.Client, queue); got != n {
		t.Errorf("%d jobs in the queue after the third run, want %d", got, n)
	}
	t.Logf("with Redis down, enqueue failed in %s: %s", took.Round(time.Millisecond), downMsg)
}

// TestEnqueueFileWhenRedisStopsMidway stops Redis while `enqueue file`'s pipelined enqueues are in
// flight: the run ends instead of hanging, every row is counted either enqueued or failed, and a
// re-run once Redis is back adds exactly what is missing.
func TestEnqueueFileWhenRedisStopsMidway(t *testing.T) {
	t.Parallel()
	const n = 20000
	rs := testutil.StartRedisServer(t, true) // graceful SHUTDOWN writes the AOF, so what was acknowledged survives
	path, _ := writeRequests(t, n, 0)
	rdb, err := redisconn.Open(rs.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	p := producer.New(rdb, producer.Config{Queue: queue})

	var stopped sync.Once
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	first, err := p.EnqueueFile(ctx, producer.FileOptions{Path: path, ProgressEvery: 5 * time.Millisecond,
		Progress: func(s producer.Summary) {
			if s.Enqueued >= n/10 {
				stopped.Do(rs.Stop)
			}
		}})
	if err != nil {
		t.Fatalf("first run: %v (a run that loses Redis counts failed rows; it does not fail or hang)", err)
	}
	t.Logf("first run: %d enqueued, %d failed", first.Enqueued, first.Failed)
	if first.Enqueued == 0 || first.Failed == 0 || first.Enqueued+first.Failed != n {
		t.Fatalf("first run: %d enqueued + %d failed, want both > 0 and %d in all", first.Enqueued, first.Failed, n)
	}

	rs.Start()
	// A re-run is a new process with a new client: the first one's pool may still answer its cached
	// dial error for a second after Redis is back.
	rdb2, err := redisconn.Open(rs.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer rdb2.Close()
	second, err := producer.New(rdb2, producer.Config{Queue: queue}).EnqueueFile(ctx, producer.FileOptions{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	// A row whose reply was lost when Redis stopped counts as failed, yet may be queued: the re-run
	// then finds it as a duplicate.
	if second.Failed != 0 || second.Enqueued+second.Duplicates != n || second.Duplicates < first.Enqueued {
		t.Errorf("re-run: %d enqueued, %d duplicates, %d failed; want no failures, %d in all, at least the first run's %d as duplicates",
			second.Enqueued, second.Duplicates, second.Failed, n, first.Enqueued)
	}
	if got := testutil.Unfinished(t, rs.Client, queue); got != n {
		t.Errorf("%d jobs in the queue, want %d", got, n)
	}
}

// TestEnqueueFileInterruptedWhileRedisHangs freezes Redis (SIGSTOP) under `enqueue file`'s
// pipelined enqueues and then interrupts the run: it returns instead of waiting out the client's
// timeouts and retries (which took 40 s), counts every row not known to be queued as failed, and
// says the batch's counter is incomplete. Once Redis resumes, at least what it reported is queued.
func TestEnqueueFileInterruptedWhileRedisHangs(t *testing.T) {
	t.Parallel()
	const n = 50000
	rs := testutil.StartRedisServer(t, false)
	path, _ := writeRequests(t, n, 0)
	rdb, err := redisconn.Open(rs.URL())
	if err != nil {
		t.Fatal(err)
	}
	p := producer.New(rdb, producer.Config{Queue: queue})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var frozen sync.Once
	type result struct {
		sum producer.Summary
		err error
	}
	done := make(chan result, 1)
	go func() {
		sum, err := p.EnqueueFile(ctx, producer.FileOptions{Path: path, Batch: "hang", ProgressEvery: 5 * time.Millisecond,
			Progress: func(s producer.Summary) {
				if s.Enqueued >= 2000 {
					frozen.Do(func() {
						if err := rs.Signal(syscall.SIGSTOP); err != nil {
							t.Errorf("SIGSTOP: %v", err)
						}
						time.AfterFunc(200*time.Millisecond, cancel)
					})
				}
			}})
		done <- result{sum, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second): // a liveness bound, six times the 5 s grace
		t.Fatal("EnqueueFile did not return within 30 s of being interrupted while Redis hangs")
	}
	if err := rs.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	go rdb.Close() // waits for the batches still in flight
	t.Logf("%+v", r.sum)
	if !errors.Is(r.err, context.Canceled) {
		t.Errorf("EnqueueFile = %v, want an interrupted error wrapping context.Canceled", r.err)
	}
	s := r.sum
	if s.Enqueued+s.Failed != s.Rows || s.Failed == 0 || s.CountErrors != 1 {
		t.Errorf("enqueued %d + failed %d of %d rows, count errors %d; want every row accounted for, some failed, the counter reported incomplete",
			s.Enqueued, s.Failed, s.Rows, s.CountErrors)
	}
	if got := testutil.Unfinished(t, rs.Client, queue); got < s.Enqueued {
		t.Errorf("%d jobs in the queue, fewer than the %d the run reported enqueued", got, s.Enqueued)
	}
}
