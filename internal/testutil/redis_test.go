package testutil

import (
	"context"
	"testing"

	"github.com/versori/activator/internal/rediskeys"
)

// TestTestsOwn checks the rule that keeps tests off someone's data: a database is the tests' when it
// is empty or holds rediskeys.TestOwned, and someone's when it holds keys without it.
func TestTestsOwn(t *testing.T) {
	t.Parallel()
	db := Redis(t)
	ctx := context.Background()
	c := db.Client
	check := func(name string, want bool) {
		t.Helper()
		if got, err := testsOwn(ctx, c); err != nil || got != want {
			t.Errorf("%s: testsOwn = %v, %v; want %v", name, got, err, want)
		}
	}
	check("claimed (flushed and marked)", true)
	if keys, err := db.Keys(ctx); err != nil || len(keys) != 0 {
		t.Errorf("Keys = %v, %v; want none but the marker", keys, err)
	}
	c.FlushDB(ctx)
	check("empty", true)
	c.Set(ctx, "someones:data", "x", 0)
	check("someone's key", false)
	c.Set(ctx, rediskeys.TestOwned, "x", 0)
	check("a test's key", true)
}
