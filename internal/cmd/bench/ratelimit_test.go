package bench

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRateLimitPoint checks how the ratelimit mode reads the API's call times: windows back to back
// from the warm-up after the first call, each window's share of rate × window, the busiest sliding
// window against rate × window + burst − 1, the busiest second, and a drain that ran dry too early.
func TestRateLimitPoint(t *testing.T) {
	t0 := time.Unix(1000, 0)
	// every returns calls every step from `from` until before `to`, both after t0.
	every := func(step, from, to time.Duration) []time.Time {
		var ts []time.Time
		for d := from; d < to; d += step {
			ts = append(ts, t0.Add(d))
		}
		return ts
	}
	cfg := RateLimitConfig{Rate: 10, Burst: 1, Window: 10 * time.Second, Windows: 2, WarmUp: time.Second}
	tests := []struct {
		name       string
		times      []time.Time
		wantCalls  []int
		wantBusy   int
		wantWithin bool
		wantSecond int
		wantDry    bool
	}{
		{"at the limit", every(100*time.Millisecond, 0, 25*time.Second), []int{100, 100}, 100, true, 10, false},
		{"just under", every(101*time.Millisecond, 0, 25*time.Second), []int{99, 99}, 100, true, 10, false},
		// One call more in the first window: 101 in some sliding 10 s.
		{"one over", append(every(100*time.Millisecond, 0, 25*time.Second), t0.Add(5050*time.Millisecond)), []int{101, 100}, 101, false, 11, false},
		{"ran dry", every(100*time.Millisecond, 0, 15*time.Second), []int{100, 40}, 100, true, 10, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Unsorted, as the stand-in may list concurrent calls.
			ts := slices.Clone(tt.times)
			slices.Reverse(ts)
			p := rateLimitPoint(cfg, 2, Drain{callTimes: ts})
			if !slices.Equal(p.Calls, tt.wantCalls) {
				t.Errorf("calls per window %v, want %v", p.Calls, tt.wantCalls)
			}
			for i, n := range p.Calls {
				if want := float64(n) / 100; p.Shares[i] != want {
					t.Errorf("window %d share %v, want %v", i, p.Shares[i], want)
				}
			}
			if p.WindowLimit != 100 || p.BusiestWindow != tt.wantBusy || p.WithinLimit != tt.wantWithin {
				t.Errorf("busiest window %d of limit %d (within %v), want %d of 100 (within %v)",
					p.BusiestWindow, p.WindowLimit, p.WithinLimit, tt.wantBusy, tt.wantWithin)
			}
			if p.BusiestSecond != tt.wantSecond {
				t.Errorf("busiest second %d, want %d", p.BusiestSecond, tt.wantSecond)
			}
			if dry := strings.Contains(p.Problem, "ran dry"); dry != tt.wantDry {
				t.Errorf("problem %q, want ran dry: %v", p.Problem, tt.wantDry)
			}
		})
	}
}
