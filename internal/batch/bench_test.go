package batch

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/versori/activator/internal/testutil"
)

// BenchmarkCounterAdd is the per-job cost of counting an outcome: an Add from many goroutines, and a
// share of the flush every 512 jobs.
func BenchmarkCounterAdd(b *testing.B) {
	db := testutil.Redis(b)
	c := NewCounter(db.Client, "bench", Config{})
	batches := []string{"b0", "b1", "b2", "b3"}
	var n atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			c.Add(batches[i%len(batches)], FieldActivated, 1)
			i++
			if n.Add(1)%512 == 0 {
				if err := c.Flush(context.Background()); err != nil {
					b.Error(err)
				}
			}
		}
	})
}
