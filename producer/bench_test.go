package producer_test

import (
	"context"
	"testing"

	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/producer"
)

// BenchmarkEnqueueFile measures `enqueue file`'s throughput into the real Redis: rows/s of a
// 100,000-row JSONL file at the default concurrency (DefaultFileConcurrency). Run:
//
//	go test -run '^$' -bench BenchmarkEnqueueFile -benchtime 3x ./producer
func BenchmarkEnqueueFile(b *testing.B) {
	const rows = 100_000
	path := testutil.WriteRows(b, rows)
	db := testutil.Redis(b)
	p := producer.New(db.Client, producer.Config{})
	ctx := context.Background()
	b.ResetTimer()
	var total float64
	for range b.N {
		b.StopTimer()
		db.Client.FlushDB(ctx)
		b.StartTimer()
		sum, err := p.EnqueueFile(ctx, producer.FileOptions{Path: path, Batch: "bench"})
		if err != nil || sum.Enqueued != rows {
			b.Fatalf("EnqueueFile = %+v, %v", sum, err)
		}
		total += sum.Elapsed.Seconds()
	}
	b.ReportMetric(float64(rows*b.N)/total, "rows/s")
}
