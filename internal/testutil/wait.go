package testutil

import (
	"testing"
	"time"
)

// WaitFor polls cond until it holds, failing t after timeout with what it was waiting for.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		// A thousandth of the wait, between 1 and 50 ms: quick enough for the rate limiter's
		// states, which last milliseconds, and few enough Redis round trips for a worker's minutes.
		time.Sleep(min(max(timeout/1000, time.Millisecond), 50*time.Millisecond))
	}
}
