package pairorder_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/versori/activator/internal/pairorder"
	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

const integ = "01HZY8J5Q0A1B2C3D4E5F6G7H8"

func TestNext(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	o := pairorder.New(db.Client)
	ctx := context.Background()
	p := versori.Pair{UserID: "alice", IntegrationID: integ}
	steps := []struct {
		op         tasks.Op
		wantSeq    int64
		wantRepeat bool
	}{
		{tasks.OpActivate, 0, true}, // the first activation writes nothing
		{tasks.OpActivate, 0, true},
		{tasks.OpUpdate, 1, false},
		{tasks.OpActivate, 1, true}, // an update activates: an activation after it repeats it
		{tasks.OpUpdate, 2, false},  // variables may differ: never a repeat
		{tasks.OpDeactivate, 3, false},
		{tasks.OpDeactivate, 3, true},
		{tasks.OpActivate, 4, false},
		{tasks.OpDeactivate, 5, false},
	}
	for i, s := range steps {
		got, err := o.Next(ctx, s.op, []versori.Pair{p})
		if err != nil {
			t.Fatal(err)
		}
		want := pairorder.Ticket{Seq: s.wantSeq, TaskID: tasks.TaskIDAt(p, s.wantSeq), Repeat: s.wantRepeat}
		if got[0] != want {
			t.Fatalf("step %d (%s): got %+v, want %+v", i, s.op, got[0], want)
		}
	}
	keys, _ := db.Keys(ctx)
	if len(keys) != 1 {
		t.Errorf("keys: %v, want the pair's hash only", keys)
	}
	// A pair that only activates costs no key.
	if _, err := o.Next(ctx, tasks.OpActivate, []versori.Pair{{UserID: "bob", IntegrationID: integ}}); err != nil {
		t.Fatal(err)
	}
	if keys, _ := db.Keys(ctx); len(keys) != 1 {
		t.Errorf("keys after bob's activation: %v", keys)
	}
}

func TestTurns(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	o := pairorder.New(db.Client)
	ctx := context.Background()
	p := versori.Pair{UserID: "carol", IntegrationID: integ}
	begin := func(seq int64, run string, hold time.Duration) (pairorder.Turn, time.Duration) {
		t.Helper()
		turn, wait, err := o.Begin(ctx, p, seq, run, hold)
		if err != nil {
			t.Fatal(err)
		}
		return turn, wait
	}
	if turn, _ := begin(0, "a1", time.Minute); turn != pairorder.Go {
		t.Fatalf("first run: %v", turn)
	}
	if turn, wait := begin(0, "a2", time.Minute); turn != pairorder.Busy || wait <= 50*time.Second {
		t.Fatalf("second run while the first holds: %v %v", turn, wait)
	}
	if err := o.End(ctx, p, "a2", 0); err != nil { // not the holder: nothing changes
		t.Fatal(err)
	}
	if turn, _ := begin(0, "a3", time.Minute); turn != pairorder.Busy {
		t.Fatalf("after a non-holder's End: %v", turn)
	}
	// The holder's call may still commit: busy for the settle time, to everyone.
	if err := o.End(ctx, p, "a1", 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if turn, wait := begin(0, "a4", time.Minute); turn != pairorder.Busy || wait > 300*time.Millisecond {
		t.Fatalf("while settling: %v %v", turn, wait)
	}
	testutil.WaitFor(t, 5*time.Second, "the turn after the settle time", func() bool {
		turn, _ := begin(0, "a5", 200*time.Millisecond)
		return turn == pairorder.Go
	})
	// a5 never ends (its process died): the turn passes on after its hold.
	testutil.WaitFor(t, 5*time.Second, "the turn after a dead run's hold", func() bool {
		turn, _ := begin(0, "a6", time.Minute)
		return turn == pairorder.Go
	})
	if err := o.End(ctx, p, "a6", 0); err != nil {
		t.Fatal(err)
	}
	// A deactivation enqueued later supersedes the activation, held or not.
	tk, err := o.Next(ctx, tasks.OpDeactivate, []versori.Pair{p})
	if err != nil {
		t.Fatal(err)
	}
	if turn, _ := begin(0, "a7", time.Minute); turn != pairorder.Superseded {
		t.Fatalf("activation after a later deactivation: %v", turn)
	}
	if turn, _ := begin(tk[0].Seq, "d1", time.Minute); turn != pairorder.Go {
		t.Fatalf("the deactivation: %v", turn)
	}
	if err := o.End(ctx, p, "d1", 0); err != nil {
		t.Fatal(err)
	}
	if v, _ := db.Client.HGetAll(ctx, rediskeys.PairOrder(tasks.TaskID(p))).Result(); len(v) != 2 {
		t.Errorf("after the last End the hash keeps only seq and op: %v", v)
	}
}

// TestTurnTakenOverByTheSameJob: a run naming its job ("<job>\x00<attempt>") takes the turn over
// from an earlier run of the same job that never ended (its process died), without waiting out its
// hold; another job still waits, and the earlier run's End no longer gives the turn away.
func TestTurnTakenOverByTheSameJob(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	o := pairorder.New(db.Client)
	ctx := context.Background()
	p := versori.Pair{UserID: "dave", IntegrationID: integ}
	tests := []struct {
		run  string
		want pairorder.Turn
	}{
		{"job-a\x000/x", pairorder.Go},    // holds, then dies
		{"job-b\x000/y", pairorder.Busy},  // another job waits
		{"job-a2\x000/z", pairorder.Busy}, // a job whose id merely starts alike waits too
		{"job-a\x001/w", pairorder.Go},    // the same job's next attempt takes over
		{"job-a", pairorder.Busy},         // an id naming no job is another run
	}
	for _, tt := range tests {
		turn, _, err := o.Begin(ctx, p, 0, tt.run, time.Hour)
		if err != nil || turn != tt.want {
			t.Fatalf("Begin(%q) = %v, %v; want %v", tt.run, turn, err, tt.want)
		}
	}
	if err := o.End(ctx, p, "job-a\x000/x", 0); err != nil { // the dead run's End, late
		t.Fatal(err)
	}
	if turn, _, _ := o.Begin(ctx, p, 0, "job-b\x001/v", time.Hour); turn != pairorder.Busy {
		t.Fatalf("after the earlier run's late End: %v, want Busy (the later run holds)", turn)
	}
	if err := o.End(ctx, p, "job-a\x001/w", 0); err != nil {
		t.Fatal(err)
	}
	if turn, _, _ := o.Begin(ctx, p, 0, "job-b\x001/v", time.Hour); turn != pairorder.Go {
		t.Fatalf("after the holder's End: %v", turn)
	}
}

// TestOrderHashLost: Redis loses a pair's hash (a restart or a failover that drops its last writes)
// while a deactivation and a later activation are queued. Whichever job begins first, the earlier
// must not run after the later one: once the later job has begun, the earlier is superseded, and a
// new operation is numbered after both, so that its task id conflicts with neither.
func TestOrderHashLost(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	o := pairorder.New(db.Client)
	ctx := context.Background()
	p := versori.Pair{UserID: "erin", IntegrationID: integ}
	var tickets []pairorder.Ticket
	for _, op := range []tasks.Op{tasks.OpActivate, tasks.OpDeactivate, tasks.OpActivate} {
		tk, err := o.Next(ctx, op, []versori.Pair{p})
		if err != nil {
			t.Fatal(err)
		}
		tickets = append(tickets, tk[0])
	}
	deact, act := tickets[1], tickets[2]
	if deact.Seq != 1 || act.Seq != 2 {
		t.Fatalf("tickets %+v", tickets)
	}
	if err := db.Client.Del(ctx, rediskeys.PairOrder(tasks.TaskID(p))).Err(); err != nil {
		t.Fatal(err)
	}
	// The later activation's job begins first, and ends.
	if turn, _, err := o.Begin(ctx, p, act.Seq, "act\x000/a", time.Minute); err != nil || turn != pairorder.Go {
		t.Fatalf("the activation: %v, %v", turn, err)
	}
	if err := o.End(ctx, p, "act\x000/a", 0); err != nil {
		t.Fatal(err)
	}
	if turn, _, err := o.Begin(ctx, p, deact.Seq, "deact\x000/d", time.Minute); err != nil || turn != pairorder.Superseded {
		t.Errorf("the earlier deactivation after the later activation ran: %v, %v; want Superseded", turn, err)
	}
	for _, tt := range []struct {
		op      tasks.Op
		wantSeq int64
	}{
		{tasks.OpDeactivate, act.Seq + 1},
		{tasks.OpActivate, act.Seq + 2},
	} {
		tk, err := o.Next(ctx, tt.op, []versori.Pair{p})
		if err != nil {
			t.Fatal(err)
		}
		if tk[0].Seq != tt.wantSeq {
			t.Errorf("a %s after the loss: ticket %+v, want seq %d (after every job still queued)", tt.op, tk[0], tt.wantSeq)
		}
	}
}

// TestTurnNotTakenOverBySameAttempt: asynq runs a job's attempt twice at once when it puts a task
// still running back in its queue with the same retry count (a shutdown's requeue after its timeout,
// or Redis restored to before the task was taken). The second run must not take the turn over from
// the first, whose call may still land: only a later attempt (asynq counts a recovery as a retry)
// takes over; an earlier or equal one waits.
func TestTurnNotTakenOverBySameAttempt(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	o := pairorder.New(db.Client)
	ctx := context.Background()
	p := versori.Pair{UserID: "frank", IntegrationID: integ}
	tests := []struct {
		run  string
		want pairorder.Turn
	}{
		{"job-a\x002/x", pairorder.Go},      // holds, still running
		{"job-a\x002/y", pairorder.Busy},    // the same attempt, requeued while running
		{"job-a\x001/z", pairorder.Busy},    // an earlier attempt (a stale copy)
		{"job-a\x0010/w", pairorder.Go},     // a later attempt takes over (numbers, not strings)
		{"job-a\x009/v", pairorder.Busy},    // and is not taken over by an earlier one
		{"job-a\x0010/5/u", pairorder.Go},   // another enqueue: the holder names no enqueue time
		{"job-a\x0011/5/u", pairorder.Go},   // a later attempt, naming its enqueue time
		{"job-a\x0011/5/t", pairorder.Busy}, // the same attempt of the same enqueue waits
		{"job-a\x000/7/s", pairorder.Go},    // a requeued dead letter (enqueued anew) takes over
		{"job-a\x000/7/r", pairorder.Busy},  // the same attempt of that enqueue waits
	}
	for _, tt := range tests {
		turn, _, err := o.Begin(ctx, p, 0, tt.run, time.Hour)
		if err != nil || turn != tt.want {
			t.Errorf("Begin(%q) = %v, %v; want %v", tt.run, turn, err, tt.want)
		}
	}
}

// TestEndMany: one call gives back many runs' turns, each only if its run holds it, and keeps the
// pairs whose runs' calls may still land busy for their settle time.
func TestEndMany(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	o := pairorder.New(db.Client)
	ctx := context.Background()
	pair := func(u string) versori.Pair { return versori.Pair{UserID: u, IntegrationID: integ} }
	for _, u := range []string{"e1", "e2", "e3"} {
		if turn, _, err := o.Begin(ctx, pair(u), 0, u+"-run", time.Minute); err != nil || turn != pairorder.Go {
			t.Fatalf("%s: %v %v", u, turn, err)
		}
	}
	err := o.EndMany(ctx, []pairorder.Ending{
		{Pair: pair("e1"), Run: "e1-run"},                           // given back
		{Pair: pair("e2"), Run: "e2-run", Settle: time.Minute},      // its call may still land
		{Pair: pair("e3"), Run: "someone-else"},                     // not the holder: nothing changes
		{Pair: pair("e4"), Run: "e4-run", Settle: time.Millisecond}, // never began: nothing changes
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		user string
		want pairorder.Turn
	}{{"e1", pairorder.Go}, {"e2", pairorder.Busy}, {"e3", pairorder.Busy}, {"e4", pairorder.Go}} {
		if turn, _, err := o.Begin(ctx, pair(tc.user), 0, tc.user+"-next", time.Minute); err != nil || turn != tc.want {
			t.Errorf("%s after EndMany: %v %v, want %v", tc.user, turn, err, tc.want)
		}
	}
}

// TestTurnsInOneCall: give-backs go before takes in one call, so a taker finds its pair as a run
// that ended before the call left it, and two takers of one pair in one call get one turn.
func TestTurnsInOneCall(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	o := pairorder.New(db.Client)
	ctx := context.Background()
	pair := func(u string) versori.Pair { return versori.Pair{UserID: u, IntegrationID: integ} }
	if turn, _, err := o.Begin(ctx, pair("held"), 0, "h1", time.Minute); err != nil || turn != pairorder.Go {
		t.Fatalf("held: %v %v", turn, err)
	}
	if _, err := o.Next(ctx, tasks.OpDeactivate, []versori.Pair{pair("later")}); err != nil {
		t.Fatal(err)
	}
	got, err := o.Turns(ctx,
		[]pairorder.Ending{{Pair: pair("held"), Run: "h1"}},
		[]pairorder.Beginning{
			{Pair: pair("held"), Seq: 0, Run: "h2", Hold: time.Minute},  // h1 gave it back first
			{Pair: pair("twice"), Seq: 0, Run: "t1", Hold: time.Minute}, // the first of two takes it
			{Pair: pair("twice"), Seq: 0, Run: "t2", Hold: time.Minute},
			{Pair: pair("later"), Seq: 0, Run: "l1", Hold: time.Minute}, // a deactivation is numbered 1
		})
	if err != nil {
		t.Fatal(err)
	}
	want := []pairorder.Turn{pairorder.Go, pairorder.Go, pairorder.Busy, pairorder.Superseded}
	if len(got) != len(want) {
		t.Fatalf("got %d answers, want %d", len(got), len(want))
	}
	for i, w := range want {
		if got[i].Turn != w {
			t.Errorf("taker %d: %v, want %v", i, got[i].Turn, w)
		}
	}
	if got[2].Wait <= 0 || got[2].Wait > time.Minute {
		t.Errorf("busy wait %s, want the holder's hold (at most a minute)", got[2].Wait)
	}
}

// TestBatcher: many jobs taking and giving back turns at once through one Batcher get the turns
// one at a time per pair, and every turn is back once Wait returns.
func TestBatcher(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	o := pairorder.New(db.Client)
	b := pairorder.NewBatcher(o, 5*time.Second, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	const pairs, runsPerPair = 20, 10
	var mu sync.Mutex
	holding := map[string]string{} // user -> run holding its turn, as the runs see it
	var wg sync.WaitGroup
	errs := make(chan error, pairs*runsPerPair)
	for u := range pairs {
		for r := range runsPerPair {
			wg.Go(func() {
				user, run := fmt.Sprintf("u%d", u), fmt.Sprintf("u%d-r%d", u, r)
				p := versori.Pair{UserID: user, IntegrationID: integ}
				for {
					turn, wait, err := b.Begin(ctx, p, 0, run, time.Minute)
					if err != nil {
						errs <- err
						return
					}
					if turn == pairorder.Busy {
						if wait <= 0 {
							errs <- fmt.Errorf("%s: busy without a wait", run)
							return
						}
						runtime.Gosched()
						continue
					}
					if turn != pairorder.Go {
						errs <- fmt.Errorf("%s: %v", run, turn)
						return
					}
					break
				}
				mu.Lock()
				if h := holding[user]; h != "" {
					errs <- fmt.Errorf("%s took the turn %s holds", run, h)
				}
				holding[user] = run
				mu.Unlock()
				mu.Lock()
				delete(holding, user)
				mu.Unlock()
				b.End(p, run, 0)
			})
		}
	}
	wg.Wait()
	b.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if keys, _ := db.Keys(ctx); len(keys) != 0 {
		t.Errorf("keys left once every turn is back: %v", keys)
	}
}

// TestBatcherAbandonedBegin: a Begin whose context ends before its answer returns the context's
// error, and a turn taken for it is given back rather than held until its hold ends.
func TestBatcherAbandonedBegin(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	o := pairorder.New(db.Client)
	b := pairorder.NewBatcher(o, 5*time.Second, slog.New(slog.DiscardHandler))
	p := versori.Pair{UserID: "gone", IntegrationID: integ}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// The answer may, rarely, arrive before Begin sees the ended context: then the turn is the
	// caller's, and it gives it back.
	switch turn, _, err := b.Begin(ctx, p, 0, "gone-1", time.Hour); {
	case err == nil && turn == pairorder.Go:
		b.End(p, "gone-1", 0)
	case !errors.Is(err, context.Canceled):
		t.Fatalf("Begin with an ended context: %v %v, want context.Canceled", turn, err)
	}
	b.Wait()
	if turn, _, err := o.Begin(context.Background(), p, 0, "next", time.Hour); err != nil || turn != pairorder.Go {
		t.Errorf("after the abandoned Begin: %v %v, want Go", turn, err)
	}
}
