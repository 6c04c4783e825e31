package worker_test

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
)

// proc is a worker process.
type proc struct {
	cmd  *exec.Cmd
	logs *bytes.Buffer
	done chan error
}

// startProc starts a worker process on db against api; see startProcOn.
func startProc(t *testing.T, db *testutil.RedisDB, api *versoritest.Server, extraEnv ...string) *proc {
	t.Helper()
	return startProcOn(t, db.URL(), api, "127.0.0.1:0", extraEnv...)
}

// expireLeases makes the leases of the queue's active tasks look 100 s stale, as they are a minute
// after a crash, so that the next worker's recoverer (which runs when it starts) takes them back now
// instead of the test waiting out asynq's 30 s lease and 30 s cutoff.
func expireLeases(t *testing.T, db *testutil.RedisDB) int {
	t.Helper()
	ctx := context.Background()
	key := rediskeys.AsynqLease(queue)
	ids, err := db.Client.ZRange(ctx, key, 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	stale := float64(time.Now().Add(-100 * time.Second).Unix())
	for _, id := range ids {
		if err := db.Client.ZAddXX(ctx, key, redisZ(stale, id)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	return len(ids)
}

// TestWorkerKilledMidCallActivatesOnce kills a worker process with SIGKILL while its calls are in
// flight and already committed by the API, then starts another: the interrupted jobs come back as
// retries, look up their pair, and count the activation they find as done, even those the recovery
// brought to their retry limit (asynq's own limit is above it, so the handler ends them). Tasks of an
// older producer at asynq's limit are archived by its recoverer without reaching the handler; the
// sweep puts them in the dead-letter store, and replaying them activates nothing twice.
func TestWorkerKilledMidCallActivatesOnce(t *testing.T) {
	t.Parallel()
	const n = 200
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{Faults: versoritest.Faults{LatencyAfterCommit: time.Hour}})
	path, pairs := writeRequests(t, n, 0)
	p := producer.New(db.Client, producer.Config{Queue: queue})
	ctx := context.Background()
	// Twenty pairs, queued first so that they are among the calls in flight, whose jobs are at their
	// retry limit once the crash is recovered: ten as this release queues them (Payload.MaxRetry,
	// with asynq's own limit above it), which the handler ends itself, looking first; and ten as an
	// older producer did (asynq's limit alone), which asynq's recoverer archives without calling the
	// handler, for the sweep to store.
	client := asynq.NewClientFromRedisClient(db.Client)
	var atLimit, legacy []versori.Pair
	for i := range 20 {
		r := versori.ActivationRequest{UserID: fmt.Sprintf("limit-%d", i), IntegrationID: crmIntegration}
		pl, opts := tasks.Payload{Request: r, MaxRetry: 1}, []asynq.Option{asynq.Queue(queue), asynq.Retention(time.Hour)}
		if i%2 == 1 {
			pl.MaxRetry, opts = 0, append(opts, asynq.MaxRetry(0))
			legacy = append(legacy, r.Pair())
		} else {
			atLimit = append(atLimit, r.Pair())
		}
		task, err := tasks.NewTask(pl, opts...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := client.EnqueueContext(ctx, task); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.EnqueueFile(ctx, producer.FileOptions{Path: path}); err != nil {
		t.Fatal(err)
	}

	first := startProc(t, db, api)
	testutil.WaitFor(t, 60*time.Second, "50 calls committed and hanging", func() bool { return api.Stats().Activations >= 50 })
	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-first.done
	inFlight := api.Stats().Activations
	if leased := expireLeases(t, db); leased != inFlight {
		t.Logf("%d leases for %d committed calls", leased, inFlight)
	}

	api.SetFaults(versoritest.Faults{})
	startProc(t, db, api)
	all := append(append(append([]versori.Pair{}, pairs...), atLimit...), legacy...)
	store := dlStore(db.Client, p)
	testutil.WaitFor(t, 90*time.Second, "every pair active or dead-lettered, and the queue drained", func() bool {
		c, _ := store.Count(ctx, "")
		return api.Stats().Activations+int(c) >= len(all) && testutil.Unfinished(t, db.Client, queue) == 0
	})
	// The legacy at-limit jobs that were in flight were archived by the recoverer without reaching
	// the handler; the sweep must bring every one of them into the store.
	testutil.WaitFor(t, 30*time.Second, "the legacy at-limit jobs swept into the store", func() bool {
		c, _ := store.Count(ctx, tasks.ReasonRetriesExhausted)
		return c == int64(len(legacy))
	})
	ids, err := store.IDs(ctx, tasks.ReasonRetriesExhausted)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if !slices.ContainsFunc(legacy, func(p versori.Pair) bool { return tasks.TaskID(p) == id }) {
			t.Errorf("dead letter %s: an at-limit job of this release was not ended by its handler", id)
		}
	}
	// This release's at-limit jobs looked first and found their activation.
	for _, pr := range atLimit {
		if n := api.ActivationCount(pr); n != 1 {
			t.Errorf("at-limit pair %s has %d activations, want 1", pr.UserID, n)
		}
	}
	res, err := inspector(db.Client, p).Requeue(ctx, ids)
	if err != nil || len(res.Requeued) != len(ids) {
		t.Fatalf("Requeue = %+v, %v", res, err)
	}
	testutil.WaitFor(t, 60*time.Second, "replays done", func() bool { return testutil.Unfinished(t, db.Client, queue) == 0 })
	assertExactlyOnce(t, api, all)
	if c, _ := store.Count(ctx, ""); c != 0 {
		t.Errorf("%d dead letters remain", c)
	}
	t.Logf("killed with %d committed calls in flight; %d of the legacy at-limit jobs were swept and replayed", inFlight, len(ids))
}

// TestWorkerSIGTERMHandsBackInFlightJobs stops a worker whose calls hang after committing: it exits 0
// once the grace period is over, and the cut-short jobs come back as counted retries (not as fresh
// jobs with retry count 0, which would activate again), so the next worker finds them active; jobs
// that were still waiting for a call slot come back unchanged.
func TestWorkerSIGTERMHandsBackInFlightJobs(t *testing.T) {
	t.Parallel()
	const n = 100
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{Faults: versoritest.Faults{LatencyAfterCommit: time.Hour}})
	path, pairs := writeRequests(t, n, 0)
	p := producer.New(db.Client, producer.Config{Queue: queue})
	ctx := context.Background()
	if _, err := p.EnqueueFile(ctx, producer.FileOptions{Path: path}); err != nil {
		t.Fatal(err)
	}
	w := startProc(t, db, api, "SHUTDOWN_GRACE=1s")
	testutil.WaitFor(t, 60*time.Second, "50 calls committed and hanging", func() bool { return api.Stats().Activations >= 50 })
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-w.done:
		if err != nil {
			t.Fatalf("worker exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not exit within 30 s of SIGTERM")
	}
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	retries, err := insp.ListRetryTasks(queue, asynq.PageSize(100))
	if err != nil {
		t.Fatal(err)
	}
	if len(retries) < 50 {
		t.Errorf("%d jobs handed back as retries, want the 50 in flight", len(retries))
	}
	// A job held for a call slot that never sent its call comes back as it was (nothing happened);
	// one whose call was cut short must come back counted, so that its next attempt looks first.
	called := map[string]bool{}
	for _, c := range api.Calls() {
		called[tasks.TaskID(c.Pair)] = true
	}
	for _, r := range retries {
		if r.Retried < 1 && called[r.ID] {
			t.Errorf("task %s, whose call was cut short, handed back with retry count %d", r.ID, r.Retried)
		}
	}

	api.SetFaults(versoritest.Faults{})
	startProc(t, db, api)
	testutil.WaitFor(t, 60*time.Second, "all pairs active", func() bool { return api.Stats().Activations >= n && testutil.Unfinished(t, db.Client, queue) == 0 })
	assertExactlyOnce(t, api, pairs)
}
