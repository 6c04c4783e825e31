package worker_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/versori/activator/internal/batch"
	"github.com/versori/activator/internal/cmd/enqueuecmd"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
	"github.com/versori/activator/worker"
)

func TestPipelineActivatesOnceAndDeadLettersMissingConnections(t *testing.T) {
	t.Parallel()
	const n, missing = 1000, 50
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	api.RequireConnection(billingIntegration, billingTemplate)
	path, pairs := writeRequests(t, n, missing)
	p := producer.New(db.Client, producer.Config{Queue: queue})
	ctx := context.Background()

	sum, err := p.EnqueueFile(ctx, producer.FileOptions{Path: path, Batch: "b1"})
	if err != nil || sum.Enqueued != n || sum.Rejected != 0 {
		t.Fatalf("EnqueueFile = %+v, %v; want %d enqueued", sum, err, n)
	}
	w, _ := startWorker(t, db.Client, api, nil)
	testutil.WaitFor(t, 90*time.Second, "all pairs settled", settled(t, api, dlStore(db.Client, p), n))

	assertExactlyOnce(t, api, pairs[:n-missing])
	calls := activateCalls(api)
	for _, pr := range pairs[n-missing:] {
		if api.ActivationCount(pr) != 0 {
			t.Errorf("pair %+v without its connection was activated", pr)
		}
		if calls[pr] != 1 {
			t.Errorf("pair %+v: %d activate calls, want exactly 1 before dead-lettering", pr, calls[pr])
		}
	}
	byReason, err := dlStore(db.Client, p).CountByReason(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if byReason[tasks.ReasonMissingConnections] != missing || len(nonZero(byReason)) != 1 {
		t.Errorf("dead letters by reason = %v, want %d missing_connections only", byReason, missing)
	}
	entries, err := dlStore(db.Client, p).Get(ctx, tasks.TaskID(pairs[n-1]))
	if err != nil || len(entries) != 1 {
		t.Fatalf("Get dead letter: %v, %v", entries, err)
	}
	e := entries[0]
	if e.Reason != tasks.ReasonMissingConnections || e.Attempts != 1 || e.Request.UserID != pairs[n-1].UserID ||
		e.Batch != "b1" || !strings.Contains(e.Error, "connection") || e.FailedAt.IsZero() {
		t.Errorf("dead letter = %+v", e)
	}

	// The batch's counters say the same, and `enqueue status` reports it done.
	testutil.WaitFor(t, 10*time.Second, "batch b1 finished", func() bool {
		st, err := batch.Read(ctx, db.Client, queue, "b1")
		return err == nil && st.Finished
	})
	st, err := batch.Read(ctx, db.Client, queue, "b1")
	if err != nil || st.Queued != n || st.Activated+st.AlreadyActive != n-missing ||
		st.DeadLetters[string(tasks.ReasonMissingConnections)] != missing || st.Remaining != 0 {
		t.Errorf("batch status = %+v, %v", st, err)
	}
	var out bytes.Buffer
	code := enqueuecmd.Run(ctx, []string{"status", "b1"},
		enqueuecmd.Env{Stdout: &out, Stderr: &out, Lookup: func(k string) (string, bool) { return db.URL(), k == "REDIS_URL" }})
	for _, want := range []string{"batch b1: done", "queued: 1000", "dead-lettered: 50 missing_connections=50", "remaining: 0"} {
		if code != 0 || !strings.Contains(out.String(), want) {
			t.Errorf("enqueue status = %d, output lacks %q:\n%s", code, want, out.String())
		}
	}

	// The counts add up: activations plus dead letters are the pairs in.
	m := w.Metrics()
	got := promtest.ToFloat64(m.Activations.WithLabelValues("activated")) +
		promtest.ToFloat64(m.Activations.WithLabelValues("already_active")) +
		promtest.ToFloat64(m.DeadLetters.WithLabelValues(string(tasks.ReasonMissingConnections)))
	if got != n {
		t.Errorf("activations + dead letters in metrics = %v, want %d", got, n)
	}

	// A re-run of the same file enqueues nothing and so creates no activation.
	before := len(api.Calls())
	sum2, err := p.EnqueueFile(ctx, producer.FileOptions{Path: path, Batch: "b2"})
	if err != nil || sum2.Enqueued != 0 || sum2.Duplicates+sum2.DeadLettered != n || sum2.DeadLettered != missing {
		t.Fatalf("re-run EnqueueFile = %+v, %v; want 0 enqueued, %d duplicates, %d dead-lettered", sum2, err, n-missing, missing)
	}
	qi, err := asynq.NewInspectorFromRedisClient(db.Client).GetQueueInfo(queue)
	if err != nil {
		t.Fatal(err)
	}
	if qi.Pending+qi.Active+qi.Retry+qi.Scheduled != 0 {
		t.Errorf("after the re-run the queue holds work: %+v", qi)
	}
	if after := len(api.Calls()); after != before {
		t.Errorf("re-run made %d API calls", after-before)
	}
	assertExactlyOnce(t, api, pairs[:n-missing])
}

func nonZero(m map[tasks.Reason]int64) map[tasks.Reason]int64 {
	out := map[tasks.Reason]int64{}
	for k, v := range m {
		if v != 0 {
			out[k] = v
		}
	}
	return out
}

// TestPipelineRidesOutFaults runs requests through 503s, 429s with Retry-After and responses dropped
// after the activation was committed: every pair ends active exactly once and none is dead-lettered.
func TestPipelineRidesOutFaults(t *testing.T) {
	t.Parallel()
	const n = 400
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{Seed: 3, Faults: versoritest.Faults{
		ServerErrorRate: 0.05, RateLimitRate: 0.03, RetryAfter: "1", DropAfterCommitRate: 0.05,
	}})
	path, pairs := writeRequests(t, n, 0)
	p := producer.New(db.Client, producer.Config{Queue: queue})
	if _, err := p.EnqueueFile(context.Background(), producer.FileOptions{Path: path}); err != nil {
		t.Fatal(err)
	}
	startWorker(t, db.Client, api, nil)
	testutil.WaitFor(t, 90*time.Second, "all pairs active", settled(t, api, dlStore(db.Client, p), n))
	assertExactlyOnce(t, api, pairs)
	if dl, _ := dlStore(db.Client, p).Count(context.Background(), ""); dl != 0 {
		t.Errorf("%d transient failures were dead-lettered", dl)
	}
	st := api.Stats()
	if st.Dropped == 0 || st.ByOpStatus["activate 429"] == 0 || st.ByOpStatus["activate 503"] == 0 {
		t.Errorf("faults were not exercised: %+v", st)
	}
	// Every dropped response was followed by a look-up, not a blind second POST.
	if st.ByOpStatus["list_activations 200"] < st.Dropped {
		t.Errorf("%d dropped responses but %d look-ups", st.Dropped, st.ByOpStatus["list_activations 200"])
	}
}

// TestDeadLetterRequeueAndPurge fixes the cause of dead letters and replays them with the enqueue
// command; purge removes only what it names.
func TestDeadLetterRequeueAndPurge(t *testing.T) {
	t.Parallel()
	const n, missing = 30, 10
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	api.RequireConnection(billingIntegration, billingTemplate)
	path, pairs := writeRequests(t, n, missing)
	p := producer.New(db.Client, producer.Config{Queue: queue})
	ctx := context.Background()
	if _, err := p.EnqueueFile(ctx, producer.FileOptions{Path: path}); err != nil {
		t.Fatal(err)
	}
	startWorker(t, db.Client, api, nil)
	testutil.WaitFor(t, 60*time.Second, "all pairs settled", settled(t, api, dlStore(db.Client, p), n))

	run := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		env := enqueuecmd.Env{Stdout: &out, Stderr: &errb, Lookup: func(k string) (string, bool) {
			if k == "REDIS_URL" {
				return db.URL(), true
			}
			return "", false
		}}
		code := enqueuecmd.Run(ctx, args, env)
		return code, out.String() + errb.String()
	}

	// Purge names one dead letter: only it goes.
	purged := tasks.TaskID(pairs[n-1])
	if code, out := run("dlq", "purge", purged); code != 0 || !strings.Contains(out, "purged: 1") {
		t.Fatalf("dlq purge = %d %q", code, out)
	}
	if c, _ := dlStore(db.Client, p).Count(ctx, ""); c != missing-1 {
		t.Fatalf("after purge %d dead letters, want %d", c, missing-1)
	}

	// The integration no longer needs the template: a requeue activates the rest, once each.
	api.ClearRequirements(billingIntegration)
	if code, out := run("dlq", "requeue", "--reason", "missing_connections"); code != 0 || !strings.Contains(out, "requeued: 9") {
		t.Fatalf("dlq requeue = %d %q", code, out)
	}
	testutil.WaitFor(t, 60*time.Second, "requeued pairs active", func() bool { return api.Stats().Activations == n-1 })
	assertExactlyOnce(t, api, pairs[:n-1])
	if api.ActivationCount(pairs[n-1]) != 0 {
		t.Error("the purged dead letter was activated")
	}
	if c, _ := dlStore(db.Client, p).Count(ctx, ""); c != 0 {
		t.Errorf("%d dead letters left after requeue", c)
	}
	// Replays look before activating, since an earlier outcome may be unknown.
	lookups := 0
	for _, c := range api.Calls() {
		if c.Op == versori.OpListActivations {
			lookups++
		}
	}
	if lookups < missing-1 {
		t.Errorf("%d look-ups for %d replays", lookups, missing-1)
	}
}

// TestSweeperStoresWhatAsynqArchivedItself covers tasks archived without the handler (asynq does so
// for a task recovered after a crash at its retry limit): the sweep puts them in the store.
func TestSweeperStoresWhatAsynqArchivedItself(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	ctx := context.Background()
	client := asynq.NewClientFromRedisClient(db.Client)
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	req := versori.ActivationRequest{UserID: "u-archived", IntegrationID: crmIntegration}
	task, err := tasks.NewTask(tasks.Payload{Request: req, Batch: "b9"}, asynq.Queue(queue), asynq.ProcessIn(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	info, err := client.EnqueueContext(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	if err := insp.ArchiveTask(queue, info.ID); err != nil {
		t.Fatal(err)
	}
	startWorker(t, db.Client, api, nil)
	store := deadletter.NewStore(db.Client, queue)
	testutil.WaitFor(t, 30*time.Second, "the archived task in the store", func() bool {
		ok, _ := store.Has(ctx, []string{info.ID})
		return len(ok) == 1 && ok[0]
	})
	got, err := store.Get(ctx, info.ID)
	if err != nil || len(got) != 1 {
		t.Fatal(got, err)
	}
	if got[0].Reason != tasks.ReasonRetriesExhausted || got[0].Request.UserID != "u-archived" || got[0].Batch != "b9" {
		t.Errorf("swept entry = %+v", got[0])
	}
	if len(api.Calls()) != 0 {
		t.Errorf("the sweep called the API")
	}
}

// TestDeadLetterRetention applies the retention an operator configured, and only then.
func TestDeadLetterRetention(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	ctx := context.Background()
	store := deadletter.NewStore(db.Client, queue)
	for i := range 5 {
		req := versori.ActivationRequest{UserID: "u" + string(rune('a'+i)), IntegrationID: crmIntegration}
		_, err := store.Add(ctx, deadletter.Entry{ID: tasks.TaskID(req.Pair()), Reason: tasks.ReasonNotFound, Request: req,
			DeadLetteredAt: time.Now().Add(time.Duration(i-10) * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
	}
	_, stop := startWorker(t, db.Client, api, nil)
	stop()
	if c, _ := store.Count(ctx, ""); c != 5 {
		t.Fatalf("without retention the store holds %d, want all 5", c)
	}
	startWorker(t, db.Client, api, func(c *worker.Config) { c.DeadLetterMaxEntries = 2 })
	testutil.WaitFor(t, 30*time.Second, "retention applied", func() bool {
		c, _ := store.Count(ctx, "")
		return c == 2
	})
	ids, _ := store.IDs(ctx, "")
	if len(ids) != 2 || ids[1] != tasks.TaskID(versori.Pair{UserID: "ue", IntegrationID: crmIntegration}) {
		t.Errorf("kept %v, want the two newest", ids)
	}
}

// TestMetricsAddUpAcrossRestart checks that the counters tell the truth: over a run with 503s,
// dropped responses and a graceful restart half-way, activations (activated + already active) plus
// dead letters, summed over both worker lifetimes, equal the pairs in exactly, and agree with the
// stand-in's own records.
func TestMetricsAddUpAcrossRestart(t *testing.T) {
	t.Parallel()
	const n, missing = 600, 30
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{Seed: 5, Faults: versoritest.Faults{
		Latency: 5 * time.Millisecond, ServerErrorRate: 0.05, DropAfterCommitRate: 0.05,
	}})
	api.RequireConnection(billingIntegration, billingTemplate)
	path, _ := writeRequests(t, n, missing)
	p := producer.New(db.Client, producer.Config{Queue: queue})
	ctx := context.Background()
	if _, err := p.EnqueueFile(ctx, producer.FileOptions{Path: path}); err != nil {
		t.Fatal(err)
	}
	counts := func(w *worker.Worker) (activated, already, dead float64) {
		m := w.Metrics()
		activated = promtest.ToFloat64(m.Activations.WithLabelValues("activated"))
		already = promtest.ToFloat64(m.Activations.WithLabelValues("already_active"))
		for _, r := range tasks.Reasons() {
			dead += promtest.ToFloat64(m.DeadLetters.WithLabelValues(string(r)))
		}
		return activated, already, dead
	}
	first, stop := startWorker(t, db.Client, api, func(c *worker.Config) { c.Concurrency = 10 })
	testutil.WaitFor(t, 60*time.Second, "a third settled", func() bool { return settled(t, api, dlStore(db.Client, p), n/3)() })
	stop()
	a1, b1, d1 := counts(first)
	second, _ := startWorker(t, db.Client, api, nil)
	testutil.WaitFor(t, 90*time.Second, "all settled", func() bool {
		return settled(t, api, dlStore(db.Client, p), n)() && testutil.Unfinished(t, db.Client, queue) == 0
	})
	a2, b2, d2 := counts(second)
	if got := a1 + b1 + d1 + a2 + b2 + d2; got != n {
		t.Errorf("activations + dead letters over both lifetimes = %v, want %d (first %v/%v/%v, second %v/%v/%v)",
			got, n, a1, b1, d1, a2, b2, d2)
	}
	st := api.Stats()
	if int(a1+a2+b1+b2) != st.Activations || int(d1+d2) != missing {
		t.Errorf("metrics say %v activations and %v dead letters; the stand-in holds %d activations and %d pairs lack connections",
			a1+a2+b1+b2, d1+d2, st.Activations, missing)
	}
	// Every response dropped after a commit was followed by a look-up that counted the pair as
	// already active (calls cut short by the restart add more).
	if st.Dropped == 0 || int(b1+b2) < st.Dropped {
		t.Errorf("already_active %v for %d dropped responses", b1+b2, st.Dropped)
	}
}
