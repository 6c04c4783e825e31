package ratelimit

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/testutil"
)

// roundTrips is a go-redis hook that counts round trips: one per command, one per pipeline, except a
// new connection's handshake.
type roundTrips struct{ n atomic.Int64 }

func (r *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.count(cmd)
		return next(ctx, cmd)
	}
}

func (r *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 {
			r.count(cmds[0])
		}
		return next(ctx, cmds)
	}
}

func (r *roundTrips) count(cmd redis.Cmder) {
	switch cmd.Name() {
	case "hello", "auth", "select", "client":
		return
	}
	r.n.Add(1)
}

// BenchmarkWaitContended drives Gates at 2,000 calls/s (the rate BENCHMARKS.md's horizontal runs
// use) with 64 saturating callers per Gate, one or two Gates (as one or two worker processes) on one
// key. It reports Redis round trips per call and the rate reached as a share of the limit; the
// burst's free calls at the start are not counted towards the rate. ns/op is the limit's spacing
// divided among the callers, so it says nothing about the limiter's own cost.
func BenchmarkWaitContended(b *testing.B) {
	const (
		rate    = 2000
		callers = 64
	)
	db := testutil.Redis(b)
	run := 0
	for _, burst := range []int{1, 100} {
		for _, gates := range []int{1, 2} {
			b.Run(fmt.Sprintf("burst=%d/gates=%d", burst, gates), func(b *testing.B) {
				run++ // a fresh key for every b.N, so that no run inherits another's reservations
				benchContended(b, db, Config{Rate: rate, Burst: burst, Queue: "bench" + strconv.Itoa(run)}, gates, callers)
			})
		}
	}
}

func benchContended(b *testing.B, db *testutil.RedisDB, cfg Config, gates, callers int) {
	var trips roundTrips
	gs := make([]*Gate, gates)
	for i := range gs {
		c := redis.NewClient(&redis.Options{Addr: db.Addr, DB: db.Number, PoolSize: callers})
		b.Cleanup(func() { c.Close() })
		if err := c.Ping(context.Background()).Err(); err != nil {
			b.Fatal(err)
		}
		c.AddHook(&trips)
		g, err := New(c, cfg)
		if err != nil {
			b.Fatal(err)
		}
		gs[i] = g
	}
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for _, g := range gs {
		for range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for next.Add(1) <= int64(b.N) {
					if err := g.Wait(ctx); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(trips.n.Load())/float64(b.N), "roundtrips/call")
	if steady := b.N - cfg.Burst; steady > 0 {
		b.ReportMetric(100*float64(steady)/elapsed.Seconds()/float64(cfg.Rate), "%limit")
	}
}
