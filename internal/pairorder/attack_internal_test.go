package pairorder

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

const attackInteg = "01HZY8J5Q0A1B2C3D4E5F6G7H8"

// inOneBatch runs start, whose goroutines each ask b for one Begin or End, and sends the n runs
// they ask for in one script call: the test stands in for a call in flight until all n are
// pending, which under load is how a batch forms.
func inOneBatch(t *testing.T, b *Batcher, n int, start func()) {
	t.Helper()
	b.mu.Lock()
	b.flushing = true
	b.mu.Unlock()
	start()
	testutil.WaitFor(t, 10*time.Second, fmt.Sprintf("%d runs pending", n), func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return len(b.begins)+len(b.ends) == n
	})
	b.mu.Lock()
	b.flushing = false
	b.flushLocked()
	b.mu.Unlock()
}

// TestBatcherOneBadKey: a pair's hash that is not a hash (an operator's SET, a restore gone wrong)
// makes Redis refuse the script call it is in, after the call has taken the turns of the runs
// before it. Only that pair's own run may fail: the others in the same call get their turns, ends
// in it are given back, and no run that was told of an error is left holding a turn (which would
// keep its pair busy for the whole hold, the job's deadline plus SETTLE_TIME, if its retry ends
// superseded).
func TestBatcherOneBadKey(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	o := New(db.Client)
	b := NewBatcher(o, 5*time.Second, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	pair := func(u string) versori.Pair { return versori.Pair{UserID: u, IntegrationID: attackInteg} }
	key := func(u string) string { return rediskeys.PairOrder(tasks.TaskID(pair(u))) }
	for _, u := range []string{"ended1", "ended2"} {
		if turn, _, err := o.Begin(ctx, pair(u), 0, u+"-run", time.Hour); err != nil || turn != Go {
			t.Fatalf("%s: %v %v", u, turn, err)
		}
	}
	if err := db.Client.Set(ctx, key("bad"), "not a hash", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := db.Client.HSet(ctx, key("badseq"), "seq", "not a number").Err(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		order []string // takers, in the order they join the call
	}{
		{"bad key last", []string{"g1", "g2", "g3", "bad"}},
		{"bad key first", []string{"bad", "g4", "g5"}},
		{"bad key between", []string{"g6", "bad", "g7"}},
		{"bad field between", []string{"g9", "badseq", "g10"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			type result struct {
				user, run string
				turn      Turn
				err       error
			}
			results := make(chan result, len(tc.order))
			var wg sync.WaitGroup
			inOneBatch(t, b, len(tc.order), func() {
				for i, u := range tc.order {
					run := fmt.Sprintf("%s-%s-%d", tc.name, u, i)
					wg.Go(func() {
						turn, _, err := b.Begin(ctx, pair(u), 0, run, time.Hour)
						results <- result{u, run, turn, err}
					})
					// One at a time, so that the call holds them in this order.
					testutil.WaitFor(t, 10*time.Second, "the Begin to be pending", func() bool {
						b.mu.Lock()
						defer b.mu.Unlock()
						return len(b.begins) == i+1
					})
				}
			})
			wg.Wait()
			close(results)
			for r := range results {
				held, err := db.Client.HGet(ctx, key(r.user), "run").Result()
				switch {
				case strings.HasPrefix(r.user, "bad"):
					if r.err == nil {
						t.Errorf("bad: %v, want an error", r.turn)
					}
				case r.err != nil:
					t.Errorf("%s failed with the bad key's error: %v", r.user, r.err)
					if err == nil && held == r.run {
						t.Errorf("%s: told of an error, yet its run holds the pair's turn", r.user)
					}
				case r.turn != Go:
					t.Errorf("%s: %v, want Go", r.user, r.turn)
				}
			}
		})
	}
	t.Run("ends with the bad key", func(t *testing.T) {
		var wg sync.WaitGroup
		inOneBatch(t, b, 4, func() {
			b.End(pair("ended1"), "ended1-run", 0)
			b.End(pair("bad"), "bad-run", 0)
			b.End(pair("ended2"), "ended2-run", 0)
			wg.Go(func() {
				if turn, _, err := b.Begin(ctx, pair("g8"), 0, "g8-run", time.Hour); err != nil || turn != Go {
					t.Errorf("g8 in a call with the bad key's End: %v %v, want Go", turn, err)
				}
			})
		})
		wg.Wait()
		b.Wait()
		for _, u := range []string{"ended1", "ended2"} {
			if turn, _, err := o.Begin(ctx, pair(u), 0, u+"-next", time.Hour); err != nil || turn != Go {
				t.Errorf("%s after its End shared a call with the bad key: %v %v, want Go", u, turn, err)
			}
		}
	})
	b.Wait()
	if got, err := db.Client.Get(ctx, key("bad")).Result(); err != nil || got != "not a hash" {
		t.Errorf("the bad key: %q %v, want it left alone", got, err)
	}
}

// TestBatcherLostAnswer: when the answer to a turns call is lost (a timeout, a connection cut after
// Redis ran the script), the Begins in it are told of an error, yet Redis may have given their runs
// the turns. Those runs never call the API, so their turns must go back: otherwise the pair stays
// busy until the hold ends (the job's deadline plus SETTLE_TIME), and for good if the job's retry
// ends superseded and never takes the turn over.
func TestBatcherLostAnswer(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	// Once drop is set, Redis's next reply is thrown away: a network that loses an answer after Redis
	// has acted on the command.
	var drop atomic.Bool
	proxy := testutil.NewReplyProxy(t, db.Addr, func([]byte) bool { return !drop.CompareAndSwap(true, false) })
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr(), DB: db.Number, MaxRetries: -1, PoolSize: 1})
	t.Cleanup(func() { rdb.Close() })
	b := NewBatcher(New(rdb), 300*time.Millisecond, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	pair := func(u string) versori.Pair { return versori.Pair{UserID: u, IntegrationID: attackInteg} }
	// Loads the script, so that the lost call is the one that runs it.
	if turn, _, err := b.Begin(ctx, pair("warm"), 0, "warm-run", time.Hour); err != nil || turn != Go {
		t.Fatalf("warm-up: %v %v", turn, err)
	}
	b.End(pair("warm"), "warm-run", 0)
	b.Wait()
	for _, n := range []int{1, 5} {
		t.Run(fmt.Sprintf("%d runs", n), func(t *testing.T) {
			// A connection made before the answers are lost, so that the script call is sent on it.
			if err := rdb.Ping(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			drop.Store(true)
			var wg sync.WaitGroup
			errs := make([]error, n)
			inOneBatch(t, b, n, func() {
				for i := range n {
					wg.Go(func() {
						_, _, errs[i] = b.Begin(ctx, pair(fmt.Sprintf("lost%d-%d", n, i)), 0, fmt.Sprintf("lost%d-%d-run", n, i), time.Hour)
					})
				}
			})
			wg.Wait()
			b.Wait()
			for i, err := range errs {
				u := fmt.Sprintf("lost%d-%d", n, i)
				if err == nil {
					t.Fatalf("%s: no error while the answers were lost", u)
				}
				held, herr := db.Client.HGet(ctx, rediskeys.PairOrder(tasks.TaskID(pair(u))), "run").Result()
				if herr == nil && held == u+"-run" {
					t.Errorf("%s: told of an error (%v), yet its run holds the pair's turn", u, err)
				}
			}
		})
	}
}

// TestBatcherStress: many runs of few pairs, some giving up on their Begin at once, some while its
// call is in flight, with batches past maxKeys: at most one run holds a pair's turn at a time, and
// once Wait returns no turn is held, abandoned ones included.
func TestBatcherStress(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	b := NewBatcher(New(db.Client), 5*time.Second, slog.New(slog.DiscardHandler))
	pair := func(u int) versori.Pair {
		return versori.Pair{UserID: fmt.Sprintf("s%d", u), IntegrationID: attackInteg}
	}
	const pairs, runs = 40, 1200
	var mu sync.Mutex
	holding := map[int]string{}
	var wg sync.WaitGroup
	var abandoned atomic.Int64
	run := func(i int) {
		u := i % pairs
		id := fmt.Sprintf("r%d", i)
		for try := 0; ; try++ {
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			switch i % 3 {
			case 1: // gives up before it is sent, or while its call is in flight
				ctx, cancel = context.WithCancel(context.Background())
				if try%2 == 0 {
					cancel()
				} else {
					go cancel()
				}
			}
			turn, _, err := b.Begin(ctx, pair(u), 0, fmt.Sprintf("%s-%d", id, try), time.Hour)
			cancel()
			if errors.Is(err, context.Canceled) {
				abandoned.Add(1)
				if try > 50 {
					return
				}
				continue
			}
			if err != nil {
				t.Error(err)
				return
			}
			if turn != Go {
				time.Sleep(time.Millisecond)
				continue
			}
			mu.Lock()
			if h, ok := holding[u]; ok {
				t.Errorf("%s-%d took pair %d's turn while %s held it", id, try, u, h)
			}
			holding[u] = fmt.Sprintf("%s-%d", id, try)
			mu.Unlock()
			mu.Lock()
			delete(holding, u)
			mu.Unlock()
			b.End(pair(u), fmt.Sprintf("%s-%d", id, try), 0)
			return
		}
	}
	// The first wave in one call, past maxKeys.
	inOneBatch(t, b, 700, func() {
		for i := range 700 {
			wg.Go(func() {
				turn, _, err := b.Begin(context.Background(), pair(1000+i), 0, fmt.Sprintf("w%d", i), time.Hour)
				if err != nil || turn != Go {
					t.Errorf("w%d: %v %v", i, turn, err)
					return
				}
				b.End(pair(1000+i), fmt.Sprintf("w%d", i), 0)
			})
		}
	})
	for i := range runs {
		wg.Go(func() { run(i) })
	}
	wg.Wait()
	b.Wait()
	ctx := context.Background()
	keys, err := db.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if h, err := db.Client.HGet(ctx, k, "run").Result(); err == nil {
			t.Errorf("%s still held by %s after Wait", k, h)
		}
	}
	t.Logf("%d Begins abandoned", abandoned.Load())
}

// TestBatcherClosedClient: a Redis client closed under the Batcher (a shutdown closing it too early)
// fails each Begin, and the give-backs that follow fail once each: Wait returns rather than the
// Batcher retrying for ever.
func TestBatcherClosedClient(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: db.Addr, DB: db.Number})
	b := NewBatcher(New(rdb), 5*time.Second, slog.New(slog.DiscardHandler))
	pair := versori.Pair{UserID: "closed", IntegrationID: attackInteg}
	if turn, _, err := b.Begin(context.Background(), pair, 0, "before", time.Hour); err != nil || turn != Go {
		t.Fatalf("before closing: %v %v", turn, err)
	}
	rdb.Close()
	b.End(pair, "before", 0)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if _, _, err := b.Begin(context.Background(), pair, 0, fmt.Sprintf("after-%d", i), time.Hour); err == nil {
				t.Errorf("after-%d: no error from a closed client", i)
			}
		})
	}
	wg.Wait()
	done := make(chan struct{})
	go func() { b.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("Wait did not return with the client closed")
	}
}
