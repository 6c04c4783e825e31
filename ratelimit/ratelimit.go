// Package ratelimit paces calls to the Versori API across every worker process that shares a Redis:
// a global limit of requests per second (GCRA, github.com/go-redis/redis_rate), and a shared back-off
// that a 429 sets for everybody, since a 429 is a signal about the whole API key, not one job.
package ratelimit

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/ctxtime"
)

// Config configures a Gate.
type Config struct {
	// Rate is the most requests per second all workers together may send; 0 means no limit.
	Rate int
	// Burst is how many requests may go at once after a quiet spell (default 1: evenly spaced).
	Burst int
	// Queue names the queue whose workers share the limit; it keys the Redis state.
	Queue string
	// PollInterval is how often the shared back-off is read from Redis (default 250 ms).
	PollInterval time.Duration
	// Observe, if set, is told how long each call waited (only calls that waited).
	Observe func(wait time.Duration)
}

// Gate is a versori.Limiter shared by all calls of a worker process.
type Gate struct {
	rdb        redis.UniversalClient
	limiter    *redis_rate.Limiter
	limit      redis_rate.Limit
	rateKey    string
	backoffKey string
	poll       time.Duration
	observe    func(time.Duration)
	until      atomic.Int64 // unix ms before which no call may be sent (the shared back-off)

	// Calls granted by Redis in one round trip but not yet made. They are spent within tokenTTL or
	// dropped, so that a one-second window of calls never holds more than a (1 s + tokenTTL) window
	// of grants: at most Rate*(1+tokenTTL/1s) + Burst.
	batch     int
	mu        sync.Mutex
	tokens    int
	tokensEnd time.Time
}

// tokenTTL bounds how long a call granted in a batch may wait to be made.
const tokenTTL = 20 * time.Millisecond

// maxBatch bounds how many calls one Redis round trip may grant.
const maxBatch = 16

// New returns a Gate on rdb.
func New(rdb redis.UniversalClient, cfg Config) (*Gate, error) {
	if cfg.Rate < 0 || cfg.Burst < 0 {
		return nil, fmt.Errorf("VERSORI_RATE_LIMIT and VERSORI_RATE_BURST must not be negative")
	}
	if cfg.Burst == 0 {
		cfg.Burst = 1
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 250 * time.Millisecond
	}
	base := "activator:{" + cfg.Queue + "}:"
	g := &Gate{rdb: rdb, rateKey: base + "ratelimit", backoffKey: base + "backoff_until",
		poll: cfg.PollInterval, observe: cfg.Observe}
	if cfg.Rate > 0 {
		g.limiter = redis_rate.NewLimiter(rdb)
		g.limit = redis_rate.Limit{Rate: cfg.Rate, Burst: cfg.Burst, Period: time.Second}
		// With a burst of 1 every call is spaced on its own; a larger burst lets one round trip grant
		// several calls, so that the limit costs a fraction of a Redis round trip per call.
		g.batch = min(cfg.Burst, maxBatch)
	}
	return g, nil
}

// Wait blocks until a call may be sent: after any shared back-off, and within the rate limit. It
// returns ctx's error if ctx ends first, or Redis's if the limit cannot be checked.
func (g *Gate) Wait(ctx context.Context) error {
	var waited time.Duration
	defer func() {
		if waited > 0 && g.observe != nil {
			g.observe(waited)
		}
	}()
	for {
		if d := time.Until(time.UnixMilli(g.until.Load())); d > 0 {
			if err := ctxtime.Sleep(ctx, d); err != nil {
				return err
			}
			waited += d
			continue
		}
		if g.limiter == nil {
			return nil
		}
		if g.takeToken() {
			return nil
		}
		var res *redis_rate.Result
		var err error
		if g.batch > 1 {
			res, err = g.limiter.AllowAtMost(ctx, g.rateKey, g.limit, g.batch)
		} else {
			// redis_rate's AllowAtMost can refuse forever at burst 1 (a float rounding in its script).
			res, err = g.limiter.Allow(ctx, g.rateKey, g.limit)
		}
		if err != nil {
			return fmt.Errorf("rate limiter: %w", err)
		}
		if res.Allowed > 0 {
			g.keepTokens(res.Allowed - 1)
			return nil
		}
		// Waiters all wake when a slot frees; a little jitter spreads their retries.
		d := res.RetryAfter + time.Duration(rand.Int64N(int64(time.Millisecond)))
		if err := ctxtime.Sleep(ctx, d); err != nil {
			return err
		}
		waited += d
	}
}

func (g *Gate) takeToken() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.tokens == 0 || time.Now().After(g.tokensEnd) {
		g.tokens = 0
		return false
	}
	g.tokens--
	return true
}

func (g *Gate) keepTokens(n int) {
	if n <= 0 {
		return
	}
	g.mu.Lock()
	if time.Now().After(g.tokensEnd) {
		g.tokens = 0
	}
	g.tokens += n
	g.tokensEnd = time.Now().Add(tokenTTL)
	g.mu.Unlock()
}

// backoffScript moves the shared back-off later, never earlier. KEYS: backoff key. ARGV: until (unix
// ms), ttl (ms).
var backoffScript = redis.NewScript(`
local cur = tonumber(redis.call("GET", KEYS[1]) or "0")
if tonumber(ARGV[1]) > cur then
  redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
end
return 0
`)

// Backoff stops every worker's calls for d from now. This process stops at once; others learn of it
// within the poll interval.
func (g *Gate) Backoff(ctx context.Context, d time.Duration) error {
	until := time.Now().Add(d).UnixMilli()
	g.raise(until)
	return backoffScript.Run(ctx, g.rdb, []string{g.backoffKey}, until, d.Milliseconds()+1000).Err()
}

func (g *Gate) raise(until int64) {
	for {
		cur := g.until.Load()
		if until <= cur || g.until.CompareAndSwap(cur, until) {
			return
		}
	}
}

// Run reads the shared back-off from Redis every poll interval until ctx ends.
func (g *Gate) Run(ctx context.Context) {
	t := time.NewTicker(g.poll)
	defer t.Stop()
	for {
		if v, err := g.rdb.Get(ctx, g.backoffKey).Result(); err == nil {
			if until, err := strconv.ParseInt(v, 10, 64); err == nil {
				g.raise(until)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
