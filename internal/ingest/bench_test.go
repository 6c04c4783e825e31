package ingest

import (
	"bytes"
	"fmt"
	"io"
	"testing"

	"github.com/oklog/ulid/v2"
)

// BenchmarkReaderJSONL reads a generated 100k-line JSONL file of typical requests and reports rows/s.
func BenchmarkReaderJSONL(b *testing.B) {
	const rows = 100_000
	var in bytes.Buffer
	integration, tmpl := ulid.Make().String(), ulid.Make().String()
	for i := range rows {
		fmt.Fprintf(&in, `{"userId":"user-%07d","integrationId":%q,"connections":[{"templateId":%q,"connectionId":%q}],"dynamicVariables":{"region":"EU","seats":%d}}`+"\n",
			i, integration, tmpl, ulid.Make().String(), i%100)
	}
	data := in.Bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		r, err := NewReader(bytes.NewReader(data), JSONL)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			row, _, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil || row == nil {
				b.Fatalf("row %d: %v", n+1, err)
			}
			n++
		}
		if n != rows {
			b.Fatalf("read %d rows, want %d", n, rows)
		}
	}
	b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}
