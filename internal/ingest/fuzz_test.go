package ingest

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

// FuzzReader feeds arbitrary bytes to both formats: the Reader must not panic, must keep Next's
// contract, and must account for every non-blank line as a row or a reject (or a header error).
func FuzzReader(f *testing.F) {
	for _, tc := range append(jsonlCorpus(), csvCorpus()...) {
		f.Add([]byte(tc.input), uint16(40))
	}
	f.Add([]byte("userId,integrationId\n\"u\n\n\"\"1\",x\r\n"), uint16(8))
	f.Fuzz(func(t *testing.T, data []byte, limit uint16) {
		for _, format := range []Format{JSONL, CSV} {
			checkAccounting(t, data, format, DefaultMaxLineBytes)
			// A small limit exercises the over-long paths.
			checkAccounting(t, data, format, 1+int(limit)%256)
		}
	})
}

// checkAccounting reads data and checks that the records the Reader returns tile the input: each
// starts on a non-blank line after the previous one ended, and only blank lines lie between them
// and after the last.
func checkAccounting(t *testing.T, data []byte, format Format, limit int) {
	t.Helper()
	lines := physicalLines(data)
	blank := func(n int) bool { return isBlank(lines[n-1]) }
	r, err := NewReader(bytes.NewReader(data), format, MaxLineBytes(limit))
	if err != nil {
		var he *HeaderError
		if format != CSV || !errors.As(err, &he) {
			t.Fatalf("%s limit %d: NewReader: %v", format, limit, err)
		}
		return
	}
	prevEnd := 0
	var starts []int
	account := func(start, end int) {
		t.Helper()
		if start <= prevEnd || end < start || end > len(lines) {
			t.Fatalf("%s limit %d: record spans lines %d-%d after one ending at %d, of %d lines", format, limit, start, end, prevEnd, len(lines))
		}
		if blank(start) {
			t.Fatalf("%s limit %d: record starts on blank line %d %q", format, limit, start, lines[start-1])
		}
		for n := prevEnd + 1; n < start; n++ {
			if !blank(n) {
				t.Fatalf("%s limit %d: non-blank line %d %q is in no record", format, limit, n, lines[n-1])
			}
		}
		prevEnd = end
		starts = append(starts, start)
	}
	if format == CSV {
		account(r.recStart, r.end)
	}
	for {
		row, rj, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s limit %d: Next: %v", format, limit, err)
		}
		switch {
		case row != nil && rj == nil:
			if err := row.Request.Validate(); err != nil {
				t.Fatalf("%s limit %d: row %d is invalid: %v", format, limit, row.Line, err)
			}
			if row.Line != r.recStart {
				t.Fatalf("%s limit %d: row at line %d, record starts at %d", format, limit, row.Line, r.recStart)
			}
		case rj != nil && row == nil:
			if rj.Line != r.recStart || rj.Reason == "" || len(rj.Raw) > maxRawBytes || strings.Contains(rj.Reason, "internal error") {
				t.Fatalf("%s limit %d: bad reject %+v (record starts at %d)", format, limit, rj, r.recStart)
			}
		default:
			t.Fatalf("%s limit %d: Next returned row %v and reject %v", format, limit, row, rj)
		}
		account(r.recStart, r.end)
		if format == JSONL && r.end != r.recStart {
			t.Fatalf("JSONL record spans lines %d-%d", r.recStart, r.end)
		}
	}
	for n := prevEnd + 1; n <= len(lines); n++ {
		if !blank(n) {
			t.Fatalf("%s limit %d: non-blank line %d %q after the last record", format, limit, n, lines[n-1])
		}
	}
	rows := len(starts)
	if format == CSV {
		rows-- // the header
	}
	if n, err := CountRows(context.Background(), bytes.NewReader(data), format, MaxLineBytes(limit)); n != rows || err != nil {
		t.Fatalf("%s limit %d: CountRows = %d, %v; the Reader returned %d rows", format, limit, n, err, rows)
	}
	if format == CSV && limit == DefaultMaxLineBytes {
		checkCSVRecordStarts(t, data, lines, starts)
	}
}

// checkCSVRecordStarts checks that where encoding/csv reads all of data, records start on the
// same lines for it as for the Reader, blank lines aside.
func checkCSVRecordStarts(t *testing.T, data []byte, lines [][]byte, starts []int) {
	t.Helper()
	if bytes.HasPrefix(data, []byte(utf8BOM)) {
		return // encoding/csv does not skip a BOM
	}
	cr := csv.NewReader(bytes.NewReader(data))
	cr.FieldsPerRecord = -1
	var want []int
	for {
		_, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return
		}
		if n, _ := cr.FieldPos(0); !isBlank(lines[n-1]) {
			want = append(want, n)
		}
	}
	if !slices.Equal(starts, want) {
		t.Fatalf("records start on lines %v, encoding/csv says %v", starts, want)
	}
}

// physicalLines splits data the way the Reader counts lines, with the BOM dropped.
func physicalLines(data []byte) [][]byte {
	data = bytes.TrimPrefix(data, []byte(utf8BOM))
	lines := bytes.Split(data, []byte{'\n'})
	if len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	return lines
}
