package batch

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/testutil"
)

// failing is a go-redis hook that fails pipelines while it is on.
type failing struct{ on atomic.Bool }

func (f *failing) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (f *failing) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (f *failing) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if f.on.Load() {
			return errors.New("redis away")
		}
		return next(ctx, cmds)
	}
}

// TestCounterKeepsCountsThroughFailedFlushes counts from many goroutines while flushes fail and
// succeed: every count is written exactly once.
func TestCounterKeepsCountsThroughFailedFlushes(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	var f failing
	db.Client.AddHook(&f)
	c := NewCounter(db.Client, "counter-test", Config{})
	const adders, adds = 8, 1000
	var wg sync.WaitGroup
	for g := range adders {
		wg.Go(func() {
			for i := range adds {
				c.Add([]string{"b1", "b2"}[g%2], FieldActivated, 1)
				c.Add("", FieldActivated, 1) // no batch: not counted
				if i%100 == 0 {
					f.on.Store(i%200 == 0)
					_ = c.Flush(context.Background())
				}
			}
		})
	}
	wg.Wait()
	f.on.Store(false)
	if err := c.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{"b1", "b2"} {
		s, err := Read(context.Background(), db.Client, "counter-test", b)
		if err != nil {
			t.Fatal(err)
		}
		if want := int64(adders / 2 * adds); s.Activated != want {
			t.Errorf("batch %s: %d activated, want %d", b, s.Activated, want)
		}
	}
	var nilCounter *Counter
	nilCounter.Add("b1", FieldActivated, 1) // a handler without a counter
}
