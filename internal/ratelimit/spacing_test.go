package ratelimit

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/testutil"
)

// TestSpacingKeepsEveryWindowWithinTheLimit checks the arithmetic the package doc's promise rests on:
// the interval between slots for a rate and window, that no window of that length or longer can then
// hold more than Rate×Window + Burst − 1 calls at the API (slots within late + jitter of each other
// there), the share of Rate a saturated limit reaches, and what a one-second window may hold.
func TestSpacingKeepsEveryWindowWithinTheLimit(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		rate, burst  int
		window       time.Duration // 0: the default, a minute
		wantInterval time.Duration
		wantShare    float64 // at least
		wantMost1s   int     // the most a one-second window can hold
	}{
		{"500/s over a minute", 500, 1, 0, 2_004_334, 0.9978, 564},
		{"2000/s over a minute", 2000, 1, 0, 501_084, 0.9978, 2256},
		{"2000/s burst 100 over a minute", 2000, 100, 0, 501_084, 0.9978, 2355},
		{"100000/s burst 100 over a minute", 100_000, 100, 0, 10_022, 0.9978, 112_852},
		{"1/s over a minute", 1, 1, 0, 1_002_166_684, 0.9978, 2},
		// A one-second window keeps every second within the limit, at 88% of the rate.
		{"25/s over a second", 25, 1, time.Second, 45_200_040, 0.884, 25},
		{"500/s over ten seconds", 500, 1, 10 * time.Second, 2_026_001, 0.987, 558},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := New(nil, Config{Rate: tt.rate, Burst: tt.burst, Window: tt.window})
			if err != nil {
				t.Fatal(err)
			}
			if g.interval != tt.wantInterval {
				t.Errorf("interval %d ns, want %d", g.interval, tt.wantInterval)
			}
			w := cmp(tt.window, defaultWindow)
			for _, k := range []int{1, 2, 10} {
				kw := time.Duration(k) * w
				limit := int(int64(tt.rate)*int64(kw)/int64(time.Second)) + tt.burst - 1
				if most := g.most(kw, spread); most > limit {
					t.Errorf("a window of %s can hold %d calls at the API, more than the %d allowed", kw, most, limit)
				}
			}
			if share := float64(time.Second) / (float64(tt.rate) * float64(g.interval)); share < tt.wantShare {
				t.Errorf("a saturated limit reaches %.5f of the rate, want at least %.4f", share, tt.wantShare)
			}
			if most := g.most(time.Second, spread); most != tt.wantMost1s {
				t.Errorf("a one-second window can hold %d calls at the API, want %d", most, tt.wantMost1s)
			}
		})
	}
}

func cmp(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// redisTAT is Redis's clock now as a TAT: seconds since 2017-01-01.
func redisTAT(t *testing.T, rdb redis.UniversalClient) float64 {
	t.Helper()
	now, err := rdb.Time(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return float64(now.UnixMicro())/1e6 - 1483228800
}

func setTAT(t *testing.T, rdb redis.UniversalClient, g *Gate, tat float64) {
	t.Helper()
	if err := rdb.Set(context.Background(), g.rateKey, strconv.FormatFloat(tat, 'f', -1, 64), time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
}

// TestBookingMovesTATByWholeIntervals: one booking of n slots moves the TAT on by n intervals, never
// less (it may round up by a double's step), hands back n slots one interval apart, the first at the
// TAT less the burst's intervals, and leaves each usable for at most late.
func TestBookingMovesTATByWholeIntervals(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	tests := []struct {
		name        string
		burst       int
		need, spare int
		ahead       time.Duration // how far the TAT is ahead of Redis's clock; 0: no TAT (a full burst)
		wantSlots   int
	}{
		{"behind a queue", 1, 3, 0, 5 * time.Second, 3},
		{"behind a queue, spares not free", 4, 2, 2, 5 * time.Second, 2},
		{"a full burst, spares free", 5, 1, 4, 0, 5},
		{"sixteen at once behind a queue", 1, 16, 0, 5 * time.Second, 16},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGate(t, client(t, db), Config{Rate: 1000, Burst: tt.burst, Queue: "q" + strconv.Itoa(i)})
			var before float64
			if tt.ahead > 0 {
				before = redisTAT(t, db.Client) + tt.ahead.Seconds()
				setTAT(t, db.Client, g, before)
			}
			slots, first, err := g.book(context.Background(), tt.need, tt.spare, -1)
			if err != nil {
				t.Fatal(err)
			}
			if len(slots) != tt.wantSlots {
				t.Fatalf("booked %d slots, want %d", len(slots), tt.wantSlots)
			}
			for i := range slots {
				if s := slots[i]; s.until.Sub(s.at) > late {
					t.Errorf("slot %d usable for %s, more than late (%s)", i, s.until.Sub(s.at), late)
				}
				if i == 0 {
					continue
				}
				gap := slots[i].at.Sub(slots[i-1].at)
				if tt.ahead > 0 && gap != g.interval {
					t.Errorf("slots %d and %d %s apart, want %s", i-1, i, gap, g.interval)
				}
				// Free slots go at once, but for the first wait's rounding up to the microsecond.
				if tt.ahead == 0 && (gap < 0 || gap >= time.Microsecond) {
					t.Errorf("free slots %d and %d %s apart, want at once", i-1, i, gap)
				}
			}
			if tt.ahead == 0 {
				return
			}
			// Redis's clock had moved on by the time the script ran, so the wait is shorter than this.
			if most := tt.ahead - time.Duration(tt.burst-1)*g.interval; first <= 0 || first > most {
				t.Errorf("first slot in %s, want in (0, %s]", first, most)
			}
			moved := tat(t, db.Client, g) - before
			step := float64(tt.wantSlots) * g.interval.Seconds()
			if moved < step || moved > step+1e-7 {
				t.Errorf("the TAT moved on %.9f s, want %d intervals: %.9f s, rounded up by at most a double's step", moved, tt.wantSlots, step)
			}
		})
	}
}

// TestTATNeverRoundsDown: where adding a booking's intervals to the TAT would round down (the TAT is
// a double of seconds since 2017, in 60 ns steps, and which way a sum rounds depends on the slots'
// total modulo that step), the script takes the next double up, so that the TAT never moves on by
// less than the slots booked; where it rounds up or is exact, the script keeps the sum.
func TestTATNeverRoundsDown(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	g := newGate(t, client(t, db), Config{Rate: 700, Queue: "q"})
	before := redisTAT(t, db.Client) + 10
	// slotsRounding is a booking size whose sum with before rounds down, or not.
	slotsRounding := func(down bool) int {
		for n := 1; n <= maxBatch; n++ {
			step := float64(n) * g.interval.Seconds()
			if (before+step-before < step) == down {
				return n
			}
		}
		t.Fatalf("no booking of up to %d slots at %s whose sum with %f rounds down=%v", maxBatch, g.interval, before, down)
		return 0
	}
	for _, tt := range []struct {
		name string
		down bool
	}{{"addition rounds down", true}, {"addition rounds up or is exact", false}} {
		t.Run(tt.name, func(t *testing.T) {
			n := slotsRounding(tt.down)
			step := float64(n) * g.interval.Seconds()
			setTAT(t, db.Client, g, before)
			if slots, _, err := g.book(context.Background(), n, 0, -1); err != nil || len(slots) != n {
				t.Fatalf("booked %d of %d slots: %v", len(slots), n, err)
			}
			after := tat(t, db.Client, g)
			if moved := after - before; moved < step {
				t.Errorf("%d slots moved the TAT on %.12f s, less than their %.12f s", n, moved, step)
			}
			if want := before + step; !tt.down && after != want {
				t.Errorf("TAT %.9f, want the plain sum %.9f", after, want)
			}
		})
	}
}

// TestGatesShareSlotsWithoutLoss: bookings of 1 to 16 slots from two Gates (two processes) at once
// move the shared TAT on by exactly the slots they booked together: none booked twice, none lost.
func TestGatesShareSlotsWithoutLoss(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	const gates, callers, bookings = 2, 4, 50
	gs := make([]*Gate, gates)
	for i := range gs {
		gs[i] = newGate(t, client(t, db), Config{Rate: 100_000, Queue: "q"})
	}
	before := redisTAT(t, db.Client) + 1
	setTAT(t, db.Client, gs[0], before)
	var (
		mu     sync.Mutex
		booked int
		wg     sync.WaitGroup
	)
	for _, g := range gs {
		for c := range callers {
			wg.Go(func() {
				for b := range bookings {
					slots, _, err := g.book(context.Background(), 1+(b+c)%maxBatch, 0, -1)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					booked += len(slots)
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	step := gs[0].interval.Seconds()
	moved := tat(t, db.Client, gs[0]) - before
	// Each booking may round the TAT up by a double's step (60 ns); 2e-7 s allows three.
	if slack := float64(gates*callers*bookings) * 2e-7; moved < float64(booked)*step || moved > float64(booked)*step+slack {
		t.Errorf("%d slots booked, the TAT moved on %.9f s: %.3f intervals", booked, moved, moved/step)
	}
}
