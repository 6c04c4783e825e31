package worker_test

// Attacks on the lifecycle's guarantees (docs/lifecycle.md, "What you can rely on"): each test is a
// way a flaky network or a hostile scheduler could break exactly-once or the order per pair.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/metrics"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
	"github.com/versori/activator/worker"
)

// listGateway is a gateway in front of the stand-in that answers the next n activations lists of
// user (fail), or the next n look-ups of the end user (failUser), 404, as a misrouted gateway does:
// the 404 says nothing about the user.
type listGateway struct {
	mu       sync.Mutex
	left     map[string]int
	userLeft map[string]int
}

func newListGateway(t *testing.T, api *versoritest.Server) (*listGateway, string) {
	t.Helper()
	target, err := url.Parse(api.URL())
	if err != nil {
		t.Fatal(err)
	}
	g := &listGateway{left: map[string]int{}, userLeft: map[string]int{}}
	proxy := httputil.NewSingleHostReverseProxy(target)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
		var counts map[string]int
		var user string
		switch {
		case r.Method != http.MethodGet || len(segs) < 4:
		case segs[len(segs)-1] == "activations" && segs[len(segs)-3] == "users":
			counts = g.left
			user, _ = url.PathUnescape(segs[len(segs)-2])
		case segs[len(segs)-2] == "users" && segs[len(segs)-4] == "hubs":
			counts = g.userLeft
			user, _ = url.PathUnescape(segs[len(segs)-1])
		}
		if counts != nil {
			g.mu.Lock()
			n := counts[user]
			if n > 0 {
				counts[user] = n - 1
			}
			g.mu.Unlock()
			if n > 0 {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusNotFound)
				fmt.Fprint(w, `{"message":"no route"}`)
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	return g, ts.URL
}

func (g *listGateway) fail(user string, n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.left[user] += n
}

func (g *listGateway) failUser(user string, n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.userLeft[user] += n
}

// TestAttackUpdateListGateway404: an update's first attempt whose look-up a gateway answers 404,
// on a pair that is active (its activation ran before). The API knows the user, so the 404 says
// nothing about the pair: the update must not POST a second activation.
func TestAttackUpdateListGateway404(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	gw, gwURL := newListGateway(t, api)
	startWorker(t, db.Client, api, func(c *worker.Config) {
		c.Policy = policyTimings
		c.Versori.BaseURL = gwURL
	})
	q := newOpQueue(t, db.Client, 5)
	insp := asynq.NewInspectorFromRedisClient(db.Client)

	req := testutil.Request("u-attack-update-404")
	if tk, ok := q.enqueue(t, tasks.OpActivate, req, nil); !ok || tk.Seq != 0 {
		t.Fatalf("activation ticket %+v, queued %v", tk, ok)
	} else {
		waitDone(t, insp, tk.TaskID, 20*time.Second)
	}
	gw.fail(req.UserID, 1)
	req.DynamicVariables = json.RawMessage(`{"plan":"gold"}`)
	tk, ok := q.enqueue(t, tasks.OpUpdate, req, nil)
	if !ok {
		t.Fatalf("update ticket %+v not queued", tk)
	}
	waitQueueEmpty(t, db.Client, api, 20*time.Second)
	if n := api.ActivationCount(req.Pair()); n != 1 {
		t.Errorf("pair has %d activations after its update, want 1 (calls %v)", n, callTrace(pairCalls(api, req.Pair())))
	}
	if vars, ok := api.Variables(req.Pair()); !ok || !sameJSON(vars, req.DynamicVariables) {
		t.Errorf("the pair holds variables %s (active %v), want %s", vars, ok, req.DynamicVariables)
	}
}

// TestAttackEndUserConflictAfterGateway404s: a job that may create its end user finds the pair's
// list and the user's look-up both answered 404 by a gateway; the create then says the user exists
// (409). The user existed all along, so the list's 404 said nothing about the pair, which is active:
// the job must not POST a second activation.
func TestAttackEndUserConflictAfterGateway404s(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	gw, gwURL := newListGateway(t, api)
	startWorker(t, db.Client, api, func(c *worker.Config) {
		c.Policy = policyTimings
		c.Versori.BaseURL = gwURL
	})
	q := newOpQueue(t, db.Client, 5)

	req := testutil.Request("u-attack-user-409")
	api.AddUser(req.UserID)
	api.Seed(req.Pair())
	gw.fail(req.UserID, 1)
	gw.failUser(req.UserID, 1)
	req.DynamicVariables = json.RawMessage(`{"plan":"gold"}`)
	if tk, ok := q.enqueue(t, tasks.OpUpdate, req, newEndUser("Ada")); !ok {
		t.Fatalf("update ticket %+v not queued", tk)
	}
	waitQueueEmpty(t, db.Client, api, 20*time.Second)
	if n := api.ActivationCount(req.Pair()); n != 1 {
		t.Errorf("pair has %d activations after its update, want 1 (calls %v)", n, callTrace(pairCalls(api, req.Pair())))
	}
	if n := api.UserCreates(req.UserID); n != 0 {
		t.Errorf("user created %d times, want 0 (they existed)", n)
	}
	if vars, ok := api.Variables(req.Pair()); !ok || !sameJSON(vars, req.DynamicVariables) {
		t.Errorf("the pair holds variables %s (active %v), want %s", vars, ok, req.DynamicVariables)
	}
}

// TestAttackDeleteGateway404: a deactivation's DELETE is answered 404 by a gateway (the activation
// is still there). A 404 on DELETE reads as "gone already", but the pair must end inactive: the
// deactivation was the last operation enqueued.
func TestAttackDeleteGateway404(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	startWorker(t, db.Client, api, withPolicy(policyTimings))
	q := newOpQueue(t, db.Client, 5)

	req := testutil.Request("u-attack-delete-404")
	api.Seed(req.Pair())
	api.ScriptOp(versori.OpDeleteActivation, req.Pair(), versoritest.Fault{Status: http.StatusNotFound})
	if tk, ok := q.enqueue(t, tasks.OpDeactivate, req, nil); !ok {
		t.Fatalf("deactivation ticket %+v not queued", tk)
	}
	waitQueueEmpty(t, db.Client, api, 20*time.Second)
	if n := api.ActivationCount(req.Pair()); n != 0 {
		t.Errorf("pair has %d activations after its deactivation, want none (calls %v)", n, callTrace(pairCalls(api, req.Pair())))
	}
}

// TestAttackUpdateConflict: an update's look-up finds no activation (a list that lags behind a
// write), so it POSTs, and the API answers 409: the pair is active. The update must still set the
// pair's variables, not end as if an activation were all it asked for.
func TestAttackUpdateConflict(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{})
	w, _ := startWorker(t, db.Client, api, withPolicy(policyTimings))
	q := newOpQueue(t, db.Client, 5)

	req := testutil.Request("u-attack-update-409")
	api.Seed(req.Pair())
	api.ScriptList(req.Pair(), `{"activations":[],"totalCount":0}`)
	api.Script(req.Pair(), versoritest.Fault{Status: http.StatusConflict})
	req.DynamicVariables = json.RawMessage(`{"plan":"gold"}`)
	if tk, ok := q.enqueue(t, tasks.OpUpdate, req, nil); !ok {
		t.Fatalf("update ticket %+v not queued", tk)
	}
	waitQueueEmpty(t, db.Client, api, 20*time.Second)
	if n := api.ActivationCount(req.Pair()); n != 1 {
		t.Errorf("pair has %d activations, want 1", n)
	}
	if vars, ok := api.Variables(req.Pair()); !ok || !sameJSON(vars, req.DynamicVariables) {
		t.Errorf("the pair holds variables %s (active %v), want %s (calls %v)", vars, ok, req.DynamicVariables, callTrace(pairCalls(api, req.Pair())))
	}
	if got := result([]*worker.Worker{w}, metrics.ResultAlreadyActive); got != 0 {
		t.Errorf("activations{result=already_active} = %v, want 0: not a result of an update", got)
	}
}
