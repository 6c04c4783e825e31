package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/redistest"
)

// commandLog is a go-redis hook that records the commands a client sends, with their first key.
type commandLog struct {
	mu   sync.Mutex
	cmds []string
}

func (l *commandLog) DialHook(next redis.DialHook) redis.DialHook { return next }

func (l *commandLog) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		l.add(cmd)
		return next(ctx, cmd)
	}
}

func (l *commandLog) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		for _, c := range cmds {
			l.add(c)
		}
		return next(ctx, cmds)
	}
}

func (l *commandLog) add(cmd redis.Cmder) {
	switch cmd.Name() {
	case "hello", "auth", "select", "client":
		return // a new connection's handshake
	}
	s := cmd.Name()
	if args := cmd.Args(); len(args) > 1 {
		s += " " + fmt.Sprint(args[1])
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cmds = append(l.cmds, s)
}

func (l *commandLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.cmds)
}

// client returns a new client on db, which the test closes when it ends.
func client(t *testing.T, db *redistest.DB, hooks ...redis.Hook) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: db.Addr, DB: db.Number})
	for _, h := range hooks {
		c.AddHook(h)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func newGate(t *testing.T, rdb redis.UniversalClient, cfg Config) *Gate {
	t.Helper()
	g, err := New(rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// run runs g's poll of the shared back-off until the test ends.
func run(t *testing.T, g *Gate) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// observations records what a Gate's Observe is told.
type observations struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (o *observations) observe(d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.waits = append(o.waits, d)
}

func (o *observations) list() []time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.waits)
}

func TestNewRefusesNegativeSettings(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	for _, cfg := range []Config{{Rate: -1}, {Rate: 10, Burst: -1}} {
		if _, err := New(db.Client, cfg); err == nil {
			t.Errorf("New(%+v) accepted a negative setting", cfg)
		}
	}
}

// TestWaitWithoutRateLimitNeverWaits: with Rate 0 and no back-off, Wait returns at once and sends
// Redis nothing; the only commands are Run's reads of the shared back-off.
func TestWaitWithoutRateLimitNeverWaits(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	log := &commandLog{}
	obs := &observations{}
	g := newGate(t, client(t, db, log), Config{Queue: "q", PollInterval: 10 * time.Millisecond, Observe: obs.observe})
	run(t, g)
	waitFor(t, "Run to poll twice", func() bool { return len(log.list()) >= 2 })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 1000 {
		if err := g.Wait(ctx); err != nil {
			t.Fatalf("Wait %d: %v", i, err)
		}
	}
	if w := obs.list(); len(w) != 0 {
		t.Errorf("Observe was told of %d waits, e.g. %s; want none", len(w), w[0])
	}
	for _, c := range log.list() {
		if c != "get activator:{q}:backoff_until" {
			t.Errorf("Redis command %q sent without a rate limit; only the back-off poll may be", c)
		}
	}
}

// TestRateLimitIsGlobal runs 200 Waits through 4 Gates on one database, as 4 worker processes would,
// and checks from the times the Waits returned that no 1 s window holds more than Rate+Burst.
func TestRateLimitIsGlobal(t *testing.T) {
	t.Parallel()
	const (
		rate, burst = 50, 1
		gates       = 4
		perGate     = 50 // 200 in all: 4 s at 50/s
		callers     = 5  // goroutines per gate, as concurrent jobs in one process
	)
	db := redistest.New(t)
	var (
		mu    sync.Mutex
		times []time.Time
		wg    sync.WaitGroup
	)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for range gates {
		g := newGate(t, client(t, db), Config{Rate: rate, Burst: burst, Queue: "q"})
		for range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range perGate / callers {
					if err := g.Wait(ctx); err != nil {
						t.Errorf("Wait: %v", err)
						return
					}
					now := time.Now()
					mu.Lock()
					times = append(times, now)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	if len(times) != gates*perGate {
		t.Fatalf("%d Waits returned, want %d", len(times), gates*perGate)
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	maxWin := maxInWindow(times, time.Second)
	span := times[len(times)-1].Sub(times[0])
	overall := float64(len(times)-1) / span.Seconds()
	t.Logf("%d Waits over %s: %.1f/s overall; busiest 1 s window held %d (limit %d/s, burst %d)",
		len(times), span.Round(time.Millisecond), overall, maxWin, rate, burst)
	if maxWin > rate+burst {
		t.Errorf("a 1 s window held %d Waits, more than the rate %d plus the burst %d", maxWin, rate, burst)
	}
	if overall > rate*1.1 {
		t.Errorf("overall rate %.1f/s is above the limit %d/s", overall, rate)
	}
	// With Burst 1 every slot's wake-up latency (timer, jitter, a Redis round trip) is lost, so the
	// rate reached stays a little under the limit; far under it would mean the limiter over-throttles.
	if overall < rate*0.7 {
		t.Errorf("overall rate %.1f/s is far below the limit %d/s that saturating callers should reach", overall, rate)
	}
}

// maxInWindow is the most times, sorted, that fall in any half-open window [t, t+w).
func maxInWindow(times []time.Time, w time.Duration) int {
	best, j := 0, 0
	for i := range times {
		for j < len(times) && times[j].Before(times[i].Add(w)) {
			j++
		}
		best = max(best, j-i)
	}
	return best
}

// backoffUntil reads the shared back-off from Redis, 0 when none is set.
func backoffUntil(t *testing.T, rdb redis.UniversalClient, g *Gate) int64 {
	t.Helper()
	v, err := rdb.Get(context.Background(), g.backoffKey).Result()
	if errors.Is(err, redis.Nil) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestBackoffStopsOtherGates: a back-off set through one gate holds back another gate on the same
// queue (once its poll has read it) until the back-off time, and leaves other queues alone.
func TestBackoffStopsOtherGates(t *testing.T) {
	t.Parallel()
	const (
		poll = 20 * time.Millisecond
		d    = 600 * time.Millisecond
	)
	db := redistest.New(t)
	ctx := context.Background()
	setter := newGate(t, client(t, db), Config{Queue: "q", PollInterval: poll})
	obs := &observations{}
	other := newGate(t, client(t, db), Config{Queue: "q", PollInterval: poll, Observe: obs.observe})
	otherQueue := newGate(t, client(t, db), Config{Queue: "elsewhere", PollInterval: poll})
	run(t, other)
	run(t, otherQueue)

	if err := setter.Backoff(ctx, d); err != nil {
		t.Fatal(err)
	}
	until := backoffUntil(t, db.Client, setter)
	if until == 0 || setter.until.Load() != until {
		t.Fatalf("back-off in Redis %d, in the setting gate %d; want equal and set", until, setter.until.Load())
	}
	learnStart := time.Now()
	waitFor(t, "the other gate to read the back-off", func() bool { return other.until.Load() == until })
	t.Logf("the other gate learnt of the back-off %s after it was set (poll interval %s)",
		time.Since(learnStart).Round(time.Millisecond), poll)

	if err := other.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if returned := time.Now(); returned.Before(time.UnixMilli(until)) {
		t.Errorf("the other gate's Wait returned %s before the back-off ended", time.UnixMilli(until).Sub(returned))
	}
	if w := obs.list(); len(w) != 1 || w[0] <= 0 {
		t.Errorf("Observe was told %v, want one positive wait", w)
	}
	// The back-off is keyed by queue: another queue's gate never waited for it.
	if otherQueue.until.Load() != 0 {
		t.Errorf("a gate of another queue took on the back-off")
	}
	if err := otherQueue.Wait(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestBackoffNeverMovesEarlier: a shorter back-off set while a longer one is in force changes
// neither the shared time nor any gate's.
func TestBackoffNeverMovesEarlier(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	ctx := context.Background()
	a := newGate(t, client(t, db), Config{Queue: "q", PollInterval: 10 * time.Millisecond})
	b := newGate(t, client(t, db), Config{Queue: "q", PollInterval: 10 * time.Millisecond})
	run(t, b)

	if err := a.Backoff(ctx, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	long := backoffUntil(t, db.Client, a)
	waitFor(t, "b to read the back-off", func() bool { return b.until.Load() == long })

	// Shorter, through either gate: nothing moves.
	for _, g := range []*Gate{a, b} {
		if err := g.Backoff(ctx, 100*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if got := backoffUntil(t, db.Client, a); got != long {
			t.Errorf("a shorter back-off moved the shared time from %d to %d", long, got)
		}
		if a.until.Load() != long || b.until.Load() != long {
			t.Errorf("a shorter back-off moved a gate's time: a %d, b %d, want %d", a.until.Load(), b.until.Load(), long)
		}
	}
	// Zero or negative: nothing moves either.
	if err := a.Backoff(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if got := backoffUntil(t, db.Client, a); got != long || a.until.Load() != long {
		t.Errorf("a zero back-off moved the time: Redis %d, gate %d, want %d", got, a.until.Load(), long)
	}
	ttl, err := db.Client.PTTL(ctx, a.backoffKey).Result()
	if err != nil || ttl < 2*time.Second {
		t.Errorf("back-off key TTL %s, %v; want the longer back-off's", ttl, err)
	}

	// Longer: it moves, everywhere.
	if err := b.Backoff(ctx, 4*time.Second); err != nil {
		t.Fatal(err)
	}
	longer := backoffUntil(t, db.Client, a)
	if longer <= long || b.until.Load() != longer {
		t.Errorf("a longer back-off: Redis %d, b %d; want both later than %d", longer, b.until.Load(), long)
	}
}

func TestWaitReturnsContextError(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	ctx := context.Background()

	// While a back-off is in force.
	g := newGate(t, client(t, db), Config{Queue: "backoff"})
	if err := g.Backoff(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(20*time.Millisecond, cancel)
	if err := g.Wait(cctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait during a back-off, cancelled: %v, want context.Canceled", err)
	}
	done, cancelDone := context.WithCancel(ctx)
	cancelDone()
	if err := g.Wait(done); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait during a back-off with a done context: %v, want context.Canceled", err)
	}

	// While the rate limit holds the call back.
	slow := newGate(t, client(t, db), Config{Queue: "rate", Rate: 1})
	if err := slow.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	dctx, cancelD := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelD()
	if err := slow.Wait(dctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait for the rate limit past the deadline: %v, want context.DeadlineExceeded", err)
	}
}

func TestObserveIsToldOfWaits(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	ctx := context.Background()

	// A back-off.
	obs := &observations{}
	g := newGate(t, client(t, db), Config{Queue: "backoff", Observe: obs.observe})
	if err := g.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if w := obs.list(); len(w) != 0 {
		t.Fatalf("a Wait that did not wait was observed: %v", w)
	}
	if err := g.Backoff(ctx, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	until := time.UnixMilli(g.until.Load())
	start := time.Now()
	if err := g.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	w := obs.list()
	if len(w) != 1 {
		t.Fatalf("Observe calls %v, want one", w)
	}
	if w[0] <= 0 || w[0] > elapsed || w[0] > until.Sub(start) {
		t.Errorf("observed wait %s; want positive, within the %s Wait took and the %s back-off left",
			w[0], elapsed, until.Sub(start))
	}

	// The rate limit.
	robs := &observations{}
	r := newGate(t, client(t, db), Config{Queue: "rate", Rate: 5, Observe: robs.observe})
	if err := r.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	if err := r.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	elapsed = time.Since(start)
	rw := robs.list()
	if len(rw) != 1 || rw[0] <= 0 || rw[0] > elapsed {
		t.Errorf("Observe calls %v for the second call at 5/s; want one positive wait within the %s it took", rw, elapsed)
	}
}

// TestBurstGrantsSeveralCallsPerRoundTrip shows that with a burst above one and a limit that does
// not bind, one Redis round trip grants several calls, and that with a limit that binds, batching
// keeps every one-second window within it.
func TestBurstGrantsSeveralCallsPerRoundTrip(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	const burst, calls = 16, 600
	for _, rate := range []int{100_000, 400} {
		t.Run(strconv.Itoa(rate), func(t *testing.T) { burstRun(t, db, rate, burst, calls) })
	}
}

func burstRun(t *testing.T, db *redistest.DB, rate, burst, calls int) {
	var log commandLog
	g := newGate(t, client(t, db, &log), Config{Rate: rate, Burst: burst, Queue: "q" + strconv.Itoa(rate)})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var (
		mu    sync.Mutex
		times []time.Time
		wg    sync.WaitGroup
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range calls / 8 {
				if err := g.Wait(ctx); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				times = append(times, time.Now())
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	scripts := 0
	for _, c := range log.list() {
		if len(c) >= 4 && (c[:4] == "eval") {
			scripts++
		}
	}
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	most := maxInWindow(times, time.Second)
	t.Logf("%d calls, %d rate-limit round trips, busiest second %d (limit %d/s, burst %d)", len(times), scripts, most, rate, burst)
	if rate > 10_000 && scripts*2 > calls {
		t.Errorf("%d round trips for %d calls: want several calls granted per round trip", scripts, calls)
	}
	// Grants may be spent up to tokenTTL late: a window holds at most rate*(1+ttl) + burst calls.
	if limit := rate + rate*int(tokenTTL/time.Millisecond)/1000 + burst; most > limit {
		t.Errorf("busiest second %d calls, above %d", most, limit)
	}
}
