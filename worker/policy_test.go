package worker_test

// One test per row of the failure-policy table (docs/architecture.md), each through a real in-process worker on a
// real Redis against the Versori stand-in. Time is measured only from the stand-in's own call
// records, and only as lower bounds ("the next call came at least N after the 429") or as rates.

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/versori/activator/internal/breaker"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/queuestate"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/internal/window"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
	"github.com/versori/activator/worker"
)

// policyTimings keeps retries short: asynq retries 1 to 2 s apart, one quick retry 10 to 20 ms after
// a failure known not to have reached the API, and at least testSettle after one that may have.
var policyTimings = worker.RetryPolicy{
	Base: time.Second, Cap: 2 * time.Second,
	QuickRetries: 1, QuickBase: 10 * time.Millisecond, QuickCap: 20 * time.Millisecond,
	SettleTime: testSettle,
}

func withPolicy(pol worker.RetryPolicy) func(*worker.Config) {
	return func(c *worker.Config) { c.Policy = pol }
}

// policyRequests returns n requests for users prefix-000 and on, and their pairs.
func policyRequests(prefix string, n int) ([]versori.ActivationRequest, []versori.Pair) {
	reqs := make([]versori.ActivationRequest, n)
	pairs := make([]versori.Pair, n)
	for i := range n {
		reqs[i] = testutil.Request(fmt.Sprintf("%s-%03d", prefix, i))
		pairs[i] = reqs[i].Pair()
	}
	return reqs, pairs
}

func enqueueAll(t *testing.T, p *producer.Producer, reqs ...versori.ActivationRequest) {
	t.Helper()
	for _, r := range reqs {
		res, err := p.Enqueue(context.Background(), r)
		if err != nil || res.Status != producer.Enqueued {
			t.Fatalf("Enqueue(%s) = %+v, %v", r.UserID, res, err)
		}
	}
}

// pairCalls is the stand-in's record of p's calls, in arrival order.
func pairCalls(api *versoritest.Server, p versori.Pair) []versoritest.Call {
	var out []versoritest.Call
	for _, c := range api.Calls() {
		if c.Pair == p {
			out = append(out, c)
		}
	}
	return out
}

// callTrace renders calls as "activate 503", "list_activations 200", ...
func callTrace(calls []versoritest.Call) []string {
	out := make([]string, len(calls))
	for i, c := range calls {
		out[i] = fmt.Sprintf("%s %d", c.Op, c.Status)
	}
	return out
}

func countOp(calls []versoritest.Call, op string) int {
	n := 0
	for _, c := range calls {
		if c.Op == op {
			n++
		}
	}
	return n
}

// taskInfo is asynq's record of p's job.
func taskInfo(t *testing.T, insp *asynq.Inspector, p versori.Pair) *asynq.TaskInfo {
	t.Helper()
	ti, err := insp.GetTaskInfo(queue, tasks.TaskID(p))
	if err != nil {
		t.Fatalf("GetTaskInfo(%s): %v", tasks.TaskID(p), err)
	}
	return ti
}

// waitTaskState waits until p's job is in state.
func waitTaskState(t *testing.T, insp *asynq.Inspector, p versori.Pair, state asynq.TaskState, timeout time.Duration) *asynq.TaskInfo {
	t.Helper()
	var ti *asynq.TaskInfo
	testutil.WaitFor(t, timeout, fmt.Sprintf("job of %s %s", p.UserID, state), func() bool {
		var err error
		ti, err = insp.GetTaskInfo(queue, tasks.TaskID(p))
		return err == nil && ti.State == state
	})
	return ti
}

// deadLetter is p's dead letter; it fails the test when there is not exactly one.
func deadLetter(t *testing.T, store *deadletter.Store, p versori.Pair) deadletter.Entry {
	t.Helper()
	es, err := store.Get(context.Background(), tasks.TaskID(p))
	if err != nil || len(es) != 1 {
		t.Fatalf("dead letter of %s: %v, %v", p.UserID, es, err)
	}
	return es[0]
}

func hasDeadLetter(store *deadletter.Store, p versori.Pair) bool {
	ok, err := store.Has(context.Background(), []string{tasks.TaskID(p)})
	return err == nil && ok[0]
}

// total sums a labelled counter over workers.
func total(ws []*worker.Worker, vec func(*worker.Worker) *prometheus.CounterVec, label string) float64 {
	sum := 0.0
	for _, w := range ws {
		sum += promtest.ToFloat64(vec(w).WithLabelValues(label))
	}
	return sum
}

func attempts(w *worker.Worker) *prometheus.CounterVec    { return w.Metrics().Attempts }
func activations(w *worker.Worker) *prometheus.CounterVec { return w.Metrics().Activations }
func deadLetters(w *worker.Worker) *prometheus.CounterVec { return w.Metrics().DeadLetters }

// Row "transient": two 503s, then success. A 503 may follow a commit, so the job makes no quick
// retry: it goes back to the queue for at least the settle time, and each retry looks first.
func TestPolicyTransientRetriedThenActivated(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	req := testutil.Request("u-transient")
	pair := req.Pair()
	api.Script(pair, versoritest.Fault{Status: 503}, versoritest.Fault{Status: 503})
	w, _ := startWorker(t, db.Client, api, withPolicy(policyTimings))
	p := producer.New(db.Client, producer.Config{Queue: queue, MaxRetry: 5})
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	enqueueAll(t, p, req)

	ti := waitTaskState(t, insp, pair, asynq.TaskStateCompleted, 15*time.Second)
	assertExactlyOnce(t, api, []versori.Pair{pair})
	calls := pairCalls(api, pair)
	want := []string{"activate 503", "list_activations 200", "activate 503", "list_activations 200", "activate 200"}
	if got := callTrace(calls); !slices.Equal(got, want) {
		t.Errorf("calls = %v, want %v", got, want)
	}
	ws := []*worker.Worker{w}
	if got := total(ws, attempts, string(versori.ClassTransient)); got != 2 {
		t.Errorf("attempts{class=transient} = %v, want 2", got)
	}
	if got := total(ws, attempts, string(versori.ClassOK)); got != 1 {
		t.Errorf("attempts{class=ok} = %v, want 1", got)
	}
	if got := total(ws, activations, "activated"); got != 1 {
		t.Errorf("activations{result=activated} = %v, want 1", got)
	}
	if ti.Retried != 2 {
		t.Errorf("job retried %d times, want 2 (one asynq retry per 503)", ti.Retried)
	}
	// Each look-up came at least the settle time after the 503 before it.
	for i := 1; i < len(calls); i++ {
		if calls[i-1].Status == 503 && calls[i].At.Sub(calls[i-1].At) < testSettle {
			t.Errorf("look-up %s after a 503, want at least %s", calls[i].At.Sub(calls[i-1].At), testSettle)
		}
	}
	if n, _ := dlStore(db.Client, p).Count(context.Background(), ""); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
}

// Row "transient", at the limit: always 503 with MaxRetry 1 ends in a dead letter after 2 attempts,
// each of one POST (a 503 may have committed, so no quick retry follows it), and a last one that,
// once the API has settled after the last 503, only looks: a dead letter never sits beside an
// activation committed late.
func TestPolicyTransientExhausted(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	req := testutil.Request("u-exhausted")
	pair := req.Pair()
	api.Script(pair, slices.Repeat([]versoritest.Fault{{Status: 503}}, 20)...)
	w, _ := startWorker(t, db.Client, api, withPolicy(policyTimings))
	const maxRetry = 1
	p := producer.New(db.Client, producer.Config{Queue: queue, MaxRetry: maxRetry})
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	enqueueAll(t, p, req)

	testutil.WaitFor(t, 15*time.Second, "the dead letter", func() bool { return hasDeadLetter(dlStore(db.Client, p), pair) })
	e := deadLetter(t, dlStore(db.Client, p), pair)
	if e.Reason != tasks.ReasonRetriesExhausted || e.Attempts != maxRetry+2 || !strings.Contains(e.Error, "found no activation") {
		t.Errorf("dead letter = reason %s, attempts %d, error %q; want retries_exhausted after %d attempts and a last look-up",
			e.Reason, e.Attempts, e.Error, maxRetry+2)
	}
	calls := pairCalls(api, pair)
	want := []string{"activate 503", "list_activations 200", "activate 503", "list_activations 200"}
	if got := callTrace(calls); !slices.Equal(got, want) {
		t.Errorf("calls = %v, want %v", got, want)
	}
	if last := calls[len(calls)-1].At.Sub(calls[len(calls)-2].At); last < testSettle {
		t.Errorf("the last look-up came %s after the last 503, want at least the settle time %s", last, testSettle)
	}
	ws := []*worker.Worker{w}
	if got := total(ws, attempts, string(versori.ClassTransient)); got != float64(maxRetry+2) {
		t.Errorf("attempts{class=transient} = %v, want %d", got, maxRetry+2)
	}
	if got := total(ws, deadLetters, string(tasks.ReasonRetriesExhausted)); got != 1 {
		t.Errorf("dead_letters{reason=retries_exhausted} = %v, want 1", got)
	}
	assertTaskGone(t, insp, pair)
	if api.ActivationCount(pair) != 0 {
		t.Error("the pair was activated")
	}
}

// Row "transient", a dropped response after the activation was committed: the retry looks first,
// finds the activation, and never POSTs again.
func TestPolicyDroppedResponseAfterCommit(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	req := testutil.Request("u-dropped")
	pair := req.Pair()
	api.Script(pair, versoritest.Fault{Commit: true, Drop: true})
	w, _ := startWorker(t, db.Client, api, withPolicy(policyTimings))
	p := producer.New(db.Client, producer.Config{Queue: queue})
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	enqueueAll(t, p, req)

	ti := waitTaskState(t, insp, pair, asynq.TaskStateCompleted, 15*time.Second)
	assertExactlyOnce(t, api, []versori.Pair{pair})
	calls := pairCalls(api, pair)
	if got, want := callTrace(calls), []string{"activate 0", "list_activations 200"}; !slices.Equal(got, want) {
		t.Fatalf("calls = %v, want %v", got, want)
	}
	if !calls[0].Committed || !calls[0].Dropped {
		t.Errorf("first call = %+v, want committed and dropped", calls[0])
	}
	ws := []*worker.Worker{w}
	if got := total(ws, activations, "already_active"); got != 1 {
		t.Errorf("activations{result=already_active} = %v, want 1", got)
	}
	if got := total(ws, activations, "activated"); got != 0 {
		t.Errorf("activations{result=activated} = %v, want 0", got)
	}
	// The result is written behind the job, within a flush interval.
	var want string
	for _, a := range api.Activations() {
		if a.Pair == pair {
			want = a.ID
		}
	}
	testutil.WaitFor(t, 5*time.Second, "the job's result to be the activation id found by the look-up", func() bool {
		ti, err := insp.GetTaskInfo(queue, ti.ID)
		return err == nil && want != "" && string(ti.Result) == want
	})
}

// Row "rate_limited": a 429 makes its job wait as long as the API asked, without using an attempt,
// and stops every call of every worker (two here, sharing the back-off through Redis) for as long.
func TestPolicyRateLimited(t *testing.T) {
	t.Parallel()
	const rateLimitWait = 1500 * time.Millisecond
	tests := []struct {
		name       string
		retryAfter func() string // the header, made just before the job is enqueued
		// resume is when calls may start again, given the 429's arrival time and the header.
		resume func(at time.Time, header string) time.Time
	}{
		{"seconds", func() string { return "2" },
			func(at time.Time, _ string) time.Time { return at.Add(2 * time.Second) }},
		{"HTTP-date", func() string { return time.Now().Add(3 * time.Second).UTC().Format(http.TimeFormat) },
			func(_ time.Time, h string) time.Time {
				d, err := http.ParseTime(h)
				if err != nil {
					panic(err)
				}
				return d
			}},
		{"absent", func() string { return "" },
			func(at time.Time, _ string) time.Time { return at.Add(rateLimitWait) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := testutil.Redis(t)
			api := versoritest.New(t, versoritest.Options{})
			limited := testutil.Request("u-limited")
			pair := limited.Pair()
			others, otherPairs := policyRequests("u-other", 10)
			pol := policyTimings
			pol.RateLimitWait = rateLimitWait
			w1, _ := startWorker(t, db.Client, api, withPolicy(pol))
			w2, _ := startWorker(t, db.Client, api, withPolicy(pol))
			p := producer.New(db.Client, producer.Config{Queue: queue, MaxRetry: 3})
			insp := asynq.NewInspectorFromRedisClient(db.Client)

			header := tc.retryAfter()
			api.Script(pair, versoritest.Fault{Status: http.StatusTooManyRequests, RetryAfter: header})
			enqueueAll(t, p, limited)
			// Once the job has snoozed, its worker has set the shared back-off in Redis; wait past
			// the gates' 250 ms poll so that the other worker has read it too, then send more work.
			waitTaskState(t, insp, pair, asynq.TaskStateRetry, 10*time.Second)
			time.Sleep(500 * time.Millisecond)
			enqueueAll(t, p, others...)
			waitTaskState(t, insp, pair, asynq.TaskStateCompleted, 15*time.Second)
			testutil.WaitFor(t, 15*time.Second, "the other jobs", func() bool { return api.Stats().Activations == 1+len(others) })
			assertExactlyOnce(t, api, append([]versori.Pair{pair}, otherPairs...))

			calls := api.Calls()
			i429 := slices.IndexFunc(calls, func(c versoritest.Call) bool { return c.Status == http.StatusTooManyRequests })
			if i429 < 0 {
				t.Fatalf("no 429 in %v", callTrace(calls))
			}
			at := calls[i429].At
			resume := tc.resume(at, header)
			t.Logf("429 at %s, Retry-After %q: no call before +%s", at.Format("15:04:05.000"), header, resume.Sub(at).Round(time.Millisecond))
			if resume.Sub(at) < time.Second {
				t.Fatalf("the 429 came too late for its Retry-After to mean a wait (%s)", resume.Sub(at))
			}
			// The back-off is kept in whole milliseconds.
			resume = resume.Add(-time.Millisecond)
			after := calls[i429+1:]
			next := slices.IndexFunc(after, func(c versoritest.Call) bool { return c.Pair == pair })
			if next < 0 {
				t.Fatalf("no call for the pair after its 429: %v", callTrace(calls))
			}
			if gap := after[next].At.Sub(at); after[next].At.Before(resume) {
				t.Errorf("the pair's next call came %s after its 429, before the wait asked for (%s)", gap, resume.Add(time.Millisecond).Sub(at))
			}
			for _, c := range after {
				if c.At.Before(resume) {
					t.Errorf("%s call for %s came %s after the 429, within its back-off", c.Op, c.Pair.UserID, c.At.Sub(at))
				}
			}
			if ti := taskInfo(t, insp, pair); ti.Retried != 0 {
				t.Errorf("the rate-limited job retried %d times, want 0: a 429's wait uses no attempt", ti.Retried)
			}
			ws := []*worker.Worker{w1, w2}
			if got := total(ws, attempts, string(versori.ClassRateLimited)); got != 1 {
				t.Errorf("attempts{class=rate_limited} = %v, want 1", got)
			}
			if n, _ := dlStore(db.Client, p).Count(context.Background(), ""); n != 0 {
				t.Errorf("%d dead letters, want none", n)
			}
		})
	}
}

// Rows "missing_connections", "invalid_request", "not_found" and "permanent": a dead letter at once,
// after exactly one call, with the row's reason. The task is dropped from asynq: the dead-letter
// store is the one place it lives.
func TestPolicyDeadLettersAtOnce(t *testing.T) {
	t.Parallel()
	const unknownIntegration = "01JDG0NE000000000000000000"
	tests := []struct {
		name      string
		req       versori.ActivationRequest
		setup     func(api *versoritest.Server, p versori.Pair)
		status    int
		class     versori.Class
		reason    tasks.Reason
		wantCalls []string // default: exactly the one POST
	}{
		{"missing connections", versori.ActivationRequest{UserID: "u-missing", IntegrationID: billingIntegration},
			func(api *versoritest.Server, _ versori.Pair) {
				api.RequireConnection(billingIntegration, billingTemplate)
			},
			400, versori.ClassMissingConnections, tasks.ReasonMissingConnections, nil},
		{"invalid request", testutil.Request("u-invalid"),
			func(api *versoritest.Server, p versori.Pair) {
				api.Script(p, versoritest.Fault{Status: 422, Body: &versori.ErrorBody{
					Code: "validation_failed", Message: "dynamicVariables.region must be one of EU, US",
					Fields: []versori.ErrorField{{Field: "dynamicVariables.region", Message: "must be one of EU, US"}},
				}})
			},
			422, versori.ClassInvalidRequest, tasks.ReasonInvalidRequest, nil},
		{"a 400 whose prose names a connection", testutil.Request("u-upstream"),
			func(api *versoritest.Server, p versori.Pair) {
				api.Script(p, versoritest.Fault{Status: 400, Body: &versori.ErrorBody{Message: "upstream connection reset"}})
			},
			400, versori.ClassInvalidRequest, tasks.ReasonInvalidRequest, nil},
		{"unknown user", testutil.Request("u-gone"),
			func(api *versoritest.Server, p versori.Pair) { api.ForgetUser(p.UserID) },
			404, versori.ClassNotFound, tasks.ReasonNotFound, nil},
		{"unknown integration", versori.ActivationRequest{UserID: "u-gone-integration", IntegrationID: unknownIntegration},
			func(api *versoritest.Server, _ versori.Pair) { api.ForgetIntegration(unknownIntegration) },
			404, versori.ClassNotFound, tasks.ReasonNotFound, nil},
		{"unknown connection template", testutil.Request("u-no-template"),
			func(api *versoritest.Server, p versori.Pair) {
				api.Script(p, versoritest.Fault{Status: 404, Body: &versori.ErrorBody{Message: "connection template not found",
					Fields: []versori.ErrorField{{Field: "connections[0].templateId", Message: "not found"}}}})
			},
			404, versori.ClassNotFound, tasks.ReasonNotFound, nil},
		{"forbidden for this request only", testutil.Request("u-forbidden"),
			func(api *versoritest.Server, p versori.Pair) { api.Forbid(p) },
			403, versori.ClassUnauthorized, tasks.ReasonUnauthorized, nil},
		{"redirect", testutil.Request("u-redirect"),
			func(api *versoritest.Server, p versori.Pair) { api.Script(p, versoritest.Fault{Status: 307}) },
			307, versori.ClassPermanent, tasks.ReasonPermanentError, nil},
		{"another status", testutil.Request("u-teapot"),
			func(api *versoritest.Server, p versori.Pair) { api.Script(p, versoritest.Fault{Status: 418}) },
			418, versori.ClassPermanent, tasks.ReasonPermanentError, nil},
	}
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	for _, tc := range tests {
		tc.setup(api, tc.req.Pair())
	}
	w, _ := startWorker(t, db.Client, api, withPolicy(policyTimings))
	p := producer.New(db.Client, producer.Config{Queue: queue}) // 25 retries: none may be used
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	for _, tc := range tests {
		enqueueAll(t, p, tc.req)
	}
	testutil.WaitFor(t, 15*time.Second, "every job dead-lettered", func() bool {
		n, err := dlStore(db.Client, p).Count(context.Background(), "")
		return err == nil && n == int64(len(tests))
	})

	wantAttempts := map[versori.Class]float64{}
	wantReasons := map[tasks.Reason]float64{}
	for _, tc := range tests {
		wantAttempts[tc.class]++
		wantReasons[tc.reason]++
		t.Run(tc.name, func(t *testing.T) {
			pair := tc.req.Pair()
			e := deadLetter(t, dlStore(db.Client, p), pair)
			if e.Reason != tc.reason || e.Attempts != 1 {
				t.Errorf("dead letter = reason %s after %d attempts, want %s after 1", e.Reason, e.Attempts, tc.reason)
			}
			if !strings.Contains(e.Error, fmt.Sprint(tc.status)) {
				t.Errorf("dead letter error %q does not name the %d", e.Error, tc.status)
			}
			want := tc.wantCalls
			if want == nil {
				want = []string{fmt.Sprintf("activate %d", tc.status)}
			}
			if got := callTrace(pairCalls(api, pair)); !slices.Equal(got, want) {
				t.Errorf("calls = %v, want exactly %v", got, want)
			}
			assertTaskGone(t, insp, pair)
			if api.ActivationCount(pair) != 0 {
				t.Error("the pair was activated")
			}
		})
	}
	ws := []*worker.Worker{w}
	for class, n := range wantAttempts {
		if got := total(ws, attempts, string(class)); got != n {
			t.Errorf("attempts{class=%s} = %v, want %v", class, got, n)
		}
	}
	for reason, n := range wantReasons {
		if got := total(ws, deadLetters, string(reason)); got != n {
			t.Errorf("dead_letters{reason=%s} = %v, want %v", reason, got, n)
		}
	}
	if paused, _ := queuePaused(t, db); paused {
		t.Error("a 403 about one request paused the queue")
	}
	if n := archived(t, insp); n != 0 {
		t.Errorf("%d tasks in asynq's archive, want none: dead letters live in the store only", n)
	}
}

// A 409 says the API refused because of existing state: the job looks the pair up at once. When the
// pair is not active (yet: what the API conflicts with may be a POST still committing), the job
// retries after the settle time, looking first, and at its limit ends with a look-up only.
func TestPolicyConflict(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		faults     []versoritest.Fault
		wantCalls  []string
		wantActive bool
	}{
		{"a POST still committing", []versoritest.Fault{{Status: 409, CommitAfter: 100 * time.Millisecond}},
			[]string{"activate 409", "list_activations 200", "list_activations 200"}, true},
		{"never active", slices.Repeat([]versoritest.Fault{{Status: 409}}, 5),
			[]string{"activate 409", "list_activations 200", "list_activations 200", "activate 409", "list_activations 200", "list_activations 200"}, false},
		// A gateway's 404 on the look-up is about the look-up: it must not make the 409 a
		// not_found dead letter (the API may be committing what it conflicts with). The job ends
		// after its final look-ups, saying the outcome is unknown.
		{"the look-up refused", []versoritest.Fault{{Status: 409}},
			[]string{"activate 409", "list_activations 404", "list_activations 404", "list_activations 404"}, false},
	}
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	startWorker(t, db.Client, api, withPolicy(policyTimings))
	p := producer.New(db.Client, producer.Config{Queue: queue, MaxRetry: 1})
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := testutil.Request("u-conflict-" + strconv.Itoa(i))
			pair := req.Pair()
			api.Script(pair, tc.faults...)
			if tc.name == "the look-up refused" {
				api.ForgetUser(pair.UserID) // lists of the user answer 404; the scripted 409 answers first
			}
			enqueueAll(t, p, req)
			testutil.WaitFor(t, time.Minute, "the job's end", func() bool {
				return hasDeadLetter(dlStore(db.Client, p), pair) || api.ActivationCount(pair) == 1 && testutil.Unfinished(t, db.Client, queue) == 0
			})
			calls := pairCalls(api, pair)
			got := callTrace(calls)
			if len(got) > len(tc.wantCalls) && tc.name == "the look-up refused" {
				got = got[:len(tc.wantCalls)] // then more final look-ups, each refused
			}
			if !slices.Equal(got, tc.wantCalls) {
				t.Errorf("calls = %v, want %v", callTrace(calls), tc.wantCalls)
			}
			// Each look-up after a 409's own comes after the settle time.
			for i := 1; i < len(calls); i++ {
				if calls[i].Op == versori.OpListActivations && calls[i-1].Op == versori.OpListActivations &&
					calls[i].At.Sub(calls[i-1].At) < testSettle {
					t.Errorf("look-up %d came %s after the one before, within the settle time", i, calls[i].At.Sub(calls[i-1].At))
				}
			}
			if tc.wantActive {
				if api.ActivationCount(pair) != 1 || hasDeadLetter(dlStore(db.Client, p), pair) {
					t.Errorf("want one activation and no dead letter")
				}
				return
			}
			e := deadLetter(t, dlStore(db.Client, p), pair)
			if e.Reason != tasks.ReasonRetriesExhausted || api.ActivationCount(pair) != 0 {
				t.Errorf("dead letter %s (%s), %d activations; want retries_exhausted and none", e.Reason, e.Error, api.ActivationCount(pair))
			}
			if tc.name == "the look-up refused" && !strings.Contains(e.Error, "unknown") {
				t.Errorf("dead letter error %q does not say the outcome is unknown", e.Error)
			}
		})
	}
}

// assertTaskGone checks that asynq holds no task for p: a dead-lettered job's task is dropped.
func assertTaskGone(t *testing.T, insp *asynq.Inspector, p versori.Pair) {
	t.Helper()
	if ti, err := insp.GetTaskInfo(queue, tasks.TaskID(p)); !errors.Is(err, asynq.ErrTaskNotFound) {
		t.Errorf("task of %+v: %v, %v; want it gone", p, ti, err)
	}
}

// archived is how many tasks asynq's archive holds for the queue.
func archived(t *testing.T, insp *asynq.Inspector) int {
	t.Helper()
	qi, err := insp.GetQueueInfo(queue)
	if err != nil {
		t.Fatal(err)
	}
	return qi.Archived
}

// queuePaused reports whether the queue is paused, and why.
func queuePaused(t *testing.T, db *testutil.RedisDB) (bool, string) {
	t.Helper()
	paused, reason, err := queuestate.New(db.Client, queue).Paused(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return paused, reason
}

// probeCalls counts the key probe's calls (a look-up of a made-up user, or of one of users: end users
// known to have worked) with the given status.
func probeCalls(api *versoritest.Server, status int, users ...string) int {
	n := 0
	for _, c := range api.Calls() {
		if c.Op == versori.OpListActivations && (c.Pair.UserID == "activator-probe" || slices.Contains(users, c.Pair.UserID)) && c.Status == status {
			n++
		}
	}
	return n
}

// Row "unauthorized" with an API key: the queue is paused with every job kept, none dead-lettered
// and no attempt used; the probe resumes it once the key works again, and every job activates once.
func TestPolicyUnauthorizedAPIKeyPausesQueue(t *testing.T) {
	t.Parallel()
	const n = 20
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	pol := policyTimings
	pol.PausedWait = 500 * time.Millisecond
	w, _ := startWorker(t, db.Client, api, func(c *worker.Config) {
		c.Policy = pol
		c.ProbeInterval = 200 * time.Millisecond
	})
	original := api.APIKey()
	api.SetAPIKey("rotated") // the worker keeps sending the original key, now refused
	p := producer.New(db.Client, producer.Config{Queue: queue, MaxRetry: 3})
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	reqs, pairs := policyRequests("u-key", n)
	enqueueAll(t, p, reqs...)

	testutil.WaitFor(t, 10*time.Second, "the queue paused", func() bool {
		paused, reason := queuePaused(t, db)
		return paused && reason == queuestate.ReasonUnauthorized
	})
	// The handler sets the gauge when it pauses; the sweep loop's refresh (every 500 ms here) also
	// sets it, and one that read the state just before the pause may briefly set it back to 0.
	testutil.WaitFor(t, 5*time.Second, "activator_queue_paused 1", func() bool { return promtest.ToFloat64(w.Metrics().QueuePaused) == 1 })
	// The probe keeps finding the key refused: the queue stays paused, every job kept.
	testutil.WaitFor(t, 10*time.Second, "two refused probes", func() bool { return probeCalls(api, http.StatusUnauthorized) >= 2 })
	testutil.WaitFor(t, 10*time.Second, "every job back in the queue", func() bool {
		qi, err := insp.GetQueueInfo(queue)
		return err == nil && qi.Active == 0 && qi.Pending+qi.Retry == n
	})
	if paused, _ := queuePaused(t, db); !paused {
		t.Fatal("the queue was resumed while the key is refused")
	}
	if c, _ := dlStore(db.Client, p).Count(context.Background(), ""); c != 0 {
		t.Fatalf("%d jobs dead-lettered for a refused API key", c)
	}
	refused := api.Stats().ByOpStatus["activate 401"]
	if refused == 0 || refused > n || api.Stats().Activations != 0 {
		t.Errorf("while refused: %d POSTs answered 401, %d activations; want 1 to %d and none", refused, api.Stats().Activations, n)
	}

	api.SetAPIKey(original)
	testutil.WaitFor(t, 15*time.Second, "every job activated", func() bool { return api.Stats().Activations == n })
	assertExactlyOnce(t, api, pairs)
	if paused, _ := queuePaused(t, db); paused {
		t.Error("queue still paused after the probe found the key working")
	}
	if probeCalls(api, http.StatusOK) == 0 {
		t.Error("no successful probe recorded")
	}
	testutil.WaitFor(t, 5*time.Second, "activator_queue_paused 0", func() bool { return promtest.ToFloat64(w.Metrics().QueuePaused) == 0 })
	for _, pr := range pairs {
		ti := waitTaskState(t, insp, pr, asynq.TaskStateCompleted, 5*time.Second)
		if ti.Retried != 0 {
			t.Errorf("job of %s retried %d times; waiting out a refused key must use no attempt", pr.UserID, ti.Retried)
		}
	}
	if got := total([]*worker.Worker{w}, attempts, string(versori.ClassUnauthorized)); got != float64(refused) {
		t.Errorf("attempts{class=unauthorized} = %v, want %d", got, refused)
	}
	if c, _ := dlStore(db.Client, p).Count(context.Background(), ""); c != 0 {
		t.Errorf("%d dead letters, want none", c)
	}
}

// A queue an operator paused is never resumed by the probe, even with the key working, nor when a
// call in flight meets a refused key after the operator paused (say, to rotate that key); only
// Resume resumes it.
func TestPolicyOperatorPauseOutlastsProbe(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// refusedInFlight makes one job's call be refused (401) after the operator paused.
		refusedInFlight bool
	}{
		{"paused before any job", false},
		{"a call refused after the pause", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const n = 10
			db := testutil.Redis(t)
			api := versoritest.New(t, versoritest.Options{})
			w, _ := startWorker(t, db.Client, api, func(c *worker.Config) {
				c.Policy = policyTimings
				c.Policy.PausedWait = 500 * time.Millisecond
				c.ProbeInterval = 100 * time.Millisecond
			})
			p := producer.New(db.Client, producer.Config{Queue: queue, MaxRetry: 3})
			insp := asynq.NewInspectorFromRedisClient(db.Client)
			ctx := context.Background()
			reqs, pairs := policyRequests("u-op", n)

			if tc.refusedInFlight {
				first := pairs[0]
				api.Script(first, versoritest.Fault{Status: http.StatusUnauthorized, Delay: 500 * time.Millisecond})
				enqueueAll(t, p, reqs[0])
				// The only job's POST has arrived (the stand-in learns its pair only when it answers).
				testutil.WaitFor(t, 10*time.Second, "the call in flight", func() bool { return countOp(api.Calls(), versori.OpActivate) == 1 })
				if err := inspector(db.Client, p).Pause(ctx); err != nil {
					t.Fatal(err)
				}
				// The operator rotates the key meanwhile, so the probe that follows the 401 finds
				// the worker's key refused too; it is restored before the queue is resumed.
				original := api.APIKey()
				api.SetAPIKey("rotated")
				waitTaskState(t, insp, first, asynq.TaskStateRetry, 10*time.Second)
				api.SetAPIKey(original)
			} else if err := inspector(db.Client, p).Pause(ctx); err != nil {
				t.Fatal(err)
			}
			if tc.refusedInFlight {
				enqueueAll(t, p, reqs[1:]...)
			} else {
				enqueueAll(t, p, reqs...)
			}
			// Ten probe intervals with a working key.
			time.Sleep(time.Second)
			paused, reason := queuePaused(t, db)
			if !paused || reason != queuestate.ReasonOperator {
				t.Fatalf("queue paused %v (reason %q) after the probe ran with a working key; want paused by the operator", paused, reason)
			}
			if got := api.Stats().Activations; got != 0 {
				t.Fatalf("%d activations while the operator's pause holds", got)
			}

			if err := inspector(db.Client, p).Resume(ctx); err != nil {
				t.Fatal(err)
			}
			testutil.WaitFor(t, 15*time.Second, "every job activated", func() bool { return api.Stats().Activations == n })
			assertExactlyOnce(t, api, pairs)
			if c, _ := dlStore(db.Client, p).Count(ctx, ""); c != 0 {
				t.Errorf("%d dead letters, want none", c)
			}
			testutil.WaitFor(t, 5*time.Second, "activator_queue_paused 0", func() bool { return promtest.ToFloat64(w.Metrics().QueuePaused) == 0 })
		})
	}
}

// Row "unauthorized" with per-user JWTs: a refused token is one user's, or the signing key's. The
// probe, made with a token for a user of its own, tells them apart: a refused user's job is
// dead-lettered and the queue keeps running; a revoked signing key, or an API clock so far off that
// every token is refused, pauses the queue with every job kept and no attempt used, and the probe
// resumes it once the key is accepted again. Modest skew refuses nothing.
func TestPolicyUnauthorizedPerUserJWT(t *testing.T) {
	t.Parallel()
	const n, keyID = 6, "sk-test"
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		// refuse makes the API refuse the key (or one user) before the jobs run; restore undoes it.
		refuse, restore func(api *versoritest.Server, forbidden versori.Pair)
		keyRefused      bool // every token is refused until restore
		userRefused     bool // only the first pair's user is refused
		skewed          bool // the refusal is the clocks': the log must say so
		// unknownUser, if set, is what the API answers a token for an end user it does not know,
		// the probe's made-up user included (the spec does not say; 404 otherwise).
		unknownUser int
		warm        bool // one job activates before the refusal, so that an end user is known to work
		restart     bool // with warm: the worker is replaced by a new one after that job
	}{
		{"signing key revoked", func(api *versoritest.Server, _ versori.Pair) { api.RevokeSigningKey(true) },
			func(api *versoritest.Server, _ versori.Pair) { api.RevokeSigningKey(false) }, true, false, false, 0, false, false},
		{"API clock 10 minutes ahead", func(api *versoritest.Server, _ versori.Pair) { api.SetClockSkew(10 * time.Minute) },
			func(api *versoritest.Server, _ versori.Pair) { api.SetClockSkew(0) }, true, false, true, 0, false, false},
		{"API clock 2 minutes behind", func(api *versoritest.Server, _ versori.Pair) { api.SetClockSkew(-2 * time.Minute) },
			func(api *versoritest.Server, _ versori.Pair) { api.SetClockSkew(0) }, true, false, true, 0, false, false},
		{"API clock 45 seconds behind", func(api *versoritest.Server, _ versori.Pair) { api.SetClockSkew(-45 * time.Second) },
			nil, false, false, false, 0, false, false},
		{"API clock 45 seconds ahead", func(api *versoritest.Server, _ versori.Pair) { api.SetClockSkew(45 * time.Second) },
			nil, false, false, false, 0, false, false},
		{"one user refused", func(api *versoritest.Server, p versori.Pair) { api.Forbid(p) }, nil, false, true, false, 0, false, false},
		// An API that refuses a token for an end user it does not know: the made-up user's probe is
		// refused as a revoked key's is. A refused user must still not pause the queue, and a key
		// restored must still resume it.
		{"one user refused, unknown users' tokens forbidden", func(api *versoritest.Server, p versori.Pair) { api.Forbid(p) },
			nil, false, true, false, http.StatusForbidden, false, false},
		{"signing key revoked, unknown users' tokens forbidden", func(api *versoritest.Server, _ versori.Pair) { api.RevokeSigningKey(true) },
			func(api *versoritest.Server, _ versori.Pair) { api.RevokeSigningKey(false) }, true, false, false, http.StatusForbidden, false, false},
		{"signing key revoked, unknown users' tokens refused with 401", func(api *versoritest.Server, _ versori.Pair) { api.RevokeSigningKey(true) },
			func(api *versoritest.Server, _ versori.Pair) { api.RevokeSigningKey(false) }, true, false, false, http.StatusUnauthorized, true, false},
		{"one user refused, unknown users' tokens refused with 401", func(api *versoritest.Server, p versori.Pair) { api.Forbid(p) },
			nil, false, true, false, http.StatusUnauthorized, true, false},
		{"signing key revoked after a restart, unknown users' tokens refused with 401", func(api *versoritest.Server, _ versori.Pair) { api.RevokeSigningKey(true) },
			func(api *versoritest.Server, _ versori.Pair) { api.RevokeSigningKey(false) }, true, false, false, http.StatusUnauthorized, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			auth, err := versori.NewJWTAuth(keyID, key)
			if err != nil {
				t.Fatal(err)
			}
			db := testutil.Redis(t)
			api := versoritest.New(t, versoritest.Options{SigningKeyID: keyID, PublicKey: &key.PublicKey})
			pol := policyTimings
			pol.PausedWait = 500 * time.Millisecond
			logs := &testutil.SyncBuffer{}
			start := func() (*worker.Worker, func()) {
				return startWorker(t, db.Client, api, func(c *worker.Config) {
					c.Policy = pol
					c.PerUserAuth = true
					c.Versori.Auth = auth
					c.ProbeInterval = 200 * time.Millisecond
					c.Logger = slog.New(slog.NewJSONHandler(logs, nil))
				})
			}
			w, stop := start()
			p := producer.New(db.Client, producer.Config{Queue: queue, MaxRetry: 3})
			insp := asynq.NewInspectorFromRedisClient(db.Client)
			reqs, pairs := policyRequests("u-jwt", n)
			if tc.unknownUser != 0 {
				api.ForgetUser("activator-probe")
				api.RefuseUnknownUsersTokens(tc.unknownUser)
			}
			warm := testutil.Request("u-jwt-warm")
			extra := 0
			if tc.warm {
				enqueueAll(t, p, warm)
				testutil.WaitFor(t, 10*time.Second, "the first job activated", func() bool { return api.ActivationCount(warm.Pair()) == 1 })
				if tc.restart {
					// A new worker knows the user that worked from Redis alone.
					stop()
					w, _ = start()
				}
				extra = 1
			}
			tc.refuse(api, pairs[0])
			enqueueAll(t, p, reqs...)

			if tc.keyRefused {
				testutil.WaitFor(t, 10*time.Second, "the queue paused", func() bool {
					paused, reason := queuePaused(t, db)
					return paused && reason == queuestate.ReasonUnauthorized
				})
				testutil.WaitFor(t, 5*time.Second, "activator_queue_paused 1", func() bool { return promtest.ToFloat64(w.Metrics().QueuePaused) == 1 })
				testutil.WaitFor(t, 10*time.Second, "two refused probes", func() bool { return probeCalls(api, http.StatusUnauthorized, warm.UserID) >= 2 })
				testutil.WaitFor(t, 10*time.Second, "every job back in the queue", func() bool {
					qi, err := insp.GetQueueInfo(queue)
					return err == nil && qi.Active == 0 && qi.Pending+qi.Retry == n
				})
				if c, _ := dlStore(db.Client, p).Count(context.Background(), ""); c != 0 {
					t.Fatalf("%d jobs dead-lettered for a refused signing key", c)
				}
				if got := api.Stats().Activations - extra; got != 0 {
					t.Fatalf("%d activations while every token is refused", got)
				}
				if !strings.Contains(logs.String(), "the API refused the signing key") {
					t.Errorf("no log line says the signing key was refused:\n%s", logs.String())
				}
				if tc.skewed != strings.Contains(logs.String(), "its clock differs from ours") {
					t.Errorf("skewed clock %v, but the log says otherwise:\n%s", tc.skewed, logs.String())
				}
				tc.restore(api, pairs[0])
			}

			want := n
			if tc.userRefused {
				want = n - 1
			}
			testutil.WaitFor(t, 15*time.Second, "every job ended", func() bool {
				c, err := dlStore(db.Client, p).Count(context.Background(), "")
				return err == nil && api.Stats().Activations == want+extra && int(c) == n-want
			})
			assertExactlyOnce(t, api, pairs[n-want:])
			if paused, _ := queuePaused(t, db); paused {
				t.Error("queue paused at the end")
			}
			testutil.WaitFor(t, 5*time.Second, "activator_queue_paused 0", func() bool { return promtest.ToFloat64(w.Metrics().QueuePaused) == 0 })
			for _, pr := range pairs[n-want:] {
				if ti := waitTaskState(t, insp, pr, asynq.TaskStateCompleted, 5*time.Second); ti.Retried != 0 {
					t.Errorf("job of %s retried %d times; waiting out a refused key must use no attempt", pr.UserID, ti.Retried)
				}
			}
			if tc.userRefused {
				e := deadLetter(t, dlStore(db.Client, p), pairs[0])
				if e.Reason != tasks.ReasonUnauthorized || e.Attempts != 1 {
					t.Errorf("dead letter of %s = reason %s after %d attempts, want unauthorized after 1", pairs[0].UserID, e.Reason, e.Attempts)
				}
				assertTaskGone(t, insp, pairs[0])
				if got := total([]*worker.Worker{w}, deadLetters, string(tasks.ReasonUnauthorized)); got != 1 {
					t.Errorf("dead_letters{reason=unauthorized} = %v, want 1", got)
				}
				if probeCalls(api, http.StatusUnauthorized, warm.UserID) != 0 && tc.unknownUser != http.StatusUnauthorized {
					t.Error("a probe was refused although the signing key is good")
				}
			}
		})
	}
}

// stateWatch samples the breaker-state gauge until stopped, recording each value it sees in order.
type stateWatch struct {
	mu   sync.Mutex
	seen []float64
	stop chan struct{}
	done chan struct{}
}

func watchBreaker(w *worker.Worker) *stateWatch {
	s := &stateWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			v := promtest.ToFloat64(w.Metrics().BreakerState)
			s.mu.Lock()
			if len(s.seen) == 0 || s.seen[len(s.seen)-1] != v {
				s.seen = append(s.seen, v)
			}
			s.mu.Unlock()
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *stateWatch) saw(v float64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.seen, v)
}

func (s *stateWatch) close() []float64 {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

// The circuit breaker: while every call fails, it opens, calls stop for each cool-down, and jobs
// wait without using attempts; once the API recovers it closes and every job activates once.
func TestPolicyCircuitBreaker(t *testing.T) {
	t.Parallel()
	const (
		n        = 30
		cooldown = time.Second
		outage   = 3 * time.Second
	)
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{Faults: versoritest.Faults{ServerErrorRate: 1}})
	pol := policyTimings
	pol.QuickRetries = 2
	w, _ := startWorker(t, db.Client, api, func(c *worker.Config) {
		c.Policy = pol
		c.Breaker = breaker.Config{Window: 5 * time.Second, MinCalls: 5, FailureRatio: 0.5, Cooldown: cooldown, Probes: 1}
	})
	watch := watchBreaker(w)
	p := producer.New(db.Client, producer.Config{Queue: queue})
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	reqs, pairs := policyRequests("u-breaker", n)
	enqueueAll(t, p, reqs...)

	testutil.WaitFor(t, 10*time.Second, "the breaker open", func() bool { return watch.saw(2) })
	time.Sleep(outage)
	faulted := api.Calls()
	api.SetFaults(versoritest.Faults{})

	testutil.WaitFor(t, 15*time.Second, "every job activated", func() bool { return api.Stats().Activations == n })
	assertExactlyOnce(t, api, pairs)
	testutil.WaitFor(t, 5*time.Second, "the breaker closed", func() bool { return promtest.ToFloat64(w.Metrics().BreakerState) == 0 })
	states := watch.close()
	t.Logf("breaker states seen (0 closed, 1 half-open, 2 open): %v", states)

	// Without a breaker each job's first attempt alone would make 1+QuickRetries calls.
	posts := countOp(faulted, versori.OpActivate)
	var times []time.Time
	for _, c := range faulted {
		times = append(times, c.At)
	}
	longest := time.Duration(0)
	for i := 1; i < len(times); i++ {
		longest = max(longest, times[i].Sub(times[i-1]))
	}
	t.Logf("during the %s+ outage: %d calls (%d POSTs); longest pause between calls %s",
		outage, len(faulted), posts, longest.Round(time.Millisecond))
	if unbroken := n * (1 + pol.QuickRetries); len(faulted) >= unbroken {
		t.Errorf("%d calls during the outage; the first attempts alone make %d without a breaker", len(faulted), unbroken)
	}
	// An open breaker lets nothing through for its cool-down; calls already past it may still land
	// a few milliseconds after it opened.
	if longest < cooldown-100*time.Millisecond {
		t.Errorf("longest pause between calls during the outage %s, want about the %s cool-down", longest, cooldown)
	}
	if got := total([]*worker.Worker{w}, attempts, string(tasks.ClassCircuitOpen)); got == 0 {
		t.Error("no attempt met the open breaker")
	}
	// Meeting the open breaker uses no attempt: a job's retries are at most its failed calls (a
	// failed call leaves the outcome unknown, and the attempt after it must look first).
	failed := map[versori.Pair]int{}
	for _, c := range api.Calls() {
		if c.Status == 0 || c.Status >= 500 {
			failed[c.Pair]++
		}
	}
	retried, untouched := 0, 0
	for _, pr := range pairs {
		ti := waitTaskState(t, insp, pr, asynq.TaskStateCompleted, 5*time.Second)
		retried += ti.Retried
		if ti.Retried > failed[pr] {
			t.Errorf("job of %s used %d retries after %d failed calls; waiting for the breaker must use none",
				pr.UserID, ti.Retried, failed[pr])
		}
		if failed[pr] == 0 {
			untouched++
		}
	}
	t.Logf("retries used: %d in all; %d of %d jobs never met a failed call", retried, untouched, n)
	if untouched == 0 {
		t.Error("every job met a failed call: the breaker stopped nothing")
	}
	if c, _ := dlStore(db.Client, p).Count(context.Background(), ""); c != 0 {
		t.Errorf("%d dead letters, want none", c)
	}
}

// A breaker that opens between a call whose outcome is unknown (a 503 the backend committed) and the
// quick retry's look-up must not make the job forget to look: its next attempt still looks first.
func TestPolicyCircuitOpenAfterUnknownOutcomeLooksFirst(t *testing.T) {
	t.Parallel()
	const n = 5
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	reqs, pairs := policyRequests("u-unknown", n)
	for _, pr := range pairs {
		// The backend commits, the gateway answers 503.
		api.Script(pr, versoritest.Fault{Status: 503, Commit: true})
	}
	// The 503s open the breaker; the jobs' retries (a settle time and a second or two later) meet it
	// open, wait out its cool-down, and look first.
	w, _ := startWorker(t, db.Client, api, func(c *worker.Config) {
		c.Policy = policyTimings
		c.Breaker = breaker.Config{Window: 5 * time.Second, MinCalls: n, FailureRatio: 0.5, Cooldown: 3 * time.Second, Probes: 1}
	})
	p := producer.New(db.Client, producer.Config{Queue: queue})
	enqueueAll(t, p, reqs...)

	insp := asynq.NewInspectorFromRedisClient(db.Client)
	for _, pr := range pairs {
		waitTaskState(t, insp, pr, asynq.TaskStateCompleted, 15*time.Second)
	}
	assertExactlyOnce(t, api, pairs)
	for _, pr := range pairs {
		calls := pairCalls(api, pr)
		if countOp(calls, versori.OpActivate) != 1 {
			t.Errorf("%s: calls %v, want one POST and look-ups", pr.UserID, callTrace(calls))
		}
	}
	if got := total([]*worker.Worker{w}, attempts, string(tasks.ClassCircuitOpen)); got == 0 {
		t.Error("no attempt met the open breaker: the case was not exercised")
	}
	if got := total([]*worker.Worker{w}, activations, "already_active"); got != n {
		t.Errorf("activations{result=already_active} = %v, want %d", got, n)
	}
}

// The maximum age: a job still failing MaxAge after it was enqueued is dead-lettered, with retries
// left.
func TestPolicyMaxAge(t *testing.T) {
	t.Parallel()
	const maxAge = time.Second
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	req := testutil.Request("u-old")
	pair := req.Pair()
	api.Script(pair, slices.Repeat([]versoritest.Fault{{Status: 503}}, 50)...)
	startWorker(t, db.Client, api, func(c *worker.Config) {
		c.Policy = policyTimings
		c.MaxAge = maxAge
	})
	const maxRetry = 25
	p := producer.New(db.Client, producer.Config{Queue: queue, MaxRetry: maxRetry})
	enqueued := time.Now()
	enqueueAll(t, p, req)

	testutil.WaitFor(t, 15*time.Second, "the dead letter", func() bool { return hasDeadLetter(dlStore(db.Client, p), pair) })
	e := deadLetter(t, dlStore(db.Client, p), pair)
	if e.Reason != tasks.ReasonRetriesExhausted || !strings.Contains(e.Error, "maximum age") {
		t.Errorf("dead letter = reason %s, error %q; want retries_exhausted naming the maximum age", e.Reason, e.Error)
	}
	if e.Attempts < 2 || e.Attempts > maxRetry {
		t.Errorf("dead-lettered after %d attempts; want after the first and before the retry limit %d", e.Attempts, maxRetry)
	}
	if age := e.FailedAt.Sub(enqueued); age <= maxAge {
		t.Errorf("dead-lettered %s after it was enqueued, not past the maximum age %s", age, maxAge)
	}
	// The last call came after the maximum age, measured by the stand-in from the enqueue.
	calls := pairCalls(api, pair)
	if last := calls[len(calls)-1].At.Sub(enqueued); last <= maxAge {
		t.Errorf("last call %s after the enqueue, within the maximum age", last)
	}
}

// The global rate limit: two workers with RateLimit 40/s, spaced for one-second windows, together
// send no more than 40 calls in any second (plus the burst of 1), and, with enough work, close to
// 40/s.
func TestPolicyGlobalRateLimit(t *testing.T) {
	t.Parallel()
	const (
		n     = 300
		rate  = 40
		burst = 1
	)
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	reqs, pairs := policyRequests("u-rate", n)
	p := producer.New(db.Client, producer.Config{Queue: queue})
	enqueueAll(t, p, reqs...)
	limit := func(c *worker.Config) { c.RateLimit, c.RateBurst, c.RateWindow = rate, burst, time.Second }
	startWorker(t, db.Client, api, limit)
	startWorker(t, db.Client, api, limit)

	testutil.WaitFor(t, 20*time.Second, "every job activated", func() bool { return api.Stats().Activations == n })
	assertExactlyOnce(t, api, pairs)
	calls := api.Calls()
	times := make([]time.Time, len(calls))
	for i, c := range calls {
		times[i] = c.At
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	busiest := window.Max(times, time.Second)
	span := times[len(times)-1].Sub(times[0])
	overall := float64(len(times)-1) / span.Seconds()
	t.Logf("%d calls over %s: %.1f/s overall; busiest 1 s window held %d (limit %d/s, burst %d)",
		len(times), span.Round(time.Millisecond), overall, busiest, rate, burst)
	if busiest > rate+burst {
		t.Errorf("a 1 s window held %d calls, more than %d/s plus the burst of %d", busiest, rate, burst)
	}
	if overall > rate*1.1 {
		t.Errorf("overall rate %.1f/s, more than 10%% over the limit %d/s", overall, rate)
	}
	// Over one-second windows slots are spaced 13% wider than the limit's own spacing (lateness and
	// jitter after Wait, see package ratelimit), and a call waking too late on a busy machine gives
	// its slot up: the rate reached stays over a tenth under the limit. Far under it would mean the
	// limiter over-throttles.
	if overall < rate*0.75 {
		t.Errorf("overall rate %.1f/s, far under the limit %d/s that 300 queued jobs should reach", overall, rate)
	}
}

// A refusal answered after the key was refused, restored and a probe accepted it again: the probe's
// fresh "accepted" must not make that job's refusal its own (a dead letter, unauthorized); the key
// refused it, so the job waits, using no attempt, and activates once. Pair b's POST is authenticated
// while the key works and answered 401 two seconds later, as a request the API refused while the
// key was revoked and whose answer came late; meanwhile pair a's 401 pauses the queue, the key is
// restored and the probe resumes it.
func TestPolicyRefusalAnsweredAfterKeyRestored(t *testing.T) {
	t.Parallel()
	for _, perUser := range []bool{false, true} {
		t.Run(map[bool]string{false: "API key", true: "JWT"}[perUser], func(t *testing.T) {
			t.Parallel()
			const keyID = "sk-test"
			key, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				t.Fatal(err)
			}
			db := testutil.Redis(t)
			opts := versoritest.Options{}
			if perUser {
				opts = versoritest.Options{SigningKeyID: keyID, PublicKey: &key.PublicKey}
			}
			api := versoritest.New(t, opts)
			pol := policyTimings
			pol.PausedWait = 300 * time.Millisecond
			startWorker(t, db.Client, api, func(c *worker.Config) {
				c.Policy = pol
				c.ProbeInterval = 100 * time.Millisecond
				if perUser {
					auth, err := versori.NewJWTAuth(keyID, key)
					if err != nil {
						t.Fatal(err)
					}
					c.PerUserAuth = true
					c.Versori.Auth = auth
				}
			})
			revoke := func(on bool) {
				switch {
				case perUser:
					api.RevokeSigningKey(on)
				case on:
					api.SetAPIKey("rotated")
				default:
					api.SetAPIKey(versoritest.DefaultAPIKey)
				}
			}
			p := producer.New(db.Client, producer.Config{Queue: queue, MaxRetry: 3})
			insp := asynq.NewInspectorFromRedisClient(db.Client)
			a, b := testutil.Request("u-late-a"), testutil.Request("u-late-b")
			api.Script(b.Pair(), versoritest.Fault{Status: http.StatusUnauthorized, Delay: 3 * time.Second})
			enqueueAll(t, p, b)
			testutil.WaitFor(t, 5*time.Second, "b's POST in flight", func() bool {
				qi, err := insp.GetQueueInfo(queue)
				return err == nil && qi.Active == 1
			})
			time.Sleep(500 * time.Millisecond) // from dequeued to authenticated by the stand-in
			revoke(true)
			enqueueAll(t, p, a)
			testutil.WaitFor(t, 5*time.Second, "the queue paused", func() bool { paused, _ := queuePaused(t, db); return paused })
			revoke(false)
			testutil.WaitFor(t, 5*time.Second, "the queue resumed", func() bool { paused, _ := queuePaused(t, db); return !paused })
			testutil.WaitFor(t, 15*time.Second, "both activated or dead-lettered", func() bool {
				c, err := dlStore(db.Client, p).Count(context.Background(), "")
				return err == nil && api.ActivationCount(a.Pair())+api.ActivationCount(b.Pair())+int(c) == 2
			})
			if hasDeadLetter(dlStore(db.Client, p), b.Pair()) {
				for _, c := range api.Calls() {
					t.Logf("%s %s %s %d", c.At.Format("05.000"), c.Op, c.Pair.UserID, c.Status)
				}
				t.Fatalf("b dead-lettered: %+v", deadLetter(t, dlStore(db.Client, p), b.Pair()))
			}
			assertExactlyOnce(t, api, []versori.Pair{a.Pair(), b.Pair()})
			if ti := waitTaskState(t, insp, b.Pair(), asynq.TaskStateCompleted, 5*time.Second); ti.Retried != 0 {
				t.Errorf("b retried %d times; a refusal of the key's must use no attempt", ti.Retried)
			}
		})
	}
}
