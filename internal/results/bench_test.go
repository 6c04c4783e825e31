package results

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/versori/activator/internal/testutil"
)

// BenchmarkWriterAdd is the per-job cost of recording a result: an Add from many goroutines, and a
// share of the flush every 512 jobs (to tasks that do not exist, which the script skips).
func BenchmarkWriterAdd(b *testing.B) {
	db := testutil.Redis(b)
	w := New(db.Client, Config{FlushAt: 1 << 30})
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = "task-" + strconv.Itoa(i)
	}
	var n atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			w.Add("bench", ids[i%len(ids)], "activation")
			i++
			if n.Add(1)%512 == 0 {
				if err := w.Flush(context.Background()); err != nil {
					b.Error(err)
				}
			}
		}
	})
}
