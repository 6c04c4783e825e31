package worker_test

// The activation lifecycle (docs/lifecycle.md) through real in-process workers on a real Redis
// against the Versori stand-in: updates, deactivations, end users created when missing, and the
// order of the operations on each pair.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
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
		want   string
		trace  []string
	}{
		{"active", 1, metrics.ResultDeactivated, []string{"list_activations 200", "delete_activation 204"}},
		{"inactive", 0, metrics.ResultAlreadyInactive, []string{"list_activations 200"}},
		{"activated twice", 2, metrics.ResultDeactivated, []string{"list_activations 200", "delete_activation 204", "delete_activation 204"}},
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
			before := result([]*worker.Worker{w}, tt.want)
			tk, ok := q.enqueue(t, tasks.OpDeactivate, req, nil)
			if !ok || tk.Seq != 1 {
				t.Fatalf("deactivation ticket %+v, queued %v; want seq 1", tk, ok)
			}
			waitDone(t, insp, tk.TaskID, 20*time.Second)
			if n := api.ActivationCount(req.Pair()); n != 0 {
				t.Errorf("pair has %d activations, want none", n)
			}
			if got := callTrace(pairCalls(api, req.Pair())); fmt.Sprint(got) != fmt.Sprint(tt.trace) {
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
		LateCommitRate: 0.05, LateCommitDelay: 200 * time.Millisecond})
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
