package results_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/results"
	"github.com/versori/activator/internal/testutil"
)

const queue = "results-test"

// enqueue adds n tasks kept for a day once done, and returns their ids.
func enqueue(t *testing.T, rdb redis.UniversalClient, n int) []string {
	t.Helper()
	c := asynq.NewClientFromRedisClient(rdb)
	ids := make([]string, n)
	for i := range ids {
		info, err := c.Enqueue(asynq.NewTask("t", nil), asynq.Queue(queue), asynq.TaskID(fmt.Sprintf("task-%04d", i)),
			asynq.Retention(24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = info.ID
	}
	return ids
}

func result(t *testing.T, insp *asynq.Inspector, id string) string {
	t.Helper()
	ti, err := insp.GetTaskInfo(queue, id)
	if err != nil {
		t.Fatalf("GetTaskInfo(%s): %v", id, err)
	}
	return string(ti.Result)
}

// TestFlushWritesResults checks that results become the tasks' asynq results (as the Inspector and
// the queue UI read them) in one round trip, beyond one script call's key limit, and that a task
// deleted before the flush does not come back as a stray hash.
func TestFlushWritesResults(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ids := enqueue(t, db.Client, 1200)
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	if err := insp.DeleteTask(queue, ids[7]); err != nil {
		t.Fatal(err)
	}
	var trips countTrips
	db.Client.AddHook(&trips)
	w := results.New(db.Client, results.Config{FlushAt: 1 << 20})
	for _, id := range ids {
		w.Add(queue, id, "act-"+id)
	}
	if err := w.Flush(context.Background()); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	// The script is loaded on the first flush: NOSCRIPT, SCRIPT LOAD, then the batch again.
	if trips.n > 3 {
		t.Errorf("first flush took %d round trips, want at most 3", trips.n)
	}
	for i, id := range ids {
		if i == 7 {
			continue
		}
		if got := result(t, insp, id); got != "act-"+id {
			t.Fatalf("result of %s = %q, want %q", id, got, "act-"+id)
		}
	}
	if n, err := db.Client.Exists(context.Background(), rediskeys.AsynqTask(queue, ids[7])).Result(); err != nil || n != 0 {
		t.Errorf("deleted task's hash exists = %d, %v; want no stray hash", n, err)
	}
	trips.n = 0
	w.Add(queue, ids[0], "again")
	if err := w.Flush(context.Background()); err != nil || trips.n != 1 {
		t.Errorf("second flush: %v in %d round trips, want 1", err, trips.n)
	}
	if err := w.Flush(context.Background()); err != nil || trips.n != 1 {
		t.Errorf("empty flush: %v, %d round trips in all; want none of its own", err, trips.n-1)
	}
}

// TestFlushKeepsResultsWhileRedisIsAway checks that a failed flush keeps its results for the next
// one, dropping (and counting) the oldest beyond MaxPending.
func TestFlushKeepsResultsWhileRedisIsAway(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ids := enqueue(t, db.Client, 10)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := l.Addr().String()
	l.Close()
	dead := redis.NewClient(&redis.Options{Addr: deadAddr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { dead.Close() })

	away := results.New(dead, results.Config{MaxPending: 6})
	for _, id := range ids[:4] {
		away.Add(queue, id, "r-"+id)
	}
	if err := away.Flush(context.Background()); err == nil {
		t.Fatal("Flush to an unreachable Redis succeeded")
	}
	for _, id := range ids[4:] {
		away.Add(queue, id, "r-"+id)
	}
	if err := away.Flush(context.Background()); err == nil {
		t.Fatal("second Flush to an unreachable Redis succeeded")
	}
	if got := away.Dropped(); got != 4 {
		t.Errorf("Dropped = %d, want 4 (10 results, at most 6 kept)", got)
	}

	// The same results, now to a Redis that answers. (A restarted Redis has lost the script: the
	// NOSCRIPT path runs, unasserted, in worker's TestWorkerRidesOutRedisOutage; SCRIPT FLUSH here would empty
	// the cache of every test sharing the server.)
	back := results.New(db.Client, results.Config{})
	for _, id := range ids[4:] {
		back.Add(queue, id, "r-"+id)
	}
	if err := back.Flush(context.Background()); err != nil {
		t.Fatalf("Flush after SCRIPT FLUSH: %v", err)
	}
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	for _, id := range ids[4:] {
		if got := result(t, insp, id); got != "r-"+id {
			t.Errorf("result of %s = %q", id, got)
		}
	}
}

// TestRunFlushesOnTimeEarlyAndAtTheEnd checks the three ways Run writes: when FlushAt results wait
// (long before the interval), on the interval, and once more when its context ends.
func TestRunFlushesOnTimeEarlyAndAtTheEnd(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ids := enqueue(t, db.Client, 6)
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	tests := []struct {
		name     string
		cfg      results.Config
		add      []string
		cancel   bool // end Run right after adding
		deadline time.Duration
	}{
		{"flush at", results.Config{Interval: time.Hour, FlushAt: 2}, ids[0:2], false, 10 * time.Second},
		{"interval", results.Config{Interval: 50 * time.Millisecond}, ids[2:3], false, 10 * time.Second},
		{"end", results.Config{Interval: time.Hour}, ids[3:6], true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := results.New(db.Client, tt.cfg)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { w.Run(ctx); close(done) }()
			for _, id := range tt.add {
				w.Add(queue, id, "run-"+id)
			}
			if tt.cancel {
				cancel()
				<-done
			}
			last := tt.add[len(tt.add)-1]
			deadline := time.Now().Add(tt.deadline)
			for result(t, insp, last) != "run-"+last {
				if !time.Now().Before(deadline) {
					t.Fatalf("result of %s not written", last)
				}
				time.Sleep(10 * time.Millisecond)
			}
			cancel()
			<-done
		})
	}
}

// setup are the commands go-redis sends to set up a new connection.
var setup = map[string]bool{"hello": true, "select": true, "client": true, "auth": true}

// countTrips counts the round trips a client makes, connection set-up aside: a pipeline is one.
type countTrips struct{ n int }

func (c *countTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *countTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !setup[cmd.Name()] {
			c.n++
		}
		return next(ctx, cmd)
	}
}

func (c *countTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !setup[cmds[0].Name()] {
			c.n++
		}
		return next(ctx, cmds)
	}
}
