package worker_test

// The activation lifecycle (docs/lifecycle.md) through real in-process workers on a real Redis
// against the Versori stand-in: updates, deactivations, end users created when missing, and the
// order of the operations on each pair.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/inspect"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/pairorder"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/metrics"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
	"github.com/versori/activator/worker"
)

// opQueue enqueues operations as the producers do: each numbered in its pair's order
// (pairorder.Next), under the ticket's task id, with the ticket's number as the payload's Seq.
type opQueue struct {
	client   *asynq.Client
	order    *pairorder.Order
	maxRetry int
}

func newOpQueue(t *testing.T, rdb redis.UniversalClient, maxRetry int) *opQueue {
	t.Helper()
	c := asynq.NewClientFromRedisClient(rdb)
	return &opQueue{client: c, order: pairorder.New(rdb), maxRetry: maxRetry}
}

// enqueue queues op on req's pair and returns its ticket, and whether a job was queued (false: the
// operation repeats the pair's last one, whose task is still there).
func (q *opQueue) enqueue(t *testing.T, op tasks.Op, req versori.ActivationRequest, eu *tasks.EndUser) (pairorder.Ticket, bool) {
	t.Helper()
	ctx := context.Background()
	tk, err := q.order.Next(ctx, op, []versori.Pair{req.Pair()})
	if err != nil {
		t.Fatal(err)
	}
	p := tasks.Payload{Request: req, Op: op, Seq: tk[0].Seq, EndUser: eu, EnqueuedAt: time.Now().UTC(), MaxRetry: q.maxRetry}
	task, err := tasks.NewTask(p, asynq.Queue(queue), asynq.Retention(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	_, err = q.client.EnqueueContext(ctx, task)
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		return tk[0], false
	case err != nil:
		t.Fatal(err)
	}
	return tk[0], true
}

// waitDone waits until the job with task id is completed.
func waitDone(t *testing.T, insp *asynq.Inspector, id string, timeout time.Duration) {
	t.Helper()
	testutil.WaitFor(t, timeout, "job "+id+" completed", func() bool {
		ti, err := insp.GetTaskInfo(queue, id)
		return err == nil && ti.State == asynq.TaskStateCompleted
	})
}

// waitQueueEmpty waits until the queue has no job left to run and the stand-in no commit to come.
func waitQueueEmpty(t *testing.T, rdb redis.UniversalClient, api *versoritest.Server, timeout time.Duration) {
	t.Helper()
	testutil.WaitFor(t, timeout, "every job finished", func() bool {
		return testutil.Unfinished(t, rdb, queue) == 0 && api.PendingCommits() == 0
	})
}

func result(ws []*worker.Worker, r string) float64 { return total(ws, activations, r) }

// TestDeactivate: a deactivation deletes every activation the pair has, and finds an inactive pair
// already inactive, through the turn the pair's order gives it.
func TestDeactivate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		seeded int // activations the pair has before
		faults []versoritest.Fault
		want   string
		trace  []string
	}{
		{"active", 1, nil, metrics.ResultDeactivated, []string{"list_activations 200", "delete_activation 204"}},
		{"inactive", 0, nil, metrics.ResultAlreadyInactive, []string{"list_activations 200"}},
		{"activated twice", 2, nil, metrics.ResultDeactivated, []string{"list_activations 200", "delete_activation 204", "delete_activation 204"}},
		// The DELETE committed, its answer lost: the retry, once the API has settled, finds none.
		{"answer lost after commit", 1, []versoritest.Fault{{Commit: true, Drop: true}}, metrics.ResultDeactivated,
			[]string{"list_activations 200", "delete_activation 0", "list_activations 200"}},
		{"503 after commit", 1, []versoritest.Fault{{Status: 503, Commit: true}}, metrics.ResultDeactivated,
			[]string{"list_activations 200", "delete_activation 503", "list_activations 200"}},
		{"503 not committed", 1, []versoritest.Fault{{Status: 503}}, metrics.ResultDeactivated,
			[]string{"list_activations 200", "delete_activation 503", "list_activations 200", "delete_activation 204"}},
		{"unknown user", 0, nil, metrics.ResultAlreadyInactive, []string{"list_activations 404", "get_end_user 404"}},
	}
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	w, _ := startWorker(t, db.Client, api, withPolicy(policyTimings))
	q := newOpQueue(t, db.Client, 5)
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := testutil.Request(fmt.Sprintf("u-deactivate-%d", i))
			for range tt.seeded {
				api.Seed(req.Pair())
			}
			if tt.seeded == 0 && tt.trace[0] == "list_activations 404" {
				api.RequireKnownUsers(true)
				defer api.RequireKnownUsers(false)
			}
			api.ScriptOp(versori.OpDeleteActivation, req.Pair(), tt.faults...)
			before := result([]*worker.Worker{w}, tt.want)
			tk, ok := q.enqueue(t, tasks.OpDeactivate, req, nil)
			if !ok || tk.Seq != 1 {
				t.Fatalf("deactivation ticket %+v, queued %v; want seq 1", tk, ok)
			}
			waitDone(t, insp, tk.TaskID, 20*time.Second)
			if n := api.ActivationCount(req.Pair()); n != 0 {
				t.Errorf("pair has %d activations, want none", n)
			}
			if got := callTrace(userCalls(api, req.UserID)); fmt.Sprint(got) != fmt.Sprint(tt.trace) {
				t.Errorf("calls = %v, want %v", got, tt.trace)
			}
			if got := result([]*worker.Worker{w}, tt.want) - before; got != 1 {
				t.Errorf("activations{result=%s} rose by %v, want 1", tt.want, got)
			}
		})
	}
}

// TestRequeueSuperseded: a dead letter keeps its operation, number and task id; requeued (by id or
// from a corrected file) after a later operation on its pair was enqueued, it ends superseded and
// makes no call; requeued with nothing later, it runs its operation.
func TestRequeueSuperseded(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		fromFile  bool
		later     bool // a deactivation is enqueued after the dead letter
		wantCalls int  // activate calls after the requeue
	}{
		{"by id, superseded", false, true, 0},
		{"from a file, superseded", true, true, 0},
		{"by id, nothing later", false, false, 1},
		{"from a file, nothing later", true, false, 1},
	}
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	api.RequireConnection(billingIntegration, billingTemplate)
	w, _ := startWorker(t, db.Client, api, withPolicy(policyTimings))
	q := newOpQueue(t, db.Client, 3)
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	in := inspect.New(db.Client, producer.Config{Queue: queue})
	store := deadletter.NewStore(db.Client, queue)
	ctx := context.Background()
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Billing needs a connection the request lacks: missing_connections.
			req := versori.ActivationRequest{UserID: fmt.Sprintf("u-requeue-%d", i), IntegrationID: billingIntegration,
				DynamicVariables: json.RawMessage(`{"plan":"gold"}`)}
			eu := &tasks.EndUser{DisplayName: "Requeued"}
			// An update (op 1 of the pair), so that the dead letter has an op: task id.
			tk, _ := q.enqueue(t, tasks.OpUpdate, req, eu)
			testutil.WaitFor(t, 20*time.Second, "dead letter", func() bool {
				has, err := store.Has(ctx, []string{tk.TaskID})
				return err == nil && has[0]
			})
			es, err := store.Get(ctx, tk.TaskID)
			if err != nil || len(es) != 1 {
				t.Fatalf("dead letter %s: %v, %v", tk.TaskID, es, err)
			}
			if e := es[0]; e.Op != tasks.OpUpdate || e.Seq != tk.Seq || e.EndUser == nil || e.EndUser.DisplayName != "Requeued" ||
				e.Reason != tasks.ReasonMissingConnections {
				t.Fatalf("dead letter = %+v; want op update, seq %d, its end user, missing_connections", e, tk.Seq)
			}
			if tt.later {
				later, ok := q.enqueue(t, tasks.OpDeactivate, req, nil)
				if !ok || later.Seq <= tk.Seq {
					t.Fatalf("later ticket %+v", later)
				}
				waitDone(t, insp, later.TaskID, 20*time.Second)
			}
			api.ClearRequirements(billingIntegration)
			defer api.RequireConnection(billingIntegration, billingTemplate)
			superseded := result([]*worker.Worker{w}, metrics.ResultSuperseded)
			posts := countOp(pairCalls(api, req.Pair()), versori.OpActivate)
			if tt.fromFile {
				path := testutil.WriteJSONL(t, filepath.Join(t.TempDir(), "fixed.jsonl"), req)
				sum, err := in.RequeueFile(ctx, inspect.RequeueFileOptions{Path: path})
				if err != nil || sum.Requeued != 1 {
					t.Fatalf("RequeueFile = %+v, %v", sum, err)
				}
			} else {
				res, err := in.Requeue(ctx, []string{tk.TaskID})
				if err != nil || len(res.Requeued) != 1 {
					t.Fatalf("Requeue = %+v, %v", res, err)
				}
			}
			// The same operation under the same task id.
			waitDone(t, insp, tk.TaskID, 20*time.Second)
			ti, err := insp.GetTaskInfo(queue, tk.TaskID)
			if err != nil {
				t.Fatal(err)
			}
			p, err := tasks.DecodePayload(ti.Payload)
			if err != nil || p.Op != tasks.OpUpdate || p.Seq != tk.Seq || p.EndUser == nil || !p.Reconcile {
				t.Fatalf("requeued payload = %+v, %v; want the update, seq %d, its end user, looking first", p, err, tk.Seq)
			}
			if got := countOp(pairCalls(api, req.Pair()), versori.OpActivate) - posts; got != tt.wantCalls {
				t.Errorf("%d activate calls after the requeue, want %d", got, tt.wantCalls)
			}
			wantSuperseded, wantActive := 0.0, 1
			if tt.later {
				wantSuperseded, wantActive = 1, 0
			}
			if got := result([]*worker.Worker{w}, metrics.ResultSuperseded) - superseded; got != wantSuperseded {
				t.Errorf("activations{result=superseded} rose by %v, want %v", got, wantSuperseded)
			}
			if n := api.ActivationCount(req.Pair()); n != wantActive {
				t.Errorf("pair has %d activations, want %d", n, wantActive)
			}
		})
	}
}

// lifecycleOps are the operations TestOrderPerPair draws from.
var lifecycleOps = []tasks.Op{tasks.OpActivate, tasks.OpUpdate, tasks.OpDeactivate}

// TestOrderPerPair: operations on many pairs, enqueued in random order close together, end each pair
// in the state of the operation enqueued last, with no pair activated twice, against a slow and
// faulty stand-in and two workers. Enqueued all before any worker runs, every job but each pair's
// last is superseded and makes no call.
func TestOrderPerPair(t *testing.T) {
	t.Parallel()
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 7))
	const nPairs = 24
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{Seed: seed})
	q := newOpQueue(t, db.Client, 20)
	reqs := make([]versori.ActivationRequest, nPairs)
	for i := range reqs {
		reqs[i] = testutil.Request(fmt.Sprintf("u-order-%02d", i))
		if i%3 == 0 {
			api.Seed(reqs[i].Pair()) // active before
		}
	}
	// last is each pair's operation numbered last: what the pair must end as.
	last := map[versori.Pair]tasks.Op{}
	queued := 0
	enqueue := func(i int, op tasks.Op) {
		req := reqs[i]
		req.DynamicVariables = json.RawMessage(fmt.Sprintf(`{"n":%d}`, rng.IntN(1000)))
		if _, ok := q.enqueue(t, op, req, nil); ok {
			queued++
		}
		prev, seen := last[req.Pair()]
		// A repeat (activate after activate or update, deactivate after deactivate) takes the last
		// operation's ticket: the pair's state is then that one's.
		repeat := seen && ((op == tasks.OpActivate && (prev == tasks.OpActivate || prev == tasks.OpUpdate)) || (op == tasks.OpDeactivate && prev == tasks.OpDeactivate))
		if !repeat {
			last[req.Pair()] = op
		}
	}

	// Phase 1: everything queued before any worker runs.
	for range 3 * nPairs {
		enqueue(rng.IntN(nPairs), lifecycleOps[rng.IntN(len(lifecycleOps))])
	}
	api.SetFaults(versoritest.Faults{Latency: 10 * time.Millisecond})
	var ws []*worker.Worker
	for range 2 {
		w, _ := startWorker(t, db.Client, api, func(c *worker.Config) {
			c.Policy = policyTimings
			c.Concurrency = 8
		})
		ws = append(ws, w)
	}
	waitQueueEmpty(t, db.Client, api, 90*time.Second)
	ended := 0.0
	for _, r := range metrics.Results() {
		ended += result(ws, r)
	}
	if int(ended) != queued {
		t.Errorf("%v jobs ended, want the %d queued", ended, queued)
	}
	if got, want := int(result(ws, metrics.ResultSuperseded)), queued-len(last); got != want {
		t.Errorf("%d jobs superseded, want %d (all but each pair's last)", got, want)
	}
	checkPairs := func(phase string) {
		t.Helper()
		if d := api.Duplicates(); len(d) > 0 {
			t.Errorf("%s: %d pairs activated more than once, e.g. %+v", phase, len(d), d[0])
		}
		for p, op := range last {
			want := 1
			if op == tasks.OpDeactivate {
				want = 0
			}
			if n := api.ActivationCount(p); n != want {
				t.Errorf("%s: pair %s ends with %d activations, want %d (last operation %s)", phase, p.UserID, n, want, op)
			}
		}
		_ = deadletter.NewStore(db.Client, queue).Each(context.Background(), "", func(e deadletter.Entry) error {
			t.Errorf("%s: dead letter %s (%s, %s): %s", phase, e.ID, e.Op, e.Reason, e.Error)
			return nil
		})
	}
	checkPairs("queued before the workers")
	// Each pair's calls are its last operation's only: a deactivated pair saw no POST, an activated
	// one no DELETE.
	for p, op := range last {
		calls := pairCalls(api, p)
		if op == tasks.OpDeactivate && countOp(calls, versori.OpActivate) > 0 {
			t.Errorf("pair %s, last deactivated, saw an activate call: %v", p.UserID, callTrace(calls))
		}
		if op != tasks.OpDeactivate && countOp(calls, versori.OpDeleteActivation) > 0 {
			t.Errorf("pair %s, last %s, saw a delete call: %v", p.UserID, op, callTrace(calls))
		}
	}
	if t.Failed() {
		return
	}

	// Phase 2: operations enqueued while the workers run, against a slow and faulty stand-in.
	api.SetFaults(versoritest.Faults{Latency: 20 * time.Millisecond, ServerErrorRate: 0.1, DropAfterCommitRate: 0.05,
		LateCommitRate: 0.05, LateCommitDelay: 200 * time.Millisecond, WriteOps: versoritest.AllWriteOps})
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 2 {
		wg.Go(func() {
			for range 2 * nPairs {
				mu.Lock()
				enqueue((rng.IntN(nPairs)+g)%nPairs, lifecycleOps[rng.IntN(len(lifecycleOps))])
				pause := time.Duration(rng.IntN(30)) * time.Millisecond
				mu.Unlock()
				time.Sleep(pause)
			}
		})
	}
	wg.Wait()
	waitQueueEmpty(t, db.Client, api, 3*time.Minute)
	checkPairs("queued while the workers ran")
}

// userCalls is the stand-in's record of the calls about user, every integration's and the user's
// own, in arrival order.
func userCalls(api *versoritest.Server, user string) []versoritest.Call {
	var out []versoritest.Call
	for _, c := range api.Calls() {
		if c.Pair.UserID == user {
			out = append(out, c)
		}
	}
	return out
}

// sameJSON reports whether a and b hold the same JSON value.
func sameJSON(a, b json.RawMessage) bool {
	var x, y any
	return json.Unmarshal(a, &x) == nil && json.Unmarshal(b, &y) == nil && fmt.Sprint(x) == fmt.Sprint(y)
}

// primaryCredentials are the credentials of the end users the tests create.
const primaryCredentials = `{"token":"PRIMARY-CONNECTION-SECRET"}`

func newEndUser(name string) *tasks.EndUser {
	return &tasks.EndUser{DisplayName: name, PrimaryConnection: &versori.ConnectionCreate{
		Name: "primary", Credentials: json.RawMessage(primaryCredentials), Variables: []versori.ConnectionVariable{}}}
}

// TestEndUserCreatedWhenMissing: a job whose end user the API does not know creates them (looking
// them up first, every attempt) and activates in the same attempt; a create whose answer is lost
// or that commits late never makes a second user, and the pair is activated once. Without endUser,
// or when the user exists and the 404 was about the integration, the job is a not_found dead letter
// and creates no one.
func TestEndUserCreatedWhenMissing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		noEndUser bool
		knownUser bool // the user exists; the integration does not
		sealed    bool // the end user's credentials are sealed in the payload
		faults    []versoritest.Fault
		want      []string // the calls about the user
		dead      bool
		// unseen: the create's answer was lost, so the job cannot tell it created the user, and
		// counts no creation.
		unseen bool
	}{
		{name: "created", want: []string{"activate 404", "get_end_user 404", "create_end_user 201", "activate 200"}},
		{name: "created, credentials sealed", sealed: true,
			want: []string{"activate 404", "get_end_user 404", "create_end_user 201", "activate 200"}},
		{name: "create answer lost after commit", unseen: true, faults: []versoritest.Fault{{Commit: true, Drop: true}},
			want: []string{"activate 404", "get_end_user 404", "create_end_user 0", "list_activations 200", "activate 200"}},
		{name: "create 503 after commit", unseen: true, faults: []versoritest.Fault{{Status: 503, Commit: true}},
			want: []string{"activate 404", "get_end_user 404", "create_end_user 503", "list_activations 200", "activate 200"}},
		{name: "create committed after its 504", unseen: true, faults: []versoritest.Fault{{Status: 504, CommitAfter: 200 * time.Millisecond}},
			want: []string{"activate 404", "get_end_user 404", "create_end_user 504", "list_activations 200", "activate 200"}},
		{name: "create 503, not committed", faults: []versoritest.Fault{{Status: 503}},
			want: []string{"activate 404", "get_end_user 404", "create_end_user 503", "list_activations 404", "get_end_user 404",
				"create_end_user 201", "activate 200"}},
		{name: "no endUser", noEndUser: true, want: []string{"activate 404"}, dead: true},
		{name: "user exists, integration unknown", knownUser: true, want: []string{"activate 404", "get_end_user 200", "activate 404"}, dead: true},
	}
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	api.RequireKnownUsers(true)
	keys, err := tasks.ParseKeyring("a:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32))))
	if err != nil {
		t.Fatal(err)
	}
	w, _ := startWorker(t, db.Client, api, func(c *worker.Config) {
		c.Policy = policyTimings
		c.Keys = keys
	})
	q := newOpQueue(t, db.Client, 5)
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	store := deadletter.NewStore(db.Client, queue)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user := fmt.Sprintf("u-new-%d", i)
			req := testutil.Request(user)
			if tt.knownUser {
				api.AddUser(user)
				req.IntegrationID = fmt.Sprintf("01JDXX%020d", i)
				api.ForgetIntegration(req.IntegrationID)
			}
			api.ScriptOp(versori.OpCreateEndUser, versori.Pair{UserID: user}, tt.faults...)
			var eu *tasks.EndUser
			if !tt.noEndUser {
				eu = newEndUser("New " + user)
			}
			created := promtest.ToFloat64(w.Metrics().EndUsersCreated)
			tk := tasks.TaskIDAt(req.Pair(), 0)
			if tt.sealed {
				p := tasks.Payload{Request: req, EndUser: eu, EnqueuedAt: time.Now().UTC(), MaxRetry: 5}
				if err := p.Seal(keys); err != nil || p.Secrets == "" {
					t.Fatalf("Seal = %v, secrets %q", err, p.Secrets)
				}
				task, err := tasks.NewTask(p, asynq.Queue(queue), asynq.Retention(time.Hour))
				if err != nil {
					t.Fatal(err)
				}
				if _, err := q.client.Enqueue(task); err != nil {
					t.Fatal(err)
				}
			} else {
				q.enqueue(t, tasks.OpActivate, req, eu)
			}
			if tt.dead {
				testutil.WaitFor(t, 20*time.Second, "dead letter", func() bool {
					has, err := store.Has(context.Background(), []string{tk})
					return err == nil && has[0]
				})
				e := deadLetter(t, store, req.Pair())
				if e.Reason != tasks.ReasonNotFound {
					t.Errorf("dead letter reason %s, want not_found", e.Reason)
				}
				// The end user's plaintext credentials are sealed in the dead letter, as the request's are.
				if eu != nil && (e.EndUser == nil || tasks.EndUserHasCredentials(e.EndUser) || tasks.SecretKeyID(e.Secrets) != "a") {
					t.Errorf("dead letter keeps end user %+v, secrets %q; want them sealed with key a", e.EndUser, e.Secrets)
				}
			} else {
				waitDone(t, insp, tk, 20*time.Second)
			}
			waitQueueEmpty(t, db.Client, api, 10*time.Second)
			if got := callTrace(userCalls(api, user)); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("calls = %v, want %v", got, tt.want)
			}
			wantUsers, wantActive, wantCreated := 1, 1, 1.0
			if tt.dead {
				wantActive, wantCreated = 0, 0
				if !tt.knownUser {
					wantUsers = 0
				}
			}
			if tt.knownUser {
				wantUsers = 0 // AddUser is not a create
			}
			if tt.unseen {
				wantCreated = 0
			}
			if n := api.UserCreates(user); n != wantUsers {
				t.Errorf("user created %d times, want %d", n, wantUsers)
			}
			if n := api.ActivationCount(req.Pair()); n != wantActive {
				t.Errorf("pair has %d activations, want %d", n, wantActive)
			}
			if got := promtest.ToFloat64(w.Metrics().EndUsersCreated) - created; got != wantCreated {
				t.Errorf("activator_end_users_created_total rose by %v, want %v", got, wantCreated)
			}
			for _, c := range userCalls(api, user) {
				if c.Op == versori.OpCreateEndUser && c.Status == 201 && c.Credentials != "["+primaryCredentials+"]" {
					t.Errorf("the create sent credentials %s, want [%s]", c.Credentials, primaryCredentials)
				}
			}
		})
	}
}

// TestEndUserCreatedOnceForManyIntegrations: one new user's activations of several integrations,
// run at once, create the user once (the others find them, or are told they exist: 409) and
// activate each pair once, also when creates' answers are lost.
func TestEndUserCreatedOnceForManyIntegrations(t *testing.T) {
	t.Parallel()
	const nIntegrations = 6
	tests := []struct {
		name   string
		faults versoritest.Faults
	}{
		{"no faults", versoritest.Faults{Latency: 5 * time.Millisecond}},
		{"lost answers", versoritest.Faults{Latency: 5 * time.Millisecond, DropAfterCommitRate: 0.3, ServerErrorRate: 0.2,
			WriteOps: versoritest.WriteOps{CreateEndUser: true}}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := testutil.Redis(t)
			api := versoritest.New(t, versoritest.Options{Faults: tt.faults, Seed: int64(i + 1)})
			api.RequireKnownUsers(true)
			w, _ := startWorker(t, db.Client, api, withPolicy(policyTimings))
			q := newOpQueue(t, db.Client, 10)
			user := fmt.Sprintf("u-many-%d", i)
			var pairs []versori.Pair
			for n := range nIntegrations {
				req := testutil.Request(user)
				req.IntegrationID = fmt.Sprintf("01JDXX%020d", n)
				pairs = append(pairs, req.Pair())
				q.enqueue(t, tasks.OpActivate, req, newEndUser("Many"))
			}
			waitQueueEmpty(t, db.Client, api, 60*time.Second)
			if n := api.UserCreates(user); n != 1 {
				t.Errorf("user created %d times, want 1", n)
			}
			assertExactlyOnce(t, api, pairs)
			if got := result([]*worker.Worker{w}, metrics.ResultActivated) + result([]*worker.Worker{w}, metrics.ResultAlreadyActive); got != nIntegrations {
				t.Errorf("%v jobs ended active, want %d", got, nIntegrations)
			}
			if got := promtest.ToFloat64(w.Metrics().EndUsersCreated); got < 1 || got > nIntegrations {
				t.Errorf("activator_end_users_created_total = %v, want 1 to %d", got, nIntegrations)
			}
		})
	}
}

// TestUpdateVariables: an update activates an inactive pair with the request's variables, and sets
// an active one's; a PUT whose answer is lost is sent again; an update enqueued after one whose PUT
// may still land waits for it, so that the pair ends with the later update's variables.
func TestUpdateVariables(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		active bool
		faults []versoritest.Fault // for the PUT
		then   bool                // a second update follows the first's first PUT
		want   string
		trace  []string
	}{
		{name: "inactive", want: metrics.ResultActivated, trace: []string{"list_activations 200", "activate 200"}},
		{name: "active", active: true, want: metrics.ResultVariablesUpdated, trace: []string{"list_activations 200", "update_variables 200"}},
		{name: "answer lost after commit", active: true, faults: []versoritest.Fault{{Commit: true, Drop: true}},
			want: metrics.ResultVariablesUpdated, trace: []string{"list_activations 200", "update_variables 0", "list_activations 200", "update_variables 200"}},
		{name: "503 not committed", active: true, faults: []versoritest.Fault{{Status: 503}},
			want: metrics.ResultVariablesUpdated, trace: []string{"list_activations 200", "update_variables 503", "list_activations 200", "update_variables 200"}},
		{name: "a later update while the first's PUT may land", active: true, then: true,
			faults: []versoritest.Fault{{Status: 504, CommitAfter: 300 * time.Millisecond}},
			want:   metrics.ResultVariablesUpdated, trace: []string{"list_activations 200", "update_variables 504", "list_activations 200", "update_variables 200"}},
	}
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	w, _ := startWorker(t, db.Client, api, withPolicy(policyTimings))
	q := newOpQueue(t, db.Client, 5)
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := testutil.Request(fmt.Sprintf("u-update-%d", i))
			if tt.active {
				api.Seed(req.Pair())
			}
			api.ScriptOp(versori.OpUpdateVariables, req.Pair(), tt.faults...)
			before := result([]*worker.Worker{w}, tt.want)
			superseded := result([]*worker.Worker{w}, metrics.ResultSuperseded)
			req.DynamicVariables = json.RawMessage(`{"plan":"gold","n":1}`)
			tk, _ := q.enqueue(t, tasks.OpUpdate, req, nil)
			if tt.then {
				testutil.WaitFor(t, 10*time.Second, "the first PUT", func() bool {
					return countOp(pairCalls(api, req.Pair()), versori.OpUpdateVariables) > 0
				})
				req.DynamicVariables = json.RawMessage(`{"plan":"platinum","n":2}`)
				if tk, _ = q.enqueue(t, tasks.OpUpdate, req, nil); tk.Seq != 2 {
					t.Fatalf("second update's ticket %+v, want seq 2", tk)
				}
			}
			waitDone(t, insp, tk.TaskID, 20*time.Second)
			waitQueueEmpty(t, db.Client, api, 10*time.Second)
			if got := callTrace(pairCalls(api, req.Pair())); fmt.Sprint(got) != fmt.Sprint(tt.trace) {
				t.Errorf("calls = %v, want %v", got, tt.trace)
			}
			if vars, ok := api.Variables(req.Pair()); !ok || !sameJSON(vars, req.DynamicVariables) {
				t.Errorf("the pair holds variables %s (active %v), want %s", vars, ok, req.DynamicVariables)
			}
			if n := api.ActivationCount(req.Pair()); n != 1 {
				t.Errorf("pair has %d activations, want 1", n)
			}
			if got := result([]*worker.Worker{w}, tt.want) - before; got != 1 {
				t.Errorf("activations{result=%s} rose by %v, want 1", tt.want, got)
			}
			wantSuperseded := 0.0
			if tt.then {
				wantSuperseded = 1
			}
			if got := result([]*worker.Worker{w}, metrics.ResultSuperseded) - superseded; got != wantSuperseded {
				t.Errorf("activations{result=superseded} rose by %v, want %v", got, wantSuperseded)
			}
		})
	}
}

// TestLifecycleThroughProducer: the vendor's producer queues each operation (the end user's
// credentials sealed), the workers run them, and the batch counts every result by its name.
func TestLifecycleThroughProducer(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	api.RequireKnownUsers(true)
	keys, err := tasks.ParseKeyring("a:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("p", 32))))
	if err != nil {
		t.Fatal(err)
	}
	startWorker(t, db.Client, api, func(c *worker.Config) {
		c.Policy = policyTimings
		c.Keys = keys
	})
	p := producer.New(db.Client, producer.Config{Queue: queue, Keys: keys})
	ctx := context.Background()
	const batchID = "lifecycle"
	enq := func(req versori.ActivationRequest, opts ...producer.Option) {
		t.Helper()
		res, err := p.Enqueue(ctx, req, append(opts, producer.WithBatch(batchID))...)
		if err != nil || res.Status != producer.Enqueued {
			t.Fatalf("Enqueue(%s) = %+v, %v", req.UserID, res, err)
		}
	}
	newUser := testutil.Request("u-prod-new")
	enq(newUser, producer.WithEndUser(*newEndUser("Producer")))
	updated := testutil.Request("u-prod-update")
	api.Seed(updated.Pair())
	updated.DynamicVariables = json.RawMessage(`{"tier":2}`)
	enq(updated, producer.Update())
	gone := testutil.Request("u-prod-gone")
	api.Seed(gone.Pair())
	enq(gone, producer.Deactivate())
	never := testutil.Request("u-prod-never")
	api.AddUser(never.UserID)
	enq(never, producer.Deactivate())
	waitQueueEmpty(t, db.Client, api, 30*time.Second)

	in := inspect.New(db.Client, producer.Config{Queue: queue})
	var st inspect.BatchStatus
	testutil.WaitFor(t, 10*time.Second, "the batch's counts", func() bool {
		st, err = in.Batch(ctx, batchID)
		return err == nil && st.Done == 4
	})
	if st.Activated != 1 || st.CreatedUser != 1 || st.VariablesUpdated != 1 || st.Deactivated != 1 || st.AlreadyInactive != 1 || len(st.DeadLetters) != 0 {
		t.Errorf("batch status = %+v", st)
	}
	if api.UserCreates(newUser.UserID) != 1 || api.ActivationCount(newUser.Pair()) != 1 || api.ActivationCount(gone.Pair()) != 0 {
		t.Errorf("the new user created %d times with %d activations; the deactivated pair has %d",
			api.UserCreates(newUser.UserID), api.ActivationCount(newUser.Pair()), api.ActivationCount(gone.Pair()))
	}
	if vars, _ := api.Variables(updated.Pair()); !sameJSON(vars, updated.DynamicVariables) {
		t.Errorf("updated pair holds %s", vars)
	}
	for _, c := range userCalls(api, newUser.UserID) {
		if c.Op == versori.OpCreateEndUser && c.Credentials != "["+primaryCredentials+"]" {
			t.Errorf("the create sent credentials %s", c.Credentials)
		}
	}
}
