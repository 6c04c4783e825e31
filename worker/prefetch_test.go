package worker_test

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/versori/versoritest"
	"github.com/versori/activator/worker"
)

// TestPrefetchHoldsTasksBeyondCallSlots checks Config.Prefetch: the worker holds Concurrency+Prefetch
// tasks while no more than Concurrency calls are in flight at the API, and every pair is still
// activated exactly once.
func TestPrefetchHoldsTasksBeyondCallSlots(t *testing.T) {
	t.Parallel()
	const n, concurrency, prefetch = 40, 3, 2
	const latency = 400 * time.Millisecond
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{Faults: versoritest.Faults{Latency: latency}})
	path, pairs := writeRequests(t, n, 0)
	p := producer.New(db.Client, producer.Config{Queue: queue})
	ctx := context.Background()
	if sum, err := p.EnqueueFile(ctx, producer.FileOptions{Path: path, Batch: "pf"}); err != nil || sum.Enqueued != n {
		t.Fatalf("EnqueueFile = %+v, %v", sum, err)
	}
	start := time.Now()
	startWorker(t, db.Client, api, func(c *worker.Config) {
		c.Concurrency, c.Prefetch = concurrency, prefetch
		c.Versori.Timeout = 10 * time.Second
	})
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	testutil.WaitFor(t, 10*time.Second, "the worker to hold concurrency+prefetch tasks", func() bool {
		info, err := insp.GetQueueInfo(queue)
		return err == nil && info.Active == concurrency+prefetch
	})
	// Calls take latency each, concurrency at a time: in any stretch of time the API can have seen
	// at most concurrency calls per latency (plus the ones in flight at its start).
	elapsed := time.Since(start)
	if calls, most := len(activateCalls(api)), concurrency*(int(elapsed/latency)+1); calls > most {
		t.Fatalf("%d calls after %s, more than %d call slots allow", calls, elapsed, concurrency)
	}
	testutil.WaitFor(t, 60*time.Second, "all pairs activated", func() bool { return api.Stats().Activations >= n })
	assertExactlyOnce(t, api, pairs)
	if elapsed := time.Since(start); elapsed < n/concurrency*latency {
		t.Fatalf("%d calls of %s took %s: more than %d ran at once", n, latency, elapsed, concurrency)
	}
}
