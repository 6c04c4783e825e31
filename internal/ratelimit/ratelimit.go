// Package ratelimit paces calls to the Versori API across every worker process that shares a Redis:
// a global limit of requests per second, and a shared back-off that a 429 sets for everybody, since a
// 429 is a signal about the whole API key, not one job.
//
// The limit is a GCRA (generic cell rate algorithm) whose state, the theoretical arrival time (TAT),
// is one Redis key. A call does not ask whether it may go now and, if refused, sleep and ask again,
// which lost part of a slot to every late wake-up and cost a round trip per refusal. Instead one
// script books the next free slot unconditionally, moving the TAT on, and answers when that slot is;
// the call sleeps until then. Under load slots are booked back to back, so the limit is reached (less
// the margin for jitter, see below), and a call costs one round trip at most, unless its slot is
// wasted: less when calls of one process arrive together and share one.
//
// # Why the API never sees more than the limit
//
// The promise is about windows of Config.Window (a minute by default) at the API: any such window,
// and any longer one, holds at most Rate×Window + Burst − 1 calls (Rate×Window with the default burst
// of 1), however many processes share the limit. It holds by construction, given bounds on timing
// that the Gate enforces or assumes:
//
//   - Slots. The script books slot after slot at spacing T. A slot goes at its TAT less Burst×T, or
//     at once when that has passed, and moves the TAT on by T (rounded up, never down); so a slot
//     lies between Burst×T and T before the TAT it leaves, and the TAT grows by at least T from one
//     slot to the next, in the order Redis booked them, whichever process booked them. Hence n slots
//     lie at least (n−Burst)×T apart: a span shorter than S holds fewer than S/T + Burst of them.
//     Time here is Redis's (TIME), one clock for every process.
//   - Lateness (enforced). A call leaves Wait at its slot or up to late (30 ms) after it, never
//     before: its wait is counted from when the reply arrived, which is after Redis ran the script,
//     and its deadline from when the booking was sent, which is before; a call that wakes later
//     books another slot. This holds unless Redis takes over late − minUse (28 ms) to answer, when
//     a slot stays usable minUse after the reply so that calls still go.
//   - Jitter (assumed). A call reaches the API within jitter (100 ms) more than the fastest call
//     does after leaving Wait: the network, the HTTP client, a process descheduled for a while.
//
// So the calls the API counts in a window of length W left slots that lie within a span shorter
// than W + spread, where spread is late + jitter + 1 µs for the script's roundings: fewer than
// (W + spread)/T + Burst slots. T is (W + spread)/(Rate×W), rounded up to the nanosecond, so that is
// fewer than Rate×W + Burst, at most Rate×W + Burst − 1; and a window longer than W holds no more
// than its length's share. A saturated limit therefore reaches W/(W + spread) of Rate, 99.78% over a
// minute, less any slots wasted (a call whose context ends, or that wakes over late after its slot).
// The price is in windows shorter than W: one of length w holds fewer than
// Rate×W×(w + spread)/(W + spread) + Burst calls, a one-second window up to 13% more than
// Rate + Burst − 1 with a one-minute Window (calls go evenly spaced unless held back). Set Window
// to the shortest window the API counts calls over: one second keeps every second within the limit,
// at 88% of Rate (this package used to space slots for one second with 20 ms for lateness and
// jitter, which reached 98%, and which a stall of 100 ms broke).
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/background"
	"github.com/versori/activator/internal/configerr"
	"github.com/versori/activator/internal/rediskeys"
)

// ErrWaitTooLong is the cause of Wait's *WaitError when the call would wait longer than
// Config.MaxWait.
var ErrWaitTooLong = errors.New("the next free slot is further away than the longest wait allowed")

// WaitError is Wait's error when a call cannot go within the time its caller may wait (its context's
// deadline, or Config.MaxWait): a shared back-off, or the next free slot, lasts longer. Nothing was
// booked, and nothing was sent: a job should be rescheduled for after Wait rather than count the
// wait as a failure. Cause is context.DeadlineExceeded or ErrWaitTooLong.
type WaitError struct {
	Wait  time.Duration
	Cause error
}

func (e *WaitError) Error() string {
	return fmt.Sprintf("rate limiter: the next call may go in %s: %v", e.Wait.Round(time.Millisecond), e.Cause)
}

func (e *WaitError) Unwrap() error { return e.Cause }

// Config configures a Gate.
type Config struct {
	// Rate is the most requests per second all workers together may send; 0 means no limit.
	Rate int
	// Burst is how many requests may go at once after a quiet spell (default 1: evenly spaced).
	Burst int
	// Window is the length of the windows over which the API must never see more than Rate×Window
	// + Burst − 1 calls (default a minute): the longer, the closer to Rate a saturated limit gets,
	// and the more a shorter window may hold (see the package doc).
	Window time.Duration
	// Queue names the queue whose workers share the limit; it keys the Redis state.
	Queue string
	// PollInterval is how often the shared back-off is read from Redis (default 250 ms).
	PollInterval time.Duration
	// MaxWait, if positive, bounds how long a call may wait for the rate limit: when the next free
	// slot is further away, Wait books nothing and returns ErrWaitTooLong. A context deadline bounds
	// the wait the same way (Wait then returns context.DeadlineExceeded at once), so that no slot is
	// booked that its caller could not use.
	MaxWait time.Duration
	// Observe, if set, is told how long each call waited (only calls that waited).
	Observe func(wait time.Duration)
}

// Gate is a versori.Limiter shared by all calls of a worker process.
//
// A slot is booked before its call sleeps until it, so it is wasted (the API sees one call fewer than
// the limit allowed, which errs on the safe side) when the call's context ends while it sleeps, when
// a back-off begins meanwhile, or when the call wakes too late to use it; the call then books another
// unless its context has ended. Too late is over late (30 ms) after the slot, counted from when the
// booking was sent (the earliest Redis can have run it): a stall must not let calls booked apart go
// together. The package doc shows why that keeps every window of Config.Window within the limit.
type Gate struct {
	rdb        redis.UniversalClient
	rateKey    string
	backoffKey string
	rate       int           // 0: no limit
	burst      int           // how many slots may be free at once after a quiet spell
	interval   time.Duration // between slots at the limit: spacing(rate, window)
	maxWait    time.Duration // 0: none
	poll       time.Duration
	observe    func(time.Duration)
	until      atomic.Int64 // unix ms before which no call may be sent (the shared back-off)

	mu      sync.Mutex
	slots   []slot        // booked by this process and not yet handed to a call, earliest first
	booking bool          // a call is booking slots for itself and the calls waiting for it
	booked  chan struct{} // closed when that booking ends
	waiting int           // calls waiting for that booking
}

// slot is a booked slot: its call may go from at until before until.
type slot struct{ at, until time.Time }

const (
	// late is how late after its slot a call may still go; a call woken later books another slot.
	// It counts from when the booking was sent, so it covers the round trip to Redis too: on a
	// loaded 2-core machine 10 ms wasted 0.6-1.3% of the slots (4% in a worse run), where 1 to 3 in
	// a thousand woke over 20 ms late.
	late = 30 * time.Millisecond
	// jitter is how much later than another a call may reach the API after leaving Wait. On a loaded
	// 2-core machine a stall of about 100 ms held calls back and let them reach the API together.
	jitter = 100 * time.Millisecond
	// rounding covers the script's roundings of time: a wait is rounded up to the microsecond, and
	// Redis's clock to a double of seconds since 2017 (60 ns steps until 2034).
	rounding = time.Microsecond
	// minUse keeps a slot usable for a little while after its reply arrives however slow Redis is,
	// so that a round trip longer than the lateness allowed does not make every slot unusable.
	minUse = 2 * time.Millisecond
	// defaultWindow is Config.Window's default: what the limit is measured over.
	defaultWindow = time.Minute
	// spread is how far apart from their slots the API may see two calls.
	spread = late + jitter + rounding
)

// spacing is the interval between slots that keeps every window of length window at the API within
// rate×window + burst − 1 calls: (window + spread)/(rate × window), rounded up.
func spacing(rate int, window time.Duration) time.Duration {
	num := new(big.Int).Mul(big.NewInt(int64(window+spread)), big.NewInt(int64(time.Second)))
	den := new(big.Int).Mul(big.NewInt(int64(rate)), big.NewInt(int64(window)))
	q, r := new(big.Int).QuoRem(num, den, new(big.Int))
	if r.Sign() > 0 {
		q.Add(q, big.NewInt(1))
	}
	return time.Duration(q.Int64())
}

// most is the most calls that any window of length w can hold, where calls reach it up to by apart
// from their slots: their slots lie within a span shorter than w + by, and n slots span at least
// (n − burst) intervals (see the package doc). At the API by is spread.
func (g *Gate) most(w, by time.Duration) int {
	// Fewer than (w+by)/interval + burst: the largest integer below it.
	span := w + by
	n := int(span / g.interval)
	if span%g.interval == 0 {
		n--
	}
	return n + g.burst
}

// maxBatch bounds how many slots one round trip books: one for each call waiting (the calls that
// arrived while the last booking was in flight), and, when Burst is above one and the limit has
// credit, spares that are free at once, for the calls that follow while the spares are usable.
const maxBatch = 16

// New returns a Gate on rdb.
func New(rdb redis.UniversalClient, cfg Config) (*Gate, error) {
	if cfg.Rate < 0 {
		return nil, configerr.New("ratelimit", "Rate", "must not be negative, got %d", cfg.Rate)
	}
	if cfg.Burst < 0 {
		return nil, configerr.New("ratelimit", "Burst", "must not be negative, got %d", cfg.Burst)
	}
	if cfg.Burst == 0 {
		cfg.Burst = 1
	}
	if cfg.Window < 0 {
		return nil, configerr.New("ratelimit", "Window", "must not be negative, got %s", cfg.Window)
	}
	if cfg.Window == 0 {
		cfg.Window = defaultWindow
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 250 * time.Millisecond
	}
	g := &Gate{rdb: rdb, backoffKey: rediskeys.Backoff(cfg.Queue),
		// What the key holds is github.com/go-redis/redis_rate's, as its name: see rediskeys.RateLimit.
		rateKey: rediskeys.RateLimit(cfg.Queue),
		rate:    cfg.Rate, burst: cfg.Burst, maxWait: max(cfg.MaxWait, 0),
		poll: cfg.PollInterval, observe: cfg.Observe, booked: make(chan struct{})}
	if cfg.Rate > 0 {
		g.interval = spacing(cfg.Rate, cfg.Window)
	}
	return g, nil
}

// Wait blocks until a call may be sent: after any shared back-off, and within the rate limit. It
// returns ctx's error if ctx ends first; a *WaitError at once if the back-off or the call's slot
// would end after ctx's deadline (cause context.DeadlineExceeded) or after MaxWait (cause
// ErrWaitTooLong), so that a job does not hold its worker slot asleep only to fail at its deadline;
// or Redis's error if no slot could be booked.
func (g *Gate) Wait(ctx context.Context) error {
	var waited time.Duration
	defer func() {
		if waited > 0 && g.observe != nil {
			g.observe(waited)
		}
	}()
	for {
		if d := g.backoffLeft(); d > 0 {
			if bound, cause := g.bound(ctx); bound >= 0 && d > bound {
				return &WaitError{Wait: d, Cause: cause}
			}
			if err := background.Sleep(ctx, d); err != nil {
				return err
			}
			waited += d
			continue
		}
		if g.rate == 0 {
			return nil
		}
		s, err := g.slot(ctx)
		if err != nil {
			return err
		}
		d := time.Until(s.at)
		if err := background.Sleep(ctx, d); err != nil {
			return err // the slot is wasted
		}
		waited += max(d, 0)
		if time.Now().Before(s.until) && g.backoffLeft() <= 0 {
			return nil
		}
		// Woken too late, or a back-off began meanwhile: the slot is wasted, and the call books
		// another (after the back-off).
	}
}

func (g *Gate) backoffLeft() time.Duration {
	return time.Until(time.UnixMilli(g.until.Load()))
}

// slot returns a slot booked for one call: the earliest this process holds, or else one of a batch
// it books for this call and those waiting with it. Only one booking is in flight at a time, so calls
// that arrive during it share the next.
func (g *Gate) slot(ctx context.Context) (slot, error) {
	g.mu.Lock()
	for {
		if s, ok, err := g.takeLocked(ctx); ok || err != nil {
			g.mu.Unlock()
			return s, err
		}
		if !g.booking {
			break
		}
		booked := g.booked
		g.waiting++
		g.mu.Unlock()
		select {
		case <-ctx.Done():
			g.mu.Lock()
			g.waiting--
			g.mu.Unlock()
			return slot{}, ctx.Err()
		case <-booked:
		}
		g.mu.Lock()
		g.waiting--
	}
	need := min(1+g.waiting, maxBatch)
	spare := max(min(g.burst, maxBatch)-need, 0)
	g.booking = true
	g.mu.Unlock()

	bound, cause := g.bound(ctx)
	slots, first, err := g.book(ctx, need, spare, bound)

	g.mu.Lock()
	defer g.mu.Unlock()
	g.booking = false
	close(g.booked)
	g.booked = make(chan struct{})
	if err != nil {
		return slot{}, err
	}
	if len(slots) == 0 {
		return slot{}, tooFar(first, cause)
	}
	g.slots = append(g.slots, slots...)
	slices.SortFunc(g.slots, func(a, b slot) int { return a.at.Compare(b.at) })
	s, _, err := g.takeLocked(ctx)
	return s, err
}

// takeLocked takes the earliest slot held that is still usable, dropping those that are not. It
// takes none and returns an error if that slot comes after ctx's deadline.
func (g *Gate) takeLocked(ctx context.Context) (slot, bool, error) {
	now := time.Now()
	g.slots = slices.DeleteFunc(g.slots, func(s slot) bool { return !now.Before(s.until) })
	if len(g.slots) == 0 {
		return slot{}, false, nil
	}
	s := g.slots[0]
	if dl, ok := ctx.Deadline(); ok && s.at.After(dl) {
		return slot{}, false, tooFar(s.at.Sub(now), context.DeadlineExceeded)
	}
	g.slots = g.slots[1:]
	return s, true, nil
}

// bound is how far away a slot may be booked for a call on ctx, negative for no bound: MaxWait, or
// ctx's deadline if that is sooner (a later slot would be wasted). cause is the error for a slot
// beyond it.
func (g *Gate) bound(ctx context.Context) (bound time.Duration, cause error) {
	bound, cause = -1, nil
	if g.maxWait > 0 {
		bound, cause = g.maxWait, ErrWaitTooLong
	}
	if dl, ok := ctx.Deadline(); ok {
		if d := max(time.Until(dl), 0); bound < 0 || d < bound {
			bound, cause = d, context.DeadlineExceeded
		}
	}
	return bound, cause
}

func tooFar(wait time.Duration, cause error) error {
	return &WaitError{Wait: wait, Cause: cause}
}

// reserveScript books consecutive slots of the GCRA limit in one step. Slot i (from 0) moves the TAT
// to tat+(i+1)*interval (rounded up) and may go burst intervals before that TAT, or at once if that
// has passed; so
// it may go first+i*interval from now, where first (negative when the limit has credit) is the first
// slot's wait. The time is Redis's, so that every process agrees on it.
//
// The TAT is kept as github.com/go-redis/redis_rate keeps it (seconds since 2017-01-01, so that a
// double holds microseconds), and expires just after it passes, as an absent key means a full burst.
//
// KEYS[1]: the TAT. ARGV: interval (s), burst, need, spare, bound (s; negative for none). It books
// the first need slots, but none that would wait more than bound; then, if it booked all of them, up
// to spare more that may go at once. It returns {slots booked, first's wait in µs rounded up}; when
// even the first slot is beyond bound it books nothing.
var reserveScript = redis.NewScript(`
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call("TIME")
local now = (t[1] - 1483228800) + t[2] / 1000000
local interval = tonumber(ARGV[1])
local need, spare, bound = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local tat = math.max(tonumber(redis.call("GET", KEYS[1]) or 0), now)
local first = tat - now - (tonumber(ARGV[2]) - 1) * interval
local waitus = math.ceil(first * 1000000)
local n = need
if bound >= 0 then
  if first > bound then
    return {0, waitus}
  end
  n = math.min(n, math.floor((bound - first) / interval) + 1)
end
if n == need and first <= 0 then
  n = n + math.max(0, math.min(spare, math.floor(-first / interval) + 1 - need))
end
local step = n * interval
local moved = tat + step
if moved - tat < step then
  -- Rounded down: take the next double up, so that the TAT moves on by no less than n intervals.
  local _, e = math.frexp(moved)
  moved = moved + math.ldexp(1, e - 53)
end
tat = moved
-- A millisecond more than the TAT is ahead: the expiry counts from Redis's millisecond, which may be
-- up to one behind now, and an early expiry would let a slot go before the TAT.
redis.call("SET", KEYS[1], tat, "PX", math.ceil((tat - now) * 1000) + 1)
return {n, waitus}
`)

// book books up to need slots, none more than bound away (negative: no bound), and up to spare more
// that are free at once; it returns them, earliest first, and the first slot's wait. It books nothing
// when the first slot is beyond bound.
func (g *Gate) book(ctx context.Context, need, spare int, bound time.Duration) ([]slot, time.Duration, error) {
	b := -1.0
	if bound >= 0 {
		b = bound.Seconds()
	}
	sent := time.Now()
	v, err := reserveScript.Run(ctx, g.rdb, []string{g.rateKey},
		g.interval.Seconds(), g.burst, need, spare, b).Int64Slice()
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		return nil, 0, fmt.Errorf("rate limiter: %w", err)
	}
	if len(v) != 2 || v[0] < 0 || v[0] > int64(need+spare) {
		return nil, 0, fmt.Errorf("rate limiter: unexpected reply %v", v)
	}
	// Redis ran the script between sent and now. A slot starts counting from now, so that a call never
	// goes early, and stops being usable counting from sent, so that a call never goes more than late
	// late (unless Redis took over late-minUse to answer).
	now := time.Now()
	first := time.Duration(v[1]) * time.Microsecond
	slots := make([]slot, v[0])
	for i := range slots {
		w := max(first+time.Duration(i)*g.interval, 0)
		s := slot{at: now.Add(w), until: sent.Add(w + late)}
		if s.until.Sub(s.at) < minUse {
			s.until = s.at.Add(minUse)
		}
		slots[i] = s
	}
	return slots, first, nil
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
	if err := backoffScript.Run(ctx, g.rdb, []string{g.backoffKey}, until, d.Milliseconds()+1000).Err(); err != nil {
		return fmt.Errorf("rate limiter: sharing a back-off: %w", err)
	}
	return nil
}

func (g *Gate) raise(until int64) {
	for {
		cur := g.until.Load()
		if until <= cur || g.until.CompareAndSwap(cur, until) {
			return
		}
	}
}

// Run reads the shared back-off from Redis every poll interval until ctx ends, then returns ctx's
// error. A read that fails leaves the back-off as it was until the next.
func (g *Gate) Run(ctx context.Context) error {
	background.Every(ctx, g.poll, background.AtOnce, func(ctx context.Context) {
		if v, err := g.rdb.Get(ctx, g.backoffKey).Result(); err == nil {
			if until, err := strconv.ParseInt(v, 10, 64); err == nil {
				g.raise(until)
			}
		}
	})
	return ctx.Err()
}
