package worker_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/versori/versoritest"
	"github.com/versori/activator/worker"
)

// TestServersShareTheTasksHeld: the tasks a worker holds are WORKER_CONCURRENCY plus WORKER_PREFETCH
// however they are shared out among its asynq servers (docs/configuration.md: "0 holds exactly
// WORKER_CONCURRENCY"), when they do not divide evenly and when there are more servers than tasks.
func TestServersShareTheTasksHeld(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ concurrency, prefetch, servers int }{
		{3, 0, 2},
		{2, 0, 5},
		{3, 1, 3},
	} {
		t.Run(fmt.Sprintf("concurrency %d prefetch %d servers %d", tc.concurrency, tc.prefetch, tc.servers), func(t *testing.T) {
			t.Parallel()
			const n = 24
			const latency = 300 * time.Millisecond
			db := testutil.Redis(t)
			api := versoritest.New(t, versoritest.Options{Faults: versoritest.Faults{Latency: latency}})
			path, pairs := writeRequests(t, n, 0)
			p := producer.New(db.Client, producer.Config{Queue: queue})
			ctx := context.Background()
			if sum, err := p.EnqueueFile(ctx, producer.FileOptions{Path: path, Batch: "srv"}); err != nil || sum.Enqueued != n {
				t.Fatalf("EnqueueFile = %+v, %v", sum, err)
			}
			startWorker(t, db.Client, api, func(c *worker.Config) {
				c.Concurrency, c.Prefetch, c.Servers = tc.concurrency, tc.prefetch, tc.servers
				c.Versori.Timeout = 10 * time.Second
			})
			insp := asynq.NewInspectorFromRedisClient(db.Client)
			most, want := 0, tc.concurrency+tc.prefetch
			testutil.WaitFor(t, 60*time.Second, "all pairs activated", func() bool {
				if info, err := insp.GetQueueInfo(queue); err == nil {
					most = max(most, info.Active)
				}
				return api.Stats().Activations >= n
			})
			if most > want {
				t.Errorf("the worker held %d tasks at once, more than concurrency+prefetch %d", most, want)
			}
			assertExactlyOnce(t, api, pairs)
		})
	}
}
