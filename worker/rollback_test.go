package worker_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
)

// TestRedisRollbackActivatesOnce restarts Redis, mid-drain, from a snapshot taken a second before it
// was killed, as a crash that loses the last second of an append-only file, or a failover to a
// replica a second behind, would leave it: the jobs finished in that second are pending again, and
// their next attempt is a first attempt. The worker notices the restart (Redis's run id changed) and
// makes every job queued before the restart look up its pair before activating, so no pair is
// activated twice. With
// the guard off, the same rollback activates pairs twice: the case is real.
func TestRedisRollbackActivatesOnce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		guard string // REDIS_RESTART_GUARD
		exact bool   // every pair must end activated exactly once
	}{
		{"guarded", "true", true},
		{"unguarded", "false", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const n = 3000
			rs := testutil.StartRedisServer(t, false)
			api := versoritest.New(t, versoritest.Options{Faults: versoritest.Faults{Latency: 10 * time.Millisecond}})
			path, pairs := writeRequests(t, n, 0)
			ctx := context.Background()
			if sum, err := producer.New(rs.Client, producer.Config{Queue: queue}).EnqueueFile(ctx, producer.FileOptions{Path: path}); err != nil || sum.Enqueued != n {
				t.Fatalf("EnqueueFile = %+v, %v", sum, err)
			}
			startProcOn(t, rs.URL(), api, "127.0.0.1:"+strconv.Itoa(testutil.FreePort(t)), "REDIS_RESTART_GUARD="+tc.guard)
			testutil.WaitFor(t, 30*time.Second, "a fifth of the pairs active", func() bool { return api.Stats().Activations >= n/5 })

			if err := rs.Client.Save(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			atSnapshot := api.Stats().Activations
			time.Sleep(time.Second)
			atKill := api.Stats().Activations
			rs.Kill()
			rs.Start() // from the snapshot: the last second's writes are gone
			lists := func() int { return api.Stats().ByOpStatus[versori.OpListActivations+" 200"] }
			listsBefore := lists()

			// Jobs that were running at the snapshot come back through asynq's recoverer, which takes a
			// lease a minute after it ended, and runs every minute: up to two minutes and more.
			testutil.WaitFor(t, 4*time.Minute, "every pair active and the queue drained", func() bool {
				for _, p := range pairs {
					if api.ActivationCount(p) == 0 {
						return false
					}
				}
				return testutil.Unfinished(t, rs.Client, queue) == 0
			})
			dups := len(api.Duplicates())
			t.Logf("%s: snapshot at %d activations, killed at %d (%d finished in the lost second); after the restart: "+
				"%d look-ups, %d pairs activated twice", tc.name, atSnapshot, atKill, atKill-atSnapshot, lists()-listsBefore, dups)
			if tc.exact {
				assertExactlyOnce(t, api, pairs)
			} else if dups == 0 {
				t.Errorf("without the guard, a rollback of %d finished jobs made no duplicate: the test does not exercise the case", atKill-atSnapshot)
			}
		})
	}
}
