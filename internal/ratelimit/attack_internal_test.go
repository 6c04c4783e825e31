package ratelimit

import (
	"context"
	"os"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/testutil"
)

// knownGap skips a test that shows a gap in the rate limit's promise which has no fix yet, unless
// ACTIVATOR_KNOWN_GAPS is set: the test is the gap's precise description.
func knownGap(t *testing.T, what string) {
	t.Helper()
	if os.Getenv("ACTIVATOR_KNOWN_GAPS") == "" {
		t.Skip("known gap, not fixed (set ACTIVATOR_KNOWN_GAPS=1 to run): " + what)
	}
}

// TestSlowReplyKeepsSlotsWithinLate: the package doc's promise rests on a call leaving Wait at most
// late after its slot in Redis's time. A booking's reply held back (a retransmission, a worker
// stalled while the reply waits in its socket) makes every slot of the booking start that much
// later by the process's clock and stay usable minUse after that, so the calls go up to the delay
// late, and a window of Config.Window may hold more than Rate×Window + Burst − 1 calls.
func TestSlowReplyKeepsSlotsWithinLate(t *testing.T) {
	t.Parallel()
	knownGap(t, "a booking's reply held back over late − minUse lets its calls go that much late")
	db := testutil.Redis(t)
	const delay = 250 * time.Millisecond
	// Once armed, Redis's next reply is held back for delay: a TCP retransmission (Linux waits at
	// least 200 ms), or a worker stalled while the reply waits in its socket. got is when the held
	// reply reached the proxy: after Redis ran the command.
	var armed atomic.Bool
	var got atomic.Int64 // unix ns
	proxy := testutil.NewReplyProxy(t, db.Addr, func([]byte) bool {
		if armed.CompareAndSwap(true, false) {
			got.Store(time.Now().UnixNano())
			time.Sleep(delay)
		}
		return true
	})
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DB: db.Number, PoolSize: 1})
	t.Cleanup(func() { rdb.Close() })
	ctx := context.Background()
	for _, tc := range []struct {
		name        string
		rate, burst int
		need        int
	}{
		{"10/s, four calls waiting", 10, 1, 4},
		{"500/s, sixteen calls waiting", 500, 1, 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := New(rdb, Config{Rate: tc.rate, Burst: tc.burst, Queue: "attack-" + tc.name})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := g.book(ctx, 1, 0, -1); err != nil { // loads the script, opens the connection
				t.Fatal(err)
			}
			armed.Store(true)
			slots, first, err := g.book(ctx, tc.need, 0, -1)
			if err != nil {
				t.Fatal(err)
			}
			ran := time.Unix(0, got.Load()) // Redis ran the script before this
			worst := time.Duration(0)
			for i, s := range slots {
				// The slot is at most this late in Redis's time by the process's clock.
				slotAt := ran.Add(max(first+time.Duration(i)*g.interval, 0))
				worst = max(worst, s.until.Sub(slotAt))
			}
			if worst > late {
				limit := tc.rate*int(defaultWindow/time.Second) + tc.burst - 1
				t.Errorf("the %d calls of a booking whose reply was held %s may go up to %s after their slots, over late (%s); "+
					"were every reply held so, a window of %s could hold %d calls at the API, over the %d allowed",
					len(slots), delay, worst.Round(time.Millisecond), late, defaultWindow, g.most(defaultWindow, worst+jitter+rounding), limit)
			}
		})
	}
}

// TestLostTATKeepsSlotsApart: Redis losing the TAT (a failover or restart that dropped its last
// writes, as pairorder allows for) while calls sleep until slots booked before the loss makes the
// next bookings start from now, among those slots: booked slots no longer lie (n − Burst)
// intervals apart, and the calls waiting at the loss, up to WORKER_CONCURRENCY per process, are
// extra in the windows that hold them.
func TestLostTATKeepsSlotsApart(t *testing.T) {
	t.Parallel()
	knownGap(t, "the TAT lost while slots booked from it are pending lets new slots overlap them")
	db := testutil.Redis(t)
	ctx := context.Background()
	const rate, waiting = 100, 40
	g, err := New(db.Client, Config{Rate: rate, Queue: "attack-lost-tat"})
	if err != nil {
		t.Fatal(err)
	}
	before, _, err := g.book(ctx, waiting, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Client.Del(ctx, rediskeys.RateLimit("attack-lost-tat")).Err(); err != nil {
		t.Fatal(err)
	}
	after, _, err := g.book(ctx, waiting, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	all := slices.SortedFunc(slices.Values(append(before, after...)), func(a, b slot) int { return a.at.Compare(b.at) })
	// n slots must span at least (n − Burst) intervals; allow the clocks' rounding a millisecond.
	span := all[len(all)-1].at.Sub(all[0].at)
	if need := time.Duration(len(all)-1) * g.interval; span < need-time.Millisecond {
		t.Errorf("%d slots booked across the lost TAT span %s, less than the %s their intervals need: "+
			"about %d calls more than the limit allows reach the API in the windows that hold them",
			len(all), span.Round(time.Millisecond), need.Round(time.Millisecond), int((need-span)/g.interval))
	}
}

// TestBackoffSharedAcrossSkewedClocks: the shared back-off a 429 sets is stored as a time by the
// writer's clock and read against the reader's, so a worker whose clock is ahead of the writer's
// by more than the back-off ignores it and keeps calling an API that asked everybody to wait. The
// key is written here as a worker whose clock is 5 s behind writes a back-off of 3 s (its TTL, by
// Redis's clock, shows 4 s left: the back-off and a second).
func TestBackoffSharedAcrossSkewedClocks(t *testing.T) {
	t.Parallel()
	knownGap(t, "the shared back-off compares the writer's clock with the reader's")
	db := testutil.Redis(t)
	ctx := context.Background()
	const queue = "attack-skew"
	const skew, backoff = 5 * time.Second, 3 * time.Second
	until := time.Now().Add(-skew).Add(backoff).UnixMilli()
	if err := backoffScript.Run(ctx, db.Client, []string{rediskeys.Backoff(queue)}, until, (backoff + time.Second).Milliseconds()).Err(); err != nil {
		t.Fatal(err)
	}
	g, err := New(db.Client, Config{Rate: 1000, Queue: queue, PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = g.Run(rctx); close(done) }()
	testutil.WaitFor(t, 5*time.Second, "the back-off to be read", func() bool { return g.until.Load() != 0 })
	cancel()
	<-done
	if left := g.backoffLeft(); left <= 0 {
		t.Errorf("a back-off with %s left by Redis's clock, written by a worker %s behind, is ignored (%s left here)",
			backoff, skew, left.Round(time.Millisecond))
	}
}
