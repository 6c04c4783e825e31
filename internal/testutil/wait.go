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
		// Short enough for the rate limiter's tests, which wait for milliseconds-long states;
		// cheap enough for conditions that ask Redis.
		time.Sleep(5 * time.Millisecond)
	}
}
