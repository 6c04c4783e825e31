package batch

import (
	"context"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/versori/activator/internal/testutil"
)

// at is the tests' clock: d after a fixed time.
func at(d time.Duration) time.Time { return time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC).Add(d) }

// every returns a completion of n jobs every step from from to to (to included).
func every(from, to, step time.Duration, n int64) []Completion {
	var out []Completion
	for d := from; d <= to; d += step {
		out = append(out, Completion{At: at(d), Jobs: n})
	}
	return out
}

// TestSettle works the rate, average, ETA and durations out of counts, times and recent
// completions, as of an injected now.
func TestSettle(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name          string
		s             Status
		now           time.Duration
		recent        []Completion
		rate, average float64
		window        time.Duration
		eta           time.Duration
		running       time.Duration
		elapsed       time.Duration
		finished      bool
	}{
		{
			// The case: queued 3 minutes before a worker started, then 90 jobs every half
			// second (180/s) for 2 minutes. The lifetime average said 13.8/s and an hour to go.
			name: "worker started late",
			s: Status{Queued: 660_600, Activated: 21_600, StartedAt: at(0), UpdatedAt: at(5 * time.Minute),
				FirstDoneAt: at(3 * time.Minute), LastDoneAt: at(5 * time.Minute)},
			now:    5 * time.Minute,
			recent: every(4*time.Minute+500*time.Millisecond, 5*time.Minute, 500*time.Millisecond, 90),
			rate:   180, average: 180, window: time.Minute,
			eta:     (660_600 - 21_600) / 180 * time.Second,
			running: 2 * time.Minute, elapsed: 5 * time.Minute,
		},
		{
			// The first job ended 10 s ago: the window is those 10 s, and the first flush (whose
			// jobs ended before it was written) is left out.
			name: "first job ended within the window",
			s: Status{Queued: 1000, Activated: 110, StartedAt: at(0), UpdatedAt: at(10 * time.Second),
				FirstDoneAt: at(0), LastDoneAt: at(10 * time.Second)},
			now:    10 * time.Second,
			recent: append([]Completion{{At: at(0), Jobs: 10}}, every(time.Second, 10*time.Second, time.Second, 10)...),
			rate:   10, average: 11, window: 10 * time.Second, eta: 89 * time.Second,
			running: 10 * time.Second, elapsed: 10 * time.Second,
		},
		{
			name: "nothing ended in the window",
			s: Status{Queued: 100, Activated: 40, StartedAt: at(0), UpdatedAt: at(time.Minute),
				FirstDoneAt: at(30 * time.Second), LastDoneAt: at(time.Minute)},
			now:  5 * time.Minute,
			rate: 0, average: 40.0 / 270, window: time.Minute,
			running: 270 * time.Second, elapsed: 5 * time.Minute,
		},
		{
			name: "too early to tell",
			s: Status{Queued: 100, Activated: 5, StartedAt: at(0), UpdatedAt: at(time.Minute),
				FirstDoneAt: at(time.Minute), LastDoneAt: at(time.Minute)},
			now:    time.Minute + 300*time.Millisecond,
			recent: []Completion{{At: at(time.Minute), Jobs: 5}},
			rate:   0, average: 5 / 0.3, running: 300 * time.Millisecond, elapsed: time.Minute + 300*time.Millisecond,
		},
		{
			// Finished: the rate is the run's, from the first job's end to the last, however long
			// ago that was.
			name: "finished rate is frozen",
			s: Status{Queued: 1000, Activated: 990, DeadLetters: map[string]int64{"not_found": 10}, StartedAt: at(0),
				UpdatedAt: at(3 * time.Minute), FirstDoneAt: at(time.Minute), LastDoneAt: at(3 * time.Minute)},
			now:  30 * 24 * time.Hour,
			rate: 1000.0 / 120, average: 1000.0 / 120, running: 2 * time.Minute, elapsed: 3 * time.Minute, finished: true,
		},
		{
			name: "finished a minute later reads the same",
			s: Status{Queued: 1000, Activated: 1000, StartedAt: at(0), UpdatedAt: at(3 * time.Minute),
				FirstDoneAt: at(time.Minute), LastDoneAt: at(3 * time.Minute)},
			now:  4 * time.Minute,
			rate: 1000.0 / 120, average: 1000.0 / 120, running: 2 * time.Minute, elapsed: 3 * time.Minute, finished: true,
		},
		{
			name: "queued, no worker yet",
			s:    Status{Queued: 50, StartedAt: at(0), UpdatedAt: at(0)},
			now:  3 * time.Minute, elapsed: 3 * time.Minute,
		},
		{
			// Counted by a release that recorded no completion times: the lifetime average, as before.
			name: "older release's counts",
			s:    Status{Queued: 100, Activated: 50, StartedAt: at(0), UpdatedAt: at(10 * time.Second)},
			now:  20 * time.Second,
			rate: 5, average: 5, eta: 10 * time.Second, elapsed: 20 * time.Second,
		},
		{
			// A writer whose clock runs ahead: its completion still counts, and is the last.
			name: "completion from a clock ahead",
			s: Status{Queued: 1000, Activated: 600, StartedAt: at(0), UpdatedAt: at(2 * time.Minute),
				FirstDoneAt: at(0), LastDoneAt: at(2 * time.Minute)},
			now:    2 * time.Minute,
			recent: []Completion{{At: at(90 * time.Second), Jobs: 300}, {At: at(2*time.Minute + time.Second), Jobs: 300}},
			rate:   10, average: 5, window: time.Minute, eta: 40 * time.Second, running: 2 * time.Minute, elapsed: 2 * time.Minute,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := tt.s
			s.settle(at(tt.now), tt.recent)
			near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9*max(1, math.Abs(b)) }
			if !near(s.Rate, tt.rate) || !near(s.AverageRate, tt.average) {
				t.Errorf("rate %v, average %v; want %v, %v", s.Rate, s.AverageRate, tt.rate, tt.average)
			}
			if s.RateWindow != tt.window || s.Running != tt.running || s.Elapsed != tt.elapsed {
				t.Errorf("window %s, running %s, elapsed %s; want %s, %s, %s", s.RateWindow, s.Running, s.Elapsed, tt.window, tt.running, tt.elapsed)
			}
			if d := s.ETA - tt.eta; d < -time.Millisecond || d > time.Millisecond {
				t.Errorf("ETA %s, want %s", s.ETA, tt.eta)
			}
			if s.Finished != tt.finished {
				t.Errorf("finished %v, want %v", s.Finished, tt.finished)
			}
		})
	}
}

// TestReadAtRecentRate writes a batch's counts as a worker's flushes do, at injected times, and
// reads the recent rate back from Redis.
func TestReadAtRecentRate(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ctx := context.Background()
	const q, id = "rate-test", "b1"
	write := func(d time.Duration, counts map[string]int64) {
		t.Helper()
		if err := WriteAt(ctx, db.Client, q, map[string]map[string]int64{id: counts}, at(d)); err != nil {
			t.Fatal(err)
		}
	}
	write(0, map[string]int64{FieldQueued: 10_000})
	// No worker for 3 minutes, then 50 jobs a second, flushed each second, half from each of two workers.
	for d := 3 * time.Minute; d <= 5*time.Minute; d += time.Second {
		write(d, map[string]int64{FieldActivated: 20, FieldRetries: 3})
		write(d, map[string]int64{FieldActivated: 4, FieldDeadPrefix + "not_found": 1})
	}
	// A requeued dead letter is taken back: not a completion.
	write(5*time.Minute, map[string]int64{FieldDeadPrefix + "not_found": -1})
	s, err := ReadAt(ctx, db.Client, q, id, at(5*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if s.FirstDoneAt != at(3*time.Minute) || s.LastDoneAt != at(5*time.Minute) {
		t.Errorf("first, last done = %s, %s", s.FirstDoneAt, s.LastDoneAt)
	}
	if s.Done != 121*25-1 || s.Rate != 25 || s.RateWindow != time.Minute {
		t.Errorf("done %d, rate %v over %s; want %d, 25/s over 1m", s.Done, s.Rate, s.RateWindow, 121*25-1)
	}
	if want := time.Duration(float64(10_000-s.Done) / 25 * float64(time.Second)); s.ETA != want {
		t.Errorf("ETA %s, want %s", s.ETA, want)
	}
	// Completions older than what the rate needs are trimmed as later ones are written.
	if n, err := db.Client.ZCard(ctx, "activator:{"+q+"}:batch-completions:"+id).Result(); err != nil || n > 2*121 {
		t.Errorf("%d completions kept, %v; want at most 2 minutes' worth", n, err)
	}
}

// TestStatusJSON checks that durations are seconds in the JSON, and that it reads back.
func TestStatusJSON(t *testing.T) {
	t.Parallel()
	s := Status{ID: "b1", Queued: 10, Activated: 4, Done: 4, Remaining: 6, Rate: 2, RateWindow: time.Minute,
		Running: 90 * time.Second, Elapsed: 4 * time.Minute, ETA: 3 * time.Second, Paused: true, PausedReason: "operator"}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"etaSeconds":3`, `"elapsedSeconds":240`, `"runningSeconds":90`, `"rateWindowSeconds":60`, `"paused":true`, `"pausedReason":"operator"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s: %s", want, b)
		}
	}
	if strings.Contains(string(b), "Nanos") {
		t.Errorf("JSON has nanoseconds: %s", b)
	}
	var back Status
	if err := json.Unmarshal(b, &back); err != nil || back.ETA != s.ETA || back.Elapsed != s.Elapsed || back.RateWindow != s.RateWindow || back.Running != s.Running {
		t.Errorf("read back %+v, %v", back, err)
	}
	s.ETA = 0
	if b, _ := json.Marshal(s); strings.Contains(string(b), "etaSeconds") {
		t.Errorf("JSON has an ETA it cannot tell: %s", b)
	}
}
