package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/internal/window"
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
func client(t *testing.T, db *testutil.RedisDB, hooks ...redis.Hook) *redis.Client {
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
	db := testutil.Redis(t)
	for _, cfg := range []Config{{Rate: -1}, {Rate: 10, Burst: -1}, {Rate: 10, Window: -time.Second}} {
		if _, err := New(db.Client, cfg); err == nil {
			t.Errorf("New(%+v) accepted a negative setting", cfg)
		}
	}
}

// TestWaitWithoutRateLimitNeverWaits: with Rate 0 and no back-off, Wait returns at once and sends
// Redis nothing; the only commands are Run's reads of the shared back-off.
func TestWaitWithoutRateLimitNeverWaits(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	log := &commandLog{}
	obs := &observations{}
	g := newGate(t, client(t, db, log), Config{Queue: "q", PollInterval: 10 * time.Millisecond, Observe: obs.observe})
	run(t, g)
	testutil.WaitFor(t, 5*time.Second, "Run to poll twice", func() bool { return len(log.list()) >= 2 })

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
		if c != "get "+rediskeys.Backoff("q") {
			t.Errorf("Redis command %q sent without a rate limit; only the back-off poll may be", c)
		}
	}
}

// TestRateLimitHoldsAcrossGates saturates one limit for a fixed time from 2 Gates on one key, as 2
// worker processes, with 8 callers each, and checks from the times the calls were made (not from the
// limiter's view) that no 1 s window held more calls than the Gate's construction allows (its
// jitter covers a caller descheduled between Wait and taking the time), that the calls reached at
// least 95% of the limit (slots are booked back to back, so wake-ups a little late lose none; the
// Gate aims at 99.78% over a minute), and that no call cost more than one Redis round trip (nobody
// polls).
func TestRateLimitHoldsAcrossGates(t *testing.T) {
	t.Parallel()
	for _, burst := range []int{1, 10} {
		t.Run("burst="+strconv.Itoa(burst), func(t *testing.T) {
			t.Parallel()
			saturate(t, 25, burst)
		})
	}
}

func saturate(t *testing.T, rate, burst int) {
	const (
		gates   = 2
		callers = 8
		d       = 6 * time.Second
	)
	db := testutil.Redis(t)
	var (
		log   commandLog
		mu    sync.Mutex
		times []time.Time
		wg    sync.WaitGroup
	)
	start := time.Now()
	end := start.Add(d)
	ctx, cancel := context.WithDeadline(context.Background(), end)
	defer cancel()
	var last *Gate // any of them: they share their settings
	for range gates {
		g := newGate(t, client(t, db, &log), Config{Rate: rate, Burst: burst, Queue: "q"})
		last = g
		for range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					if err := g.Wait(ctx); err != nil {
						if !errors.Is(err, context.DeadlineExceeded) {
							t.Errorf("Wait: %v", err)
						}
						return
					}
					now := time.Now()
					if !now.Before(end) {
						return
					}
					mu.Lock()
					times = append(times, now)
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	most := window.Max(times, time.Second)
	scripts := countScripts(log.list())
	limit := float64(rate) * d.Seconds()
	t.Logf("%d calls in %s (%.1f%% of %d/s), %d rate-limit round trips; busiest 1 s window %d (burst %d)",
		len(times), d, 100*float64(len(times))/limit, rate, scripts, most, burst)
	if allowed := last.most(time.Second, spread); most > allowed {
		t.Errorf("a 1 s window held %d calls, more than the %d the limit of %d/s with a burst of %d allows", most, allowed, rate, burst)
	}
	if float64(len(times)) < 0.95*limit {
		t.Errorf("%d calls in %s, under 95%% of the %d/s limit that saturating callers should reach", len(times), d, rate)
	}
	// Each call books at most once; besides, each caller's last Wait may be refused (its slot is past
	// the deadline), and a client's first use of the script may need a second command (NOSCRIPT).
	if spare := 2 * gates * callers; scripts > len(times)+spare {
		t.Errorf("%d rate-limit round trips for %d calls: a call asked more than once", scripts, len(times))
	}
}

// countScripts counts the scripts (EVAL or EVALSHA) among logged commands.
func countScripts(cmds []string) int {
	n := 0
	for _, c := range cmds {
		if strings.HasPrefix(c, "eval") {
			n++
		}
	}
	return n
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
	db := testutil.Redis(t)
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
	testutil.WaitFor(t, 5*time.Second, "the other gate to read the back-off", func() bool { return other.until.Load() == until })
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
	db := testutil.Redis(t)
	ctx := context.Background()
	a := newGate(t, client(t, db), Config{Queue: "q", PollInterval: 10 * time.Millisecond})
	b := newGate(t, client(t, db), Config{Queue: "q", PollInterval: 10 * time.Millisecond})
	run(t, b)

	if err := a.Backoff(ctx, 3*time.Second); err != nil {
		t.Fatal(err)
	}
	long := backoffUntil(t, db.Client, a)
	testutil.WaitFor(t, 5*time.Second, "b to read the back-off", func() bool { return b.until.Load() == long })

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
	db := testutil.Redis(t)
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

	// While the call sleeps until its slot, about a second away at 1/s.
	slow := newGate(t, client(t, db), Config{Queue: "rate", Rate: 1})
	if err := slow.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	sctx, cancelS := context.WithCancel(ctx)
	time.AfterFunc(20*time.Millisecond, cancelS)
	start := time.Now()
	if err := slow.Wait(sctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait for a slot, cancelled: %v, want context.Canceled", err)
	}
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("Wait cancelled after 20ms returned after %s, want at once", took)
	}
}

// tat reads the limit's theoretical arrival time from Redis, in redis_rate's seconds since 2017.
func tat(t *testing.T, rdb redis.UniversalClient, g *Gate) float64 {
	t.Helper()
	v, err := rdb.Get(context.Background(), g.rateKey).Float64()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestWaitRefusesSlotsItCannotUse: when the next slot comes after ctx's deadline, or further away
// than MaxWait, Wait returns at once, with context.DeadlineExceeded or ErrWaitTooLong, and books
// nothing.
func TestWaitRefusesSlotsItCannotUse(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ctx := context.Background()
	g := newGate(t, client(t, db), Config{Queue: "q", Rate: 1})
	if err := g.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	before := tat(t, db.Client, g)

	dctx, cancel := context.WithTimeout(ctx, 600*time.Millisecond)
	defer cancel()
	if err := g.Wait(dctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait for a slot after the deadline: %v, want context.DeadlineExceeded", err)
	}
	if dctx.Err() != nil {
		t.Errorf("Wait for a slot after the deadline returned only when the deadline passed; want at once")
	}
	capped := newGate(t, client(t, db), Config{Queue: "q", Rate: 1, MaxWait: 200 * time.Millisecond})
	if err := capped.Wait(ctx); !errors.Is(err, ErrWaitTooLong) {
		t.Errorf("Wait for a slot beyond MaxWait: %v, want ErrWaitTooLong", err)
	}
	if after := tat(t, db.Client, g); after != before {
		t.Errorf("refused Waits moved the TAT from %f to %f; want nothing booked", before, after)
	}
}

// TestBurstLetsCallsGoAtOnce: after a quiet spell Burst calls go without waiting, most of them on
// spare slots the first call's round trip booked; the next waits for the limit.
func TestBurstLetsCallsGoAtOnce(t *testing.T) {
	t.Parallel()
	const burst = 5
	db := testutil.Redis(t)
	var log commandLog
	obs := &observations{}
	g := newGate(t, client(t, db, &log), Config{Queue: "q", Rate: 1, Burst: burst, Observe: obs.observe})
	ctx := context.Background()
	for i := range burst {
		if err := g.Wait(ctx); err != nil {
			t.Fatalf("Wait %d: %v", i, err)
		}
	}
	if w := obs.list(); len(w) != 0 {
		t.Errorf("the first %d calls after a quiet spell waited %v; want none to", burst, w)
	}
	// Spares are dropped late after their time, so a very slow machine may book again.
	trips := countScripts(log.list())
	t.Logf("%d calls at once, %d rate-limit round trips", burst, trips)
	if trips >= burst {
		t.Errorf("%d round trips for %d calls within the burst; want spares booked with the first", trips, burst)
	}
	if err := g.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if w := obs.list(); len(w) != 1 || w[0] <= 0 || w[0] > g.interval+time.Millisecond {
		t.Errorf("the call after the burst waited %v; want once, up to the %s interval", w, g.interval)
	}
}

// TestBackoffStopsCallersWaitingForSlots: callers of two gates saturate the limit; a back-off set
// through one stops both gates' calls, those sleeping until a booked slot included, until it ends,
// and then they go on.
func TestBackoffStopsCallersWaitingForSlots(t *testing.T) {
	t.Parallel()
	const (
		poll  = 10 * time.Millisecond
		d     = time.Second
		grace = 100 * time.Millisecond // for calls already let through, and the other gate's poll
	)
	db := testutil.Redis(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu    sync.Mutex
		times []time.Time
		wg    sync.WaitGroup
	)
	defer wg.Wait()
	gs := make([]*Gate, 2)
	for i := range gs {
		gs[i] = newGate(t, client(t, db), Config{Queue: "q", Rate: 50, PollInterval: poll})
		run(t, gs[i])
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for gs[i].Wait(ctx) == nil {
					now := time.Now()
					mu.Lock()
					times = append(times, now)
					mu.Unlock()
				}
			}()
		}
	}
	time.Sleep(300 * time.Millisecond)
	set := time.Now()
	if err := gs[0].Backoff(ctx, d); err != nil {
		t.Fatal(err)
	}
	until := time.UnixMilli(gs[0].until.Load())
	time.Sleep(time.Until(until) + 300*time.Millisecond)
	cancel()
	wg.Wait()

	var during, after int
	for _, at := range times {
		switch {
		case at.After(set.Add(grace)) && at.Before(until):
			during++
		case !at.Before(until):
			after++
		}
	}
	t.Logf("%d calls in all; %d during the back-off (after %s of grace), %d after it", len(times), during, grace, after)
	if during > 0 {
		t.Errorf("%d calls went during the back-off", during)
	}
	if after == 0 {
		t.Errorf("no call went after the back-off ended")
	}
}

// TestStateIsRedisRateCompatible: the TAT is kept in the key and form github.com/go-redis/redis_rate
// used (seconds since 2017-01-01), so workers of the previous release and this one share one limit
// while a deploy rolls: a TAT it wrote holds calls back here.
func TestStateIsRedisRateCompatible(t *testing.T) {
	t.Parallel()
	const jan2017 = 1483228800
	db := testutil.Redis(t)
	ctx := context.Background()
	obs := &observations{}
	g := newGate(t, client(t, db), Config{Queue: "q", Rate: 10, Observe: obs.observe})
	if want := rediskeys.RateLimit("q"); g.rateKey != want {
		t.Errorf("rate key %q, want redis_rate's %s", g.rateKey, want)
	}
	if err := g.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	now := float64(time.Now().UnixMicro())/1e6 - jan2017
	if got := tat(t, db.Client, g); got < now-1 || got > now+1 {
		t.Errorf("TAT %f after one call at 10/s; want about %f (seconds since 2017)", got, now+0.1)
	}

	// As redis_rate would leave it with its TAT a second ahead.
	now = float64(time.Now().UnixMicro())/1e6 - jan2017
	if err := db.Client.Set(ctx, g.rateKey, strconv.FormatFloat(now+1, 'f', 6, 64), 2*time.Second).Err(); err != nil {
		t.Fatal(err)
	}
	if err := g.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if w := obs.list(); len(w) != 1 || w[0] < 500*time.Millisecond || w[0] > time.Second+time.Millisecond {
		t.Errorf("Observe was told %v after a TAT 1 s ahead; want one wait of nearly 1 s", w)
	}
}

func TestObserveIsToldOfWaits(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
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
// keeps every one-second window within what the Gate's spacing allows.
func TestBurstGrantsSeveralCallsPerRoundTrip(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	const burst, calls = 16, 600
	for _, rate := range []int{100_000, 400} {
		t.Run(strconv.Itoa(rate), func(t *testing.T) { burstRun(t, db, rate, burst, calls) })
	}
}

func burstRun(t *testing.T, db *testutil.RedisDB, rate, burst, calls int) {
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
	scripts := countScripts(log.list())
	slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
	most := window.Max(times, time.Second)
	t.Logf("%d calls, %d rate-limit round trips, busiest second %d (limit %d/s, burst %d)", len(times), scripts, most, rate, burst)
	if rate > 10_000 && scripts*2 > calls {
		t.Errorf("%d round trips for %d calls: want several calls granted per round trip", scripts, calls)
	}
	if allowed := g.most(time.Second, spread); most > allowed {
		t.Errorf("busiest second %d calls, above the %d the rate %d and the burst %d allow", most, allowed, rate, burst)
	}
}
