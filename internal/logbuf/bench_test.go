package logbuf

import (
	"io"
	"testing"
)

// BenchmarkWrite is the per-job cost of a log line below warning, flushed as the buffer fills.
func BenchmarkWrite(b *testing.B) {
	w := New(io.Discard, DefaultSize)
	line := []byte(`{"time":"2026-01-01T00:00:00Z","level":"INFO","msg":"job","task_id":"0123456789abcdef","action":"activated"}` + "\n")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := w.Write(line); err != nil {
				b.Error(err)
			}
		}
	})
}
