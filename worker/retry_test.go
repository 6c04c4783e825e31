package worker

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

func TestRetryDelayWaitError(t *testing.T) {
	t.Parallel()
	p := DefaultRetryPolicy()
	tests := []struct {
		name string
		err  error
		want time.Duration
	}{
		{"retry after", &waitError{Wait: 3 * time.Second, Err: errors.New("429")}, 4 * time.Second},
		{"zero wait", &waitError{}, time.Second},
		{"counted", &waitError{Wait: time.Minute, Counts: true}, time.Minute + time.Second},
		{"wrapped", fmt.Errorf("job: %w", &waitError{Wait: 30 * time.Second}), 31 * time.Second},
		{"long", &waitError{Wait: 365 * 24 * time.Hour}, 365*24*time.Hour + time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, n := range []int{0, 1, 10, 100} {
				if got := p.RetryDelay(n, tt.err, nil); got != tt.want {
					t.Errorf("RetryDelay(%d) = %s, want %s", n, got, tt.want)
				}
			}
		})
	}
}

// TestRetryDelayAsynqErrors checks the errors asynq makes itself (a job deadline passed, a lease
// lost to a crash): the handler could not say how long to wait, and its POST may still commit, so
// the wait is at least the settle time.
func TestRetryDelayAsynqErrors(t *testing.T) {
	t.Parallel()
	p := RetryPolicy{Base: time.Second, Cap: 10 * time.Minute, SettleTime: 2 * time.Minute}
	for _, err := range []error{context.DeadlineExceeded, errors.New("asynq: task lease expired"), errors.New("panic: boom")} {
		for _, n := range []int{0, 1, 3} {
			if got := p.RetryDelay(n, err, nil); got < p.SettleTime {
				t.Errorf("RetryDelay(%d, %v) = %s, want at least the settle time %s", n, err, got, p.SettleTime)
			}
		}
	}
}

// backoffCeiling is min(cap, base*2^n), computed without overflow.
func backoffCeiling(base, cap time.Duration, n int) time.Duration {
	v := float64(base) * math.Pow(2, float64(n))
	if v >= float64(cap) {
		return cap
	}
	return time.Duration(v)
}

func TestRetryDelayBackoff(t *testing.T) {
	t.Parallel()
	const samples = 400
	tests := []struct {
		name      string
		base, cap time.Duration
		ns        []int
	}{
		{"defaults", time.Second, 10 * time.Minute, intRange(0, 70)},
		{"small base", 100 * time.Millisecond, time.Hour, intRange(0, 70)},
		{"odd base", 1500 * time.Millisecond, 30 * time.Minute, intRange(0, 70)},
		// A cap larger than the wrapped values of base<<n for n in 33..39: the ceiling must still be
		// the cap, not an overflowed product.
		{"huge cap", 7 * time.Second, 300_000 * time.Hour, intRange(25, 45)},
		{"max cap", time.Second, time.Duration(math.MaxInt64), []int{0, 10, 33, 40, 62, 63, 64, 100}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := RetryPolicy{Base: tt.base, Cap: tt.cap}
			err := errors.New("transient")
			for _, n := range tt.ns {
				ceiling := max(backoffCeiling(tt.base, tt.cap, n), time.Second)
				var hi time.Duration
				for range samples {
					d := p.RetryDelay(n, err, nil)
					if d < time.Second || d > ceiling {
						t.Fatalf("RetryDelay(%d) = %s, want within [1s, %s]", n, d, ceiling)
					}
					hi = max(hi, d)
				}
				// Full jitter up to the ceiling: with this many samples, some land in the top eighth of
				// the range (all missing it has a chance of 0.875^400, about 1e-23).
				if top := ceiling - ceiling/8; ceiling >= 4*time.Second && hi < top {
					t.Errorf("RetryDelay(%d): largest of %d samples is %s, want some above %s", n, samples, hi, top)
				}
			}
		})
	}
}

func intRange(from, to int) []int {
	var out []int
	for n := from; n <= to; n++ {
		out = append(out, n)
	}
	return out
}

func TestRetryDelayDegeneratePolicies(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		p    RetryPolicy
	}{
		{"zero", RetryPolicy{}},
		{"negative cap", RetryPolicy{Base: time.Second, Cap: -time.Minute}},
		{"negative base", RetryPolicy{Base: -time.Second, Cap: time.Second}},
		{"sub-second cap", RetryPolicy{Base: time.Millisecond, Cap: 500 * time.Millisecond}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, n := range []int{0, 1, 5, 40, 100} {
				if got := tt.p.RetryDelay(n, errors.New("x"), nil); got != time.Second {
					t.Errorf("RetryDelay(%d) = %s, want 1s", n, got)
				}
			}
		})
	}
}

func TestIsFailure(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"wait, not counted", &waitError{Wait: time.Second}, false},
		{"wrapped wait, not counted", fmt.Errorf("x: %w", &waitError{Wait: time.Second}), false},
		{"wait, counted", &waitError{Wait: time.Second, Counts: true}, true},
		{"lease expired", asynq.ErrLeaseExpired, true},
		{"plain", errors.New("boom"), true},
		{"deadline", context.DeadlineExceeded, true},
		{"dead letter", deadLetterError(tasks.ReasonNotFound, errors.New("404")), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := isFailure(tt.err); got != tt.want {
				t.Errorf("isFailure(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestWaitError(t *testing.T) {
	t.Parallel()
	inner := errors.New("rate limited")
	err := &waitError{Wait: 5 * time.Second, Err: inner}
	if !errors.Is(err, inner) {
		t.Error("waitError does not unwrap")
	}
	if got, want := err.Error(), "retry in 5s: rate limited"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestDeadLetterError(t *testing.T) {
	t.Parallel()
	inner := &versori.Error{Op: versori.OpActivate, StatusCode: 400, ErrorBody: versori.ErrorBody{Message: "bad (really)\nsecond line"}}
	for _, r := range tasks.Reasons() {
		t.Run(string(r), func(t *testing.T) {
			t.Parallel()
			err := deadLetterError(r, inner)
			// Dropped, not archived: the dead-letter store holds it, and asynq's archive trims.
			if !errors.Is(err, asynq.RevokeTask) || errors.Is(err, asynq.SkipRetry) {
				t.Error("does not wrap asynq.RevokeTask alone")
			}
			var ae *versori.Error
			if !errors.As(err, &ae) || ae != inner {
				t.Error("does not wrap the cause")
			}
			got, ok := reasonFromError(err.Error())
			if !ok || got != r {
				t.Errorf("reasonFromError(%q) = %q, %v; want %q", err.Error(), got, ok, r)
			}
		})
	}
}

func TestReasonFromErrorRefuses(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"asynq: task lease expired",
		"",
		"dead letter",
		"dead letter (bogus): x: skip retry for the task",
		"dead letter (NOT_FOUND): x",
		"dead letter not_found: x",
		"job failed: dead letter (not_found): x",
		" dead letter (not_found): x",
		"context deadline exceeded",
	} {
		if r, ok := reasonFromError(s); ok {
			t.Errorf("reasonFromError(%q) = %q, true; want false", s, r)
		}
	}
}
