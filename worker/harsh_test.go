package worker_test

// Worker-level tests of exactly once and nothing lost against an API behind a gateway (answers lost
// after a commit, late commits, case-insensitive ids, refusals), each through a real in-process
// worker on a real Redis against the stand-in scripted to behave that way. Each test says which
// weaker behaviour it rules out. Time is measured from the stand-in's own call records, as lower bounds.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/versori/activator/inspect"
	"github.com/versori/activator/internal/breaker"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
	"github.com/versori/activator/worker"
)

// Lower-case spellings of the CRM integration's ULIDs, which the API reads as the same ids.
var (
	harshCRMIntegrationLower = strings.ToLower(crmIntegration)
	harshCRMTemplateLower    = strings.ToLower(crmTemplate)
	harshCRMConnectionLower  = strings.ToLower(crmConnection)
)

// harshLowerRequest is testutil.Request(user) with every ULID spelt in lower case.
func harshLowerRequest(user string) versori.ActivationRequest {
	return versori.ActivationRequest{UserID: user, IntegrationID: harshCRMIntegrationLower,
		Connections: []versori.ActivationConnection{{TemplateID: harshCRMTemplateLower, ConnectionID: harshCRMConnectionLower}}}
}

// harshQuietBreaker keeps the circuit breaker shut in tests whose failures are all deliberate: with its
// defaults (20 calls) a slow run could open it for 30 s, which would change no outcome but the time.
var harshQuietBreaker = breaker.Config{MinCalls: 1000}

// harshWaitCommits waits until every late commit the stand-in scheduled has landed.
func harshWaitCommits(t *testing.T, api *versoritest.Server) {
	t.Helper()
	testutil.WaitFor(t, 10*time.Second, "the stand-in's late commits", func() bool { return api.PendingCommits() == 0 })
}

// harshPayload is the decoded payload of task id on q.
func harshPayload(t *testing.T, insp *asynq.Inspector, q, id string) tasks.Payload {
	t.Helper()
	ti, err := insp.GetTaskInfo(q, id)
	if err != nil {
		t.Fatalf("GetTaskInfo(%s, %s): %v", q, id, err)
	}
	pl, err := tasks.DecodePayload(ti.Payload)
	if err != nil {
		t.Fatalf("payload of %s: %v", id, err)
	}
	return pl
}

// Case 1: ULIDs are case-insensitive. Before the fix, producers kept the case they were given, so one
// pair spelt "01JDCRM…" and "01jdcrm…" got two task ids (act:01JDCRM…:u and act:01jdcrm…:u), two jobs
// and two activations; and a job whose payload held the lower-case id compared the look-up's
// upper-case answer byte for byte, found nothing after a dropped answer, and POSTed again.
func TestHarshLowerCaseULIDs(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	w, _ := startWorker(t, db.Client, api, withPolicy(policyTimings))
	p := producer.New(db.Client, producer.Config{Queue: queue})
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	ctx := context.Background()

	// Each way in gets one user, spelt in lower case first, then in upper case.
	type way struct {
		name  string
		user  string
		queue func(t *testing.T, lower, upper versori.ActivationRequest)
	}
	fileRun := func(t *testing.T, name, content string) {
		t.Helper()
		path := testutil.WriteFile(t, name, content)
		sum, err := p.EnqueueFile(ctx, producer.FileOptions{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		if sum.Enqueued != 1 || sum.Duplicates != 1 || sum.Rejected != 0 {
			t.Errorf("EnqueueFile(%s) = enqueued %d, duplicates %d, rejected %d; want 1, 1, 0", name, sum.Enqueued, sum.Duplicates, sum.Rejected)
		}
	}
	ways := []way{
		{"producer.Enqueue", "u-case-enqueue", func(t *testing.T, lower, upper versori.ActivationRequest) {
			want := tasks.TaskID(upper.Pair())
			r1, err := p.Enqueue(ctx, lower)
			if err != nil || r1.Status != producer.Enqueued || r1.TaskID != want {
				t.Errorf("Enqueue(lower case) = %+v, %v; want enqueued as %s", r1, err, want)
			}
			r2, err := p.Enqueue(ctx, upper)
			if err != nil || r2.Status != producer.Duplicate || r2.TaskID != want {
				t.Errorf("Enqueue(upper case) = %+v, %v; want a duplicate of %s", r2, err, want)
			}
		}},
		{"EnqueueFile JSONL", "u-case-jsonl", func(t *testing.T, lower, upper versori.ActivationRequest) {
			var b strings.Builder
			for _, r := range []versori.ActivationRequest{lower, upper} {
				line, err := r.MarshalJSON()
				if err != nil {
					t.Fatal(err)
				}
				b.Write(line)
				b.WriteByte('\n')
			}
			fileRun(t, "rows.jsonl", b.String())
		}},
		{"EnqueueFile CSV", "u-case-csv", func(t *testing.T, lower, upper versori.ActivationRequest) {
			var b strings.Builder
			b.WriteString("userId,integrationId,templateId,connectionId\n")
			for _, r := range []versori.ActivationRequest{lower, upper} {
				c := r.Connections[0]
				fmt.Fprintf(&b, "%s,%s,%s,%s\n", r.UserID, r.IntegrationID, c.TemplateID, c.ConnectionID)
			}
			fileRun(t, "rows.csv", b.String())
		}},
	}
	var active []versori.Pair
	for _, wy := range ways {
		lower, upper := harshLowerRequest(wy.user), testutil.Request(wy.user)
		wy.queue(t, lower, upper)
		active = append(active, upper.Pair())
	}

	// A job whose POST commits and whose answer is lost, for a pair queued in lower case: the look-up
	// must find the activation the API lists in upper case.
	dropped := harshLowerRequest("u-case-dropped")
	api.Script(dropped.Pair(), versoritest.Fault{Commit: true, Drop: true})
	enqueueAll(t, p, dropped)
	// And the same for a payload another producer wrote with lower-case ids under the canonical task
	// id (the worker's slow path decodes it).
	raw := harshLowerRequest("u-case-raw")
	api.Script(raw.Pair(), versoritest.Fault{Commit: true, Drop: true})
	body, err := raw.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	rawID := tasks.TaskID(testutil.Request(raw.UserID).Pair())
	if _, err := asynq.NewClientFromRedisClient(db.Client).Enqueue(
		asynq.NewTask(tasks.TypeActivate, []byte(`{"request":`+string(body)+`}`), asynq.TaskID(rawID), asynq.Queue(queue), asynq.Retention(time.Hour))); err != nil {
		t.Fatal(err)
	}
	droppedPairs := []versori.Pair{testutil.Request(dropped.UserID).Pair(), testutil.Request(raw.UserID).Pair()}
	active = append(active, droppedPairs...)

	for _, pr := range active {
		waitTaskState(t, insp, pr, asynq.TaskStateCompleted, 15*time.Second)
	}
	assertExactlyOnce(t, api, active)
	if got := api.Stats().Activations; got != len(active) {
		t.Errorf("%d activations, want %d", got, len(active))
	}
	for i, wy := range ways {
		t.Run(wy.name, func(t *testing.T) {
			pr := active[i]
			lowerID := "act:" + harshCRMIntegrationLower + ":" + pr.UserID
			if ti, err := insp.GetTaskInfo(queue, lowerID); !errors.Is(err, asynq.ErrTaskNotFound) {
				t.Errorf("a task under the lower-case id %s: %v, %v; want none", lowerID, ti, err)
			}
			pl := harshPayload(t, insp, queue, tasks.TaskID(pr))
			c := pl.Request.Connections
			if pl.Request.IntegrationID != crmIntegration || len(c) != 1 || c[0].TemplateID != crmTemplate || c[0].ConnectionID != crmConnection {
				t.Errorf("payload request = %+v; want every ULID in upper case", pl.Request)
			}
			if got := callTrace(pairCalls(api, pr)); !slices.Equal(got, []string{"activate 200"}) {
				t.Errorf("calls = %v, want one POST", got)
			}
		})
	}
	for _, pr := range droppedPairs {
		t.Run("dropped answer "+pr.UserID, func(t *testing.T) {
			calls := pairCalls(api, pr)
			if got, want := callTrace(calls), []string{"activate 0", "list_activations 200"}; !slices.Equal(got, want) {
				t.Errorf("calls = %v, want %v: the look-up must find the activation", got, want)
			}
		})
	}
	if got := total([]*worker.Worker{w}, activations, "already_active"); got != float64(len(droppedPairs)) {
		t.Errorf("activations{result=already_active} = %v, want %d", got, len(droppedPairs))
	}
}

// Case 2: a POST whose outcome is unknown (a 5xx, a timeout, a dropped connection) may be committed
// by the backend after the gateway answered. Before the fix the in-job quick retry looked the pair
// up 10 to 20 ms later (here), found nothing yet, and POSTed again: two activations. Now the look-up
// waits at least the settle time, and finds the late commit.
func TestHarshLateCommitAfterUnknownOutcome(t *testing.T) {
	t.Parallel()
	const clientTimeout = 500 * time.Millisecond
	tests := []struct {
		name  string
		fault versoritest.Fault
	}{
		{"504, committed 300ms later", versoritest.Fault{Status: 504, CommitAfter: 300 * time.Millisecond}},
		{"503, committed 300ms later", versoritest.Fault{Status: 503, CommitAfter: 300 * time.Millisecond}},
		{"502, committed 300ms later", versoritest.Fault{Status: 502, CommitAfter: 300 * time.Millisecond}},
		{"500, committed 300ms later", versoritest.Fault{Status: 500, CommitAfter: 300 * time.Millisecond}},
		// The call is held past the client's timeout; the backend commits 300 ms after the client
		// gave up, when a quick retry would already have looked.
		{"a hang past the client's timeout", versoritest.Fault{Delay: 5 * time.Second, CommitAfter: clientTimeout + 300*time.Millisecond}},
		{"connection dropped, committed 300ms later", versoritest.Fault{Drop: true, CommitAfter: 300 * time.Millisecond}},
	}
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	reqs, pairs := policyRequests("u-late", len(tests))
	for i, tc := range tests {
		api.Script(pairs[i], tc.fault)
	}
	w, _ := startWorker(t, db.Client, api, func(c *worker.Config) {
		c.Policy = policyTimings
		c.Versori.Timeout = clientTimeout
		c.Breaker = harshQuietBreaker
	})
	p := producer.New(db.Client, producer.Config{Queue: queue, MaxRetry: 5})
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	enqueueAll(t, p, reqs...)

	for _, pr := range pairs {
		waitTaskState(t, insp, pr, asynq.TaskStateCompleted, 15*time.Second)
	}
	harshWaitCommits(t, api)
	assertExactlyOnce(t, api, pairs)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pr := pairs[i]
			calls := pairCalls(api, pr)
			if n := countOp(calls, versori.OpActivate); n != 1 {
				t.Fatalf("%d POSTs, want 1: %v", n, callTrace(calls))
			}
			if calls[0].Op != versori.OpActivate || calls[0].Status == 200 || !calls[0].Committed {
				t.Fatalf("first call = %+v; want the failed POST, committed later", calls[0])
			}
			if len(calls) < 2 || calls[1].Op != versori.OpListActivations {
				t.Fatalf("calls = %v; want the failed POST followed by a look-up", callTrace(calls))
			}
			if gap := calls[1].At.Sub(calls[0].At); gap < testSettle {
				t.Errorf("look-up %s after the failed POST, want at least the settle time %s", gap, testSettle)
			}
			if last := calls[len(calls)-1]; last.Op != versori.OpListActivations || last.Status != 200 {
				t.Errorf("calls = %v; want the job to end on the look-up that found the activation", callTrace(calls))
			}
		})
	}
	if got := total([]*worker.Worker{w}, activations, "already_active"); got != float64(len(tests)) {
		t.Errorf("activations{result=already_active} = %v, want %d", got, len(tests))
	}
	if n, _ := dlStore(db.Client, p).Count(context.Background(), ""); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
}

// Case 2, the look-up that finds a duplicate: before the fix the worker took the first activation
// it found and said nothing. Now it counts activator_duplicate_activations_total, logs every id, and
// deletes none: the job is done as already_active and both activations remain.
func TestHarshDuplicateActivationsCountedNeverDeleted(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	req := testutil.Request("u-dup")
	pair := req.Pair()
	ids := []string{api.Seed(pair), api.Seed(pair)}
	w, _ := startWorker(t, db.Client, api, withPolicy(policyTimings))
	p := producer.New(db.Client, producer.Config{Queue: queue})
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	if res, err := p.Enqueue(context.Background(), req, producer.WithReconcile()); err != nil || res.Status != producer.Enqueued {
		t.Fatalf("Enqueue = %+v, %v", res, err)
	}

	ti := waitTaskState(t, insp, pair, asynq.TaskStateCompleted, 15*time.Second)
	if got, want := callTrace(pairCalls(api, pair)), []string{"list_activations 200"}; !slices.Equal(got, want) {
		t.Errorf("calls = %v, want %v", got, want)
	}
	if got := promtest.ToFloat64(w.Metrics().DuplicateActivations); got != 1 {
		t.Errorf("activator_duplicate_activations_total = %v, want 1", got)
	}
	if got := total([]*worker.Worker{w}, activations, "already_active"); got != 1 {
		t.Errorf("activations{result=already_active} = %v, want 1", got)
	}
	if n := api.ActivationCount(pair); n != 2 {
		t.Errorf("the pair has %d activations, want both of the 2 left alone", n)
	}
	if n := countOp(api.Calls(), versori.OpDeleteActivation); n != 0 {
		t.Errorf("%d DELETE calls: activator must never delete an activation on its own", n)
	}
	testutil.WaitFor(t, 5*time.Second, "the job's result to be one of the activations", func() bool {
		ti, err := insp.GetTaskInfo(queue, ti.ID)
		return err == nil && slices.Contains(ids, string(ti.Result))
	})
	if n, _ := dlStore(db.Client, p).Count(context.Background(), ""); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
}

// harshPauseWatch samples, every few milliseconds, whether the queue is paused (asynq's own flag) and
// the activator_queue_paused gauge, counting how often either went from not paused to paused.
type harshPauseWatch struct {
	flips, gaugeFlips int
	samples           int
	stop, done        chan struct{}
}

func harshWatchPause(db *testutil.RedisDB, w *worker.Worker) *harshPauseWatch {
	s := &harshPauseWatch{stop: make(chan struct{}), done: make(chan struct{})}
	key := rediskeys.AsynqPaused(queue)
	go func() {
		defer close(s.done)
		tick := time.NewTicker(3 * time.Millisecond)
		defer tick.Stop()
		var was, gaugeWas bool
		for {
			n, err := db.Client.Exists(context.Background(), key).Result()
			paused := err == nil && n > 0
			gauge := promtest.ToFloat64(w.Metrics().QueuePaused) == 1
			if paused && !was {
				s.flips++
			}
			if gauge && !gaugeWas {
				s.gaugeFlips++
			}
			was, gaugeWas = paused, gauge
			s.samples++
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *harshPauseWatch) close() *harshPauseWatch {
	close(s.stop)
	<-s.done
	return s
}

// Case 5: a 403 about one request. Before the fix any 403 with an API key paused the whole queue;
// the probe (a made-up user) was accepted and resumed it; the job came back without using an
// attempt and paused it again, for ever (12 flips in 6 s), and nothing else ran meanwhile. Now the
// probe decides: the key works, so the 403 dead-letters its request (unauthorized) after one POST,
// and the queue is never paused.
func TestHarshForbiddenRequestDoesNotPauseQueue(t *testing.T) {
	t.Parallel()
	const n = 20
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	reqs, pairs := policyRequests("u-403", n)
	forbidden := []versori.Pair{pairs[3], pairs[9], pairs[16]}
	var healthy []versori.Pair
	for _, pr := range pairs {
		if slices.Contains(forbidden, pr) {
			api.Forbid(pr)
		} else {
			healthy = append(healthy, pr)
		}
	}
	w, _ := startWorker(t, db.Client, api, func(c *worker.Config) {
		c.Policy = policyTimings
		c.Policy.PausedWait = 200 * time.Millisecond
		c.ProbeInterval = 100 * time.Millisecond
	})
	watch := harshWatchPause(db, w)
	p := producer.New(db.Client, producer.Config{Queue: queue, MaxRetry: 3})
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	enqueueAll(t, p, reqs...)

	testutil.WaitFor(t, 15*time.Second, "every job activated or dead-lettered", settled(t, api, dlStore(db.Client, p), n))
	// A pause would show within the probe interval and the paused wait.
	time.Sleep(500 * time.Millisecond)
	watch.close()
	t.Logf("%d samples of the pause state", watch.samples)
	if watch.flips != 0 || watch.gaugeFlips != 0 {
		t.Errorf("the queue was paused %d times (activator_queue_paused went to 1 %d times); want never", watch.flips, watch.gaugeFlips)
	}
	if paused, _ := queuePaused(t, db); paused {
		t.Error("queue paused at the end")
	}
	assertExactlyOnce(t, api, healthy)
	if got := api.Stats().Activations; got != len(healthy) {
		t.Errorf("%d activations, want %d", got, len(healthy))
	}
	for _, pr := range forbidden {
		e := deadLetter(t, dlStore(db.Client, p), pr)
		if e.Reason != tasks.ReasonUnauthorized || e.Attempts != 1 || !strings.Contains(e.Error, "403") {
			t.Errorf("dead letter of %s = reason %s after %d attempts, error %q; want unauthorized after 1, naming the 403",
				pr.UserID, e.Reason, e.Attempts, e.Error)
		}
		if got := callTrace(pairCalls(api, pr)); !slices.Equal(got, []string{"activate 403"}) {
			t.Errorf("calls for %s = %v, want one refused POST", pr.UserID, got)
		}
		assertTaskGone(t, insp, pr)
	}
	if probeCalls(api, http.StatusOK) == 0 {
		t.Error("no probe of the API key: the 403 was not checked against the key")
	}
	if got := total([]*worker.Worker{w}, deadLetters, string(tasks.ReasonUnauthorized)); got != float64(len(forbidden)) {
		t.Errorf("dead_letters{reason=unauthorized} = %v, want %d", got, len(forbidden))
	}
	if c, _ := dlStore(db.Client, p).Count(context.Background(), ""); c != int64(len(forbidden)) {
		t.Errorf("%d dead letters, want %d", c, len(forbidden))
	}
}

// Case 5, every wait path ends: before the fix a wait asked for by the API (429) used no attempt and
// was never checked against the job's maximum age either, so a pair the API rate-limited for ever
// waited for ever. Now MaxAge ends it: a dead letter (retries_exhausted) naming the maximum age,
// still without having used an attempt.
func TestHarshEndlessRateLimitEndsAtMaxAge(t *testing.T) {
	t.Parallel()
	const maxAge = 2 * time.Second
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	req := testutil.Request("u-429-forever")
	pair := req.Pair()
	api.Script(pair, slices.Repeat([]versoritest.Fault{{Status: http.StatusTooManyRequests, RetryAfter: "1"}}, 100)...)
	startWorker(t, db.Client, api, func(c *worker.Config) {
		c.Policy = policyTimings
		c.MaxAge = maxAge
	})
	p := producer.New(db.Client, producer.Config{Queue: queue, MaxRetry: 25})
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	enqueued := time.Now()
	enqueueAll(t, p, req)

	testutil.WaitFor(t, 15*time.Second, "the dead letter", func() bool { return hasDeadLetter(dlStore(db.Client, p), pair) })
	e := deadLetter(t, dlStore(db.Client, p), pair)
	if e.Reason != tasks.ReasonRetriesExhausted || !strings.Contains(e.Error, "maximum age") || !strings.Contains(e.Error, "429") {
		t.Errorf("dead letter = reason %s, error %q; want retries_exhausted naming the maximum age and the 429", e.Reason, e.Error)
	}
	if e.Attempts != 1 {
		t.Errorf("dead-lettered after %d attempts; the 429's waits must use none", e.Attempts)
	}
	if age := e.FailedAt.Sub(enqueued); age <= maxAge {
		t.Errorf("dead-lettered %s after the enqueue, within the maximum age %s", age, maxAge)
	}
	calls := pairCalls(api, pair)
	if len(calls) < 2 || countOp(calls, versori.OpActivate) != len(calls) {
		t.Errorf("calls = %v; want several POSTs, each answered 429", callTrace(calls))
	}
	for i := 1; i < len(calls); i++ {
		if gap := calls[i].At.Sub(calls[i-1].At); gap < time.Second-time.Millisecond {
			t.Errorf("call %d came %s after a 429 asking for 1s", i, gap)
		}
	}
	assertTaskGone(t, insp, pair)
}

// Case 6: a long Retry-After. Before the fix a 429's wait was shared with every worker (capped only
// at 365 days) and the other jobs slept on it inside their job, failed at their deadline as "not
// sent", were classed transient and used attempts: with Retry-After 86400 and MaxRetry 1, every
// healthy job ended retries_exhausted without a call. Now Retry-After is capped at MaxRetryAfter
// (logged, counted), and a wait longer than a job can hold its slot reschedules it without using an
// attempt.
func TestHarshLongRetryAfter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		retryAfter    string
		maxRetryAfter time.Duration
		jobTimeout    time.Duration // 0: the producer's default
		// backoff is how long every call stops after the 429.
		backoff    time.Duration
		wantCapped float64
	}{
		// The 86400 s wait is cut to 2 s, which the healthy jobs wait out inside their attempt.
		{"a day, capped", "86400", 2 * time.Second, 0, 2 * time.Second, 1},
		// 5 s is honoured, longer than a 2 s job may hold its slot: the healthy jobs are rescheduled.
		{"longer than the job's deadline", "5", time.Hour, 2 * time.Second, 5 * time.Second, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := testutil.Redis(t)
			api := versoritest.New(t, versoritest.Options{})
			limited := testutil.Request("u-long-wait")
			pair := limited.Pair()
			others, otherPairs := policyRequests("u-healthy", 9)
			api.Script(pair, versoritest.Fault{Status: http.StatusTooManyRequests, RetryAfter: tc.retryAfter})
			w, _ := startWorker(t, db.Client, api, func(c *worker.Config) {
				c.Policy = policyTimings
				c.Policy.MaxRetryAfter = tc.maxRetryAfter
			})
			p := producer.New(db.Client, producer.Config{Queue: queue, MaxRetry: 1, Timeout: tc.jobTimeout})
			insp := asynq.NewInspectorFromRedisClient(db.Client)

			enqueueAll(t, p, limited)
			// The job has snoozed, so its worker has set the back-off; then the healthy jobs arrive.
			waitTaskState(t, insp, pair, asynq.TaskStateRetry, 10*time.Second)
			enqueueAll(t, p, others...)
			all := append([]versori.Pair{pair}, otherPairs...)
			for _, pr := range all {
				waitTaskState(t, insp, pr, asynq.TaskStateCompleted, 15*time.Second)
			}
			assertExactlyOnce(t, api, all)
			if c, _ := dlStore(db.Client, p).Count(context.Background(), ""); c != 0 {
				t.Errorf("%d dead letters, want none", c)
			}
			for _, pr := range all {
				if ti := taskInfo(t, insp, pr); ti.Retried != 0 {
					t.Errorf("job of %s retried %d times; waiting must use no attempt", pr.UserID, ti.Retried)
				}
			}
			if got := promtest.ToFloat64(w.Metrics().RetryAfterCapped); got != tc.wantCapped {
				t.Errorf("activator_retry_after_capped_total = %v, want %v", got, tc.wantCapped)
			}
			// No call went within the back-off, and the healthy jobs were not held for the header's
			// whole wait (they all activated within the test's time).
			calls := api.Calls()
			i429 := slices.IndexFunc(calls, func(c versoritest.Call) bool { return c.Status == http.StatusTooManyRequests })
			if i429 < 0 {
				t.Fatalf("no 429 in %v", callTrace(calls))
			}
			resume := calls[i429].At.Add(tc.backoff - time.Millisecond)
			for _, c := range calls[i429+1:] {
				if c.At.Before(resume) {
					t.Errorf("%s call for %s came %s after the 429, within the %s back-off", c.Op, c.Pair.UserID, c.At.Sub(calls[i429].At), tc.backoff)
				}
			}
			for _, pr := range otherPairs {
				if got := callTrace(pairCalls(api, pr)); !slices.Equal(got, []string{"activate 200"}) {
					t.Errorf("calls for %s = %v, want one POST", pr.UserID, got)
				}
			}
		})
	}
}

// Case 9, answers a gateway gives. Before the fix: a 409 was a permanent error (dead letter) although
// the pair may be active already; a 425 was a permanent error although it means "not processed, try
// again"; and a POST answered with a redirect was followed, re-sent to the Location (307, 308) or
// turned into a GET (301, 302, 303). Now a 409 looks the pair up in the same attempt; a 425 is
// retried at once within the job, without a look-up (it was not processed) and without using an
// attempt; and a redirect is never followed: one POST, a permanent_error dead letter that names the
// redirect's target without its credentials.
func TestHarshGatewayAnswers(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	p := producer.New(db.Client, producer.Config{Queue: queue})
	insp := asynq.NewInspectorFromRedisClient(db.Client)

	conflict := testutil.Request("u-409-active")
	api.Seed(conflict.Pair())
	api.Script(conflict.Pair(), versoritest.Fault{Status: http.StatusConflict})
	tooEarly := testutil.Request("u-425")
	api.Script(tooEarly.Pair(), versoritest.Fault{Status: http.StatusTooEarly})

	// Each redirect points back at the stand-in's own POST /activations, so that a client that
	// followed it would activate the pair there; one carries credentials in its Location.
	self := api.URL() + "/activations"
	redirects := []struct {
		status   int
		location string
	}{
		{http.StatusMovedPermanently, self},
		{http.StatusFound, self},
		{http.StatusSeeOther, self},
		{http.StatusTemporaryRedirect, strings.Replace(self, "://", "://admin:s3cr3t@", 1) + "?token=t0k3n#frag"},
		{http.StatusPermanentRedirect, self},
	}
	var redirected []versori.ActivationRequest
	for _, r := range redirects {
		req := testutil.Request(fmt.Sprintf("u-redirect-%d", r.status))
		api.Script(req.Pair(), versoritest.Fault{Status: r.status, Location: r.location})
		redirected = append(redirected, req)
	}
	w, _ := startWorker(t, db.Client, api, withPolicy(policyTimings))
	enqueueAll(t, p, append([]versori.ActivationRequest{conflict, tooEarly}, redirected...)...)

	t.Run("409 for an active pair", func(t *testing.T) {
		pr := conflict.Pair()
		ti := waitTaskState(t, insp, pr, asynq.TaskStateCompleted, 15*time.Second)
		if got, want := callTrace(pairCalls(api, pr)), []string{"activate 409", "list_activations 200"}; !slices.Equal(got, want) {
			t.Errorf("calls = %v, want exactly %v", got, want)
		}
		if ti.Retried != 0 {
			t.Errorf("retried %d times, want 0", ti.Retried)
		}
		if n := api.ActivationCount(pr); n != 1 {
			t.Errorf("%d activations, want the 1 that was there", n)
		}
		if hasDeadLetter(dlStore(db.Client, p), pr) {
			t.Error("dead-lettered")
		}
	})
	t.Run("425 once", func(t *testing.T) {
		pr := tooEarly.Pair()
		ti := waitTaskState(t, insp, pr, asynq.TaskStateCompleted, 15*time.Second)
		if got, want := callTrace(pairCalls(api, pr)), []string{"activate 425", "activate 200"}; !slices.Equal(got, want) {
			t.Errorf("calls = %v, want exactly %v (a quick retry in the job, no look-up)", got, want)
		}
		if ti.Retried != 0 {
			t.Errorf("retried %d times, want 0: the quick retry is within the attempt", ti.Retried)
		}
		if n := api.ActivationCount(pr); n != 1 {
			t.Errorf("%d activations, want 1", n)
		}
	})
	testutil.WaitFor(t, 15*time.Second, "every redirected job dead-lettered", func() bool {
		n, err := dlStore(db.Client, p).Count(context.Background(), "")
		return err == nil && n == int64(len(redirects))
	})
	for i, r := range redirects {
		t.Run(fmt.Sprintf("redirect %d", r.status), func(t *testing.T) {
			pr := redirected[i].Pair()
			e := deadLetter(t, dlStore(db.Client, p), pr)
			if e.Reason != tasks.ReasonPermanentError || e.Attempts != 1 {
				t.Errorf("dead letter = reason %s after %d attempts, want permanent_error after 1", e.Reason, e.Attempts)
			}
			if !strings.Contains(e.Error, "redirect") || !strings.Contains(e.Error, self) || !strings.Contains(e.Error, fmt.Sprint(r.status)) {
				t.Errorf("dead letter error %q does not name the %d redirect to %s", e.Error, r.status, self)
			}
			for _, secret := range []string{"s3cr3t", "admin", "t0k3n", "frag"} {
				if strings.Contains(e.Error, secret) {
					t.Errorf("dead letter error %q holds %q from the Location", e.Error, secret)
				}
			}
			if got := callTrace(pairCalls(api, pr)); !slices.Equal(got, []string{fmt.Sprintf("activate %d", r.status)}) {
				t.Errorf("calls = %v, want the one POST", got)
			}
			if api.ActivationCount(pr) != 0 {
				t.Error("the pair was activated: the redirect was followed")
			}
		})
	}
	// Nothing followed a redirect: every call to /activations is one of the scripted POSTs.
	for _, c := range api.Calls() {
		if c.Path == "/activations" && c.Method != http.MethodPost {
			t.Errorf("a %s %s reached the stand-in: a redirect was followed", c.Method, c.Path)
		}
	}
	if got, want := countOp(api.Calls(), versori.OpActivate), 1+2+len(redirects); got != want {
		t.Errorf("%d POSTs in all, want %d", got, want)
	}
	ws := []*worker.Worker{w}
	if got := total(ws, activations, "already_active"); got != 1 {
		t.Errorf("activations{result=already_active} = %v, want 1 (the 409)", got)
	}
	if got := total(ws, deadLetters, string(tasks.ReasonPermanentError)); got != float64(len(redirects)) {
		t.Errorf("dead_letters{reason=permanent_error} = %v, want %d (the redirects only)", got, len(redirects))
	}
}

// Case 12: a 200 list answer without the documented `activations` array. Before the fix `{}`,
// `null`, an envelope or `"activations": null` decoded as an empty page, read as "no activation",
// and the job POSTed again after its dropped answer: a duplicate. Now such an answer leaves the
// outcome unknown, and the job looks again until it gets a real page.
func TestHarshBadListAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		bodies []string
	}{
		{"{} then null", []string{"{}", "null"}},
		{"an envelope", []string{`{"data":{"activations":[]}}`}},
		{"activations null", []string{`{"activations":null,"totalCount":1}`}},
		{"an entry without an id", []string{`{"activations":[{"hubId":"` + versoritest.DefaultHubID + `"}],"totalCount":1}`}},
		{"not JSON", []string{"<html>502 Bad Gateway</html>"}},
	}
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	reqs, pairs := policyRequests("u-badlist", len(tests))
	for i, tc := range tests {
		api.Script(pairs[i], versoritest.Fault{Commit: true, Drop: true})
		api.ScriptList(pairs[i], tc.bodies...)
	}
	w, _ := startWorker(t, db.Client, api, func(c *worker.Config) {
		c.Policy = policyTimings
		c.Breaker = harshQuietBreaker
	})
	p := producer.New(db.Client, producer.Config{Queue: queue, MaxRetry: 10})
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	enqueueAll(t, p, reqs...)

	for _, pr := range pairs {
		waitTaskState(t, insp, pr, asynq.TaskStateCompleted, 15*time.Second)
	}
	assertExactlyOnce(t, api, pairs)
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			calls := pairCalls(api, pairs[i])
			want := []string{"activate 0"}
			for range len(tc.bodies) + 1 {
				want = append(want, "list_activations 200")
			}
			if got := callTrace(calls); !slices.Equal(got, want) {
				t.Errorf("calls = %v, want %v: one POST, then look-ups until one is understood", got, want)
			}
		})
	}
	if got := total([]*worker.Worker{w}, activations, "already_active"); got != float64(len(tests)) {
		t.Errorf("activations{result=already_active} = %v, want %d", got, len(tests))
	}
	if n, _ := dlStore(db.Client, p).Count(context.Background(), ""); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
}

// Case 7: duplicate prevention across queues. Before the fix a pair's task id was unique within one
// queue only: the same requests enqueued on "activations" and on "activations-eu" were queued twice
// and activated twice, once by each queue's worker. Now the pair belongs to the queue it was first
// queued on; the other producer reports Duplicate with that owner, by Enqueue and by EnqueueFile.
func TestHarshCrossQueueActivatesOnce(t *testing.T) {
	t.Parallel()
	const (
		n       = 10
		euQueue = "activations-eu"
	)
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	wMain, _ := startWorker(t, db.Client, api, withPolicy(policyTimings))
	wEU, _ := startWorker(t, db.Client, api, func(c *worker.Config) {
		c.Policy = policyTimings
		c.Queue = euQueue
	})
	main := producer.New(db.Client, producer.Config{Queue: queue})
	eu := producer.New(db.Client, producer.Config{Queue: euQueue})
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	ctx := context.Background()

	mainFirst, mainPairs := policyRequests("u-main-first", n)
	euFirst, euPairs := policyRequests("u-eu-first", n)
	tests := []struct {
		name          string
		reqs          []versori.ActivationRequest
		first, second *producer.Producer
	}{
		{"queued on activations first", mainFirst, main, eu},
		{"queued on activations-eu first", euFirst, eu, main},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range tc.reqs {
				if res, err := tc.first.Enqueue(ctx, r); err != nil || res.Status != producer.Enqueued {
					t.Fatalf("first Enqueue(%s) = %+v, %v", r.UserID, res, err)
				}
				res, err := tc.second.Enqueue(ctx, r)
				if err != nil || res.Status != producer.Duplicate || res.Owner != tc.first.Queue() {
					t.Errorf("second Enqueue(%s) on %s = %+v, %v; want a duplicate owned by %s", r.UserID, tc.second.Queue(), res, err, tc.first.Queue())
				}
			}
			// The same rows as a file on the second queue: all duplicates, owned elsewhere.
			var b strings.Builder
			for _, r := range tc.reqs {
				line, err := r.MarshalJSON()
				if err != nil {
					t.Fatal(err)
				}
				b.Write(line)
				b.WriteByte('\n')
			}
			sum, err := tc.second.EnqueueFile(ctx, producer.FileOptions{Path: testutil.WriteFile(t, "rows.jsonl", b.String())})
			if err != nil {
				t.Fatal(err)
			}
			if sum.Enqueued != 0 || sum.Duplicates != n || sum.OtherQueue != n {
				t.Errorf("EnqueueFile on %s = enqueued %d, duplicates %d (other queue %d); want 0, %d (%d)",
					tc.second.Queue(), sum.Enqueued, sum.Duplicates, sum.OtherQueue, n, n)
			}
		})
	}

	all := append(slices.Clone(mainPairs), euPairs...)
	testutil.WaitFor(t, 15*time.Second, "every pair activated", func() bool { return api.Stats().Activations >= len(all) })
	for _, pr := range mainPairs {
		waitTaskState(t, insp, pr, asynq.TaskStateCompleted, 5*time.Second)
	}
	for _, q := range []string{queue, euQueue} {
		testutil.WaitFor(t, 5*time.Second, "queue "+q+" drained", func() bool {
			qi, err := insp.GetQueueInfo(q)
			return err == nil && qi.Pending+qi.Active+qi.Scheduled+qi.Retry == 0
		})
	}
	assertExactlyOnce(t, api, all)
	if got := api.Stats().Activations; got != len(all) {
		t.Errorf("%d activations, want %d", got, len(all))
	}
	// Each pair's task lives on its owner's queue only.
	owners := []struct {
		pairs       []versori.Pair
		owner, none string
	}{{mainPairs, queue, euQueue}, {euPairs, euQueue, queue}}
	for _, o := range owners {
		for _, pr := range o.pairs {
			if _, err := insp.GetTaskInfo(o.owner, tasks.TaskID(pr)); err != nil {
				t.Errorf("task of %s on %s: %v", pr.UserID, o.owner, err)
			}
			if ti, err := insp.GetTaskInfo(o.none, tasks.TaskID(pr)); !errors.Is(err, asynq.ErrTaskNotFound) {
				t.Errorf("task of %s on %s: %v, %v; want none", pr.UserID, o.none, ti, err)
			}
		}
	}
	if got := total([]*worker.Worker{wMain}, activations, "activated"); got != n {
		t.Errorf("the activations worker activated %v, want %d", got, n)
	}
	if got := total([]*worker.Worker{wEU}, activations, "activated"); got != n {
		t.Errorf("the activations-eu worker activated %v, want %d", got, n)
	}
}

// harshDeadLetterTotal sums activator_dead_letters_total over every reason.
func harshDeadLetterTotal(ws []*worker.Worker) float64 {
	sum := 0.0
	for _, r := range tasks.Reasons() {
		sum += total(ws, deadLetters, string(r))
	}
	return sum
}

// harshBillingRequest is a request for user on the billing integration, which requires a connection for
// billingTemplate: without fixed, it binds none (dead-lettered as missing connections); with it, it
// binds one.
func harshBillingRequest(user string, fixed bool) versori.ActivationRequest {
	r := versori.ActivationRequest{UserID: user, IntegrationID: billingIntegration}
	if fixed {
		r.Connections = []versori.ActivationConnection{{TemplateID: billingTemplate, ConnectionID: billingConnection}}
	}
	return r
}

// Cases 3 and 10: the dead-letter workflow. Before the fix: a purged dead letter's task stayed in
// asynq's archive, so the sweeper stored it again within one sweep and counted it a second time in
// activator_dead_letters_total, and enqueueing the corrected row afterwards was refused as a
// duplicate of the archived task; there was no way to requeue with corrected rows
// (RequeueFile, `dlq requeue --file`); and Requeue stopped at the first entry whose request could not
// be read ("userId: is required"), requeueing none after it.
func TestHarshDeadLetterPurgeFixAndRequeue(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	api.RequireConnection(billingIntegration, billingTemplate)
	p := producer.New(db.Client, producer.Config{Queue: queue})
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	ctx := context.Background()

	// One job asynq archived itself (as after crashes at its retry limit): the sweeper stores it.
	archivedReq := harshBillingRequest("u-dl-archived", false)
	archivedID := tasks.TaskID(archivedReq.Pair())
	enqueueAll(t, p, archivedReq)
	if err := insp.ArchiveTask(queue, archivedID); err != nil {
		t.Fatal(err)
	}
	w, _ := startWorker(t, db.Client, api, withPolicy(policyTimings))
	ws := []*worker.Worker{w}

	// Eight rows without the connection billing needs: purged (2), fixed by file (3), requeued (3).
	var reqs []versori.ActivationRequest
	for i := range 8 {
		reqs = append(reqs, harshBillingRequest(fmt.Sprintf("u-dl-%d", i), false))
	}
	purged, byFile, byID := reqs[:2], reqs[2:5], reqs[5:]
	enqueueAll(t, p, reqs...)
	const dead = 9
	testutil.WaitFor(t, 15*time.Second, "every dead letter stored", func() bool {
		n, err := dlStore(db.Client, p).Count(ctx, "")
		return err == nil && n == dead
	})
	testutil.WaitFor(t, 5*time.Second, "activator_dead_letters_total to count them", func() bool { return harshDeadLetterTotal(ws) == dead })
	if e := deadLetter(t, dlStore(db.Client, p), archivedReq.Pair()); e.Reason != tasks.ReasonRetriesExhausted {
		t.Errorf("archived job's dead letter has reason %s, want retries_exhausted", e.Reason)
	}

	// Purge: the two handler dead letters, the archived one, and an id that has none.
	purgeIDs := []string{tasks.TaskID(purged[0].Pair()), tasks.TaskID(purged[1].Pair()), archivedID}
	res, err := inspector(db.Client, p).Purge(ctx, append(slices.Clone(purgeIDs), "act:"+billingIntegration+":u-never-dead"))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Purged, purgeIDs) || len(res.Missing) != 1 {
		t.Fatalf("Purge = %+v; want %v purged and one missing", res, purgeIDs)
	}
	// Four sweeps later they are still gone, and counted once.
	time.Sleep(4 * 500 * time.Millisecond)
	if n, _ := dlStore(db.Client, p).Count(ctx, ""); n != dead-int64(len(purgeIDs)) {
		t.Errorf("%d dead letters after the purge and four sweeps, want %d", n, dead-len(purgeIDs))
	}
	for _, id := range purgeIDs {
		if es, _ := dlStore(db.Client, p).Get(ctx, id); len(es) != 0 {
			t.Errorf("purged %s is back in the store: %+v", id, es[0])
		}
		if ti, err := insp.GetTaskInfo(queue, id); !errors.Is(err, asynq.ErrTaskNotFound) {
			t.Errorf("purged %s still has a task: %v, %v", id, ti, err)
		}
	}
	if n := archived(t, insp); n != 0 {
		t.Errorf("%d tasks in asynq's archive after the purge, want none", n)
	}
	if got := harshDeadLetterTotal(ws); got != dead {
		t.Errorf("activator_dead_letters_total = %v after the purge and four sweeps, want %d (counted once)", got, dead)
	}

	// The purged pairs, enqueued again with the corrected row, are queued, to look before activating.
	fixedPurged := []versori.ActivationRequest{harshBillingRequest(purged[0].UserID, true), harshBillingRequest(purged[1].UserID, true),
		harshBillingRequest(archivedReq.UserID, true)}
	enqueueAll(t, p, fixedPurged...)
	for _, r := range fixedPurged {
		if pl := harshPayload(t, insp, queue, tasks.TaskID(r.Pair())); !pl.Reconcile || len(pl.Request.Connections) != 1 {
			t.Errorf("payload of %s = %+v; want the corrected request, with reconcile", r.UserID, pl)
		}
	}

	// Corrected rows for the next three, plus a pair that has no dead letter and a malformed row.
	var b strings.Builder
	for _, r := range byFile {
		line, err := harshBillingRequest(r.UserID, true).MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	never := testutil.Request("u-dl-never")
	line, err := never.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	b.Write(line)
	b.WriteString("\n{\"userId\":\"u-dl-bad\",\"integrationId\":\"not-a-ulid\"}\n")
	dir := t.TempDir()
	path := filepath.Join(dir, "fixed.jsonl")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	sum, err := inspector(db.Client, p).RequeueFile(ctx, inspect.RequeueFileOptions{Path: path, RejectsPath: filepath.Join(dir, "rejects.jsonl")})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Rows != 5 || sum.Requeued != len(byFile) || sum.NotDeadLettered != 1 || sum.Rejected != 1 || sum.Busy != 0 {
		t.Errorf("RequeueFile = %+v; want 5 rows: %d requeued, 1 not dead-lettered, 1 rejected", sum, len(byFile))
	}
	if !slices.Equal(sum.NotDeadLetteredLines, []int{4}) {
		t.Errorf("not dead-lettered lines %v, want [4]", sum.NotDeadLetteredLines)
	}

	// Requeue by id, with an entry that holds no request first: it is skipped and reported, the rest
	// requeued. The integration no longer needs the template, so the original requests activate.
	api.ClearRequirements(billingIntegration)
	invalid := deadletter.Entry{ID: tasks.TaskID(versori.Pair{UserID: "u-dl-norequest", IntegrationID: crmIntegration}),
		UserID: "u-dl-norequest", IntegrationID: crmIntegration, Reason: tasks.ReasonInvalidRequest,
		Error: "payload request: is missing", Attempts: 1, FailedAt: time.Now().UTC(), Queue: queue}
	if _, err := dlStore(db.Client, p).Add(ctx, invalid); err != nil {
		t.Fatal(err)
	}
	ids := []string{invalid.ID}
	for _, r := range byID {
		ids = append(ids, tasks.TaskID(r.Pair()))
	}
	rq, err := inspector(db.Client, p).Requeue(ctx, ids)
	if err != nil {
		t.Fatalf("Requeue: %v", err)
	}
	slices.Sort(rq.Requeued)
	want := slices.Sorted(slices.Values(ids[1:]))
	if !slices.Equal(rq.Requeued, want) || len(rq.Missing) != 0 || len(rq.Busy) != 0 {
		t.Errorf("Requeue = %+v; want %v requeued", rq, want)
	}
	var ve *versori.ValidationError
	if len(rq.Invalid) != 1 || rq.Invalid[0].ID != invalid.ID || !errors.As(rq.Invalid[0].Err, &ve) {
		t.Errorf("Requeue invalid = %+v; want %s with a validation error", rq.Invalid, invalid.ID)
	}
	if !hasDeadLetter(dlStore(db.Client, p), versori.Pair{UserID: invalid.UserID, IntegrationID: invalid.IntegrationID}) {
		t.Error("the invalid dead letter was not left in the store")
	}

	// Every fixed, refiled and requeued pair activates once, looking first; nothing else is left.
	var active []versori.Pair
	for _, r := range append(append(slices.Clone(fixedPurged), byFile...), byID...) {
		active = append(active, r.Pair())
	}
	for _, pr := range active {
		waitTaskState(t, insp, pr, asynq.TaskStateCompleted, 15*time.Second)
	}
	assertExactlyOnce(t, api, active)
	if got := api.Stats().Activations; got != len(active) {
		t.Errorf("%d activations, want %d", got, len(active))
	}
	for _, pr := range active {
		calls := pairCalls(api, pr)
		i := slices.IndexFunc(calls, func(c versoritest.Call) bool { return c.Status == 200 && c.Op == versori.OpActivate })
		if i < 1 || calls[i-1].Op != versori.OpListActivations {
			t.Errorf("calls for %s = %v; want the activating POST to follow a look-up", pr.UserID, callTrace(calls))
		}
		if hasDeadLetter(dlStore(db.Client, p), pr) {
			t.Errorf("%s still has a dead letter", pr.UserID)
		}
	}
	if len(pairCalls(api, never.Pair())) != 0 {
		t.Error("the row without a dead letter made a call")
	}
	if n, _ := dlStore(db.Client, p).Count(ctx, ""); n != 1 {
		t.Errorf("%d dead letters left, want the 1 invalid one", n)
	}
	if got := harshDeadLetterTotal(ws); got != dead {
		t.Errorf("activator_dead_letters_total = %v at the end, want %d", got, dead)
	}
}
