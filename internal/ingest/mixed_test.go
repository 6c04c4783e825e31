package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/oklog/ulid/v2"

	"github.com/versori/activator/internal/testutil"
)

// TestMixedFile checks that in a file mixing good, bad and blank lines every good row still comes
// out, in order and with its own line number, and every bad one is rejected at its line.
func TestMixedFile(t *testing.T) {
	for _, f := range []Format{JSONL, CSV} {
		t.Run(string(f), func(t *testing.T) {
			var (
				in        strings.Builder
				line      int
				wantRows  []want
				wantRejcs []int
			)
			add := func(s string) {
				in.WriteString(s)
				in.WriteString("\n")
				line++
			}
			if f == CSV {
				add("userId,integrationId,var.n")
			}
			for i := range 1000 {
				user := fmt.Sprintf("user-%d", i)
				id := ulid.Make().String()
				switch i % 7 {
				case 3: // bad
					if f == CSV {
						add(user + "," + id + `,1"2`)
					} else {
						add(`{"userId":"` + user + `","integrationId":"` + id + `",}`)
					}
					wantRejcs = append(wantRejcs, line)
				case 5: // blank
					add("  ")
				default:
					if f == CSV {
						add(fmt.Sprintf("%s,%s,%d", user, id, i))
					} else {
						add(fmt.Sprintf(`{"userId":%q,"integrationId":%q,"dynamicVariables":{"n":%d}}`, user, id, i))
					}
					wantRows = append(wantRows, rowJSON(line, user, fmt.Sprintf(`{"userId":%q,"integrationId":%q,"connections":[],"dynamicVariables":{"n":%d}}`, user, id, i)))
				}
			}
			rows, rjs, _, err := readAll(t, f, in.String())
			if err != nil {
				t.Fatal(err)
			}
			if len(rows) != len(wantRows) || len(rjs) != len(wantRejcs) {
				t.Fatalf("got %d rows and %d rejects, want %d and %d", len(rows), len(rjs), len(wantRows), len(wantRejcs))
			}
			for i, r := range rows {
				b, _ := json.Marshal(r.Request)
				if w := wantRows[i]; r.Line != w.line || string(b) != w.json {
					t.Fatalf("row %d = line %d %s, want line %d %s", i, r.Line, b, w.line, w.json)
				}
			}
			for i, r := range rjs {
				if r.Line != wantRejcs[i] {
					t.Fatalf("reject %d at line %d, want %d", i, r.Line, wantRejcs[i])
				}
			}
		})
	}
}

func TestFormatOf(t *testing.T) {
	for _, tc := range []struct {
		path string
		want Format
		err  bool
	}{
		{"a.jsonl", JSONL, false},
		{"dir.v2/a.NDJSON", JSONL, false},
		{"a.Csv", CSV, false},
		{"-", JSONL, false},
		{"a.json", "", true},
		{"a", "", true},
		{"a.csv.gz", "", true},
	} {
		got, err := FormatOf(tc.path)
		if got != tc.want || (err != nil) != tc.err {
			t.Errorf("FormatOf(%q) = %q, %v; want %q, error %v", tc.path, got, err, tc.want, tc.err)
		}
		if err != nil && !strings.Contains(err.Error(), ".jsonl, .ndjson or .csv") {
			t.Errorf("FormatOf(%q) error %q does not name the supported extensions", tc.path, err)
		}
	}
}

func TestNewReaderUnknownFormat(t *testing.T) {
	if _, err := NewReader(strings.NewReader(""), "xml"); err == nil {
		t.Fatal("NewReader accepted format xml")
	}
}

func TestRejectError(t *testing.T) {
	r := Reject{Line: 12, Field: "connections[0].templateId", Reason: "is not a ULID"}
	if got, want := r.Error(), "line 12: connections[0].templateId: is not a ULID"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	r.Field = ""
	if got, want := r.Error(), "line 12: is not a ULID"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestRejectRawTruncated(t *testing.T) {
	// A long bad line made of 3-byte runes: Raw must stop at 4 KiB without splitting one.
	line := `{"userId":"` + strings.Repeat("€", 3000) + `"}`
	_, rjs, _, err := readAll(t, JSONL, line)
	if err != nil || len(rjs) != 1 {
		t.Fatalf("got %v rejects, error %v", rjs, err)
	}
	raw := rjs[0].Raw
	if len(raw) > maxRawBytes || len(raw) < maxRawBytes-3 || !strings.HasPrefix(line, raw) || !json.Valid([]byte(`"`+raw[11:]+`"`)) {
		t.Errorf("Raw is %d bytes, not a UTF-8-clean 4 KiB prefix of the line", len(raw))
	}
}

func TestReadErrors(t *testing.T) {
	boom := errors.New("boom")
	good := jline("u1", testutil.IntegrationID, "")
	for _, f := range []Format{JSONL, CSV} {
		in := good + "\n"
		if f == CSV {
			in = "userId,integrationId\nu1," + testutil.IntegrationID + "\n"
		}
		r, err := NewReader(io.MultiReader(strings.NewReader(in), iotest.ErrReader(boom)), f)
		if err != nil {
			t.Fatal(err)
		}
		if row, _, err := r.Next(); row == nil || err != nil {
			t.Fatalf("%s: first Next = %v, %v", f, row, err)
		}
		for range 2 { // the error sticks
			if row, rj, err := r.Next(); row != nil || rj != nil || !errors.Is(err, boom) {
				t.Fatalf("%s: Next after a read error = %v, %v, %v; want boom", f, row, rj, err)
			}
		}
	}
	if _, err := NewReader(iotest.ErrReader(boom), CSV); !errors.Is(err, boom) {
		t.Fatalf("NewReader(CSV) of a failing reader: %v, want boom", err)
	}
}

// TestOneByteReads checks that reads split anywhere give the same result.
func TestOneByteReads(t *testing.T) {
	in := "\xEF\xBB\xBFuserId,integrationId,connections\r\n\"u\n1\"," + testutil.IntegrationID + ",\"[\r\n]\"\nu2," + testutil.IntegrationID + ",\"[\n]\"\r\n" + strings.Repeat("z", 50) + "\n"
	_, _, want, err := readAll(t, CSV, in, MaxLineBytes(40))
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != 3 {
		t.Fatalf("got %s, want 3 outputs", fmtWants(want))
	}
	r, err := NewReader(iotest.OneByteReader(strings.NewReader(in)), CSV, MaxLineBytes(40))
	if err != nil {
		t.Fatal(err)
	}
	if got := collect(t, r); fmtWants(got) != fmtWants(want) {
		t.Fatalf("one byte at a time: %s\nall at once: %s", fmtWants(got), fmtWants(want))
	}
}

func TestRejectsWriter(t *testing.T) {
	dir := t.TempDir()
	input := filepath.Join(dir, "in.csv")
	if got, want := RejectsPath(input), input+".rejects.jsonl"; got != want {
		t.Errorf("RejectsPath = %q, want %q", got, want)
	}
	if got := RejectsPath("-"); got != "stdin.rejects.jsonl" {
		t.Errorf(`RejectsPath("-") = %q`, got)
	}

	// No rejects: no file.
	w := NewRejectsWriter(RejectsPath(input))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(w.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("rejects file exists after a clean run: %v", err)
	}

	w = NewRejectsWriter(RejectsPath(input))
	rjs := []Reject{
		{Line: 2, Field: "userId", Reason: "is required", Raw: ",01HZY8Q6T4J8K2M3N4P5Q6R7S8"},
		{Line: 7, Reason: "not valid UTF-8", Raw: "<a&b>"},
	}
	for _, r := range rjs {
		if err := w.Write(r); err != nil {
			t.Fatal(err)
		}
	}
	if w.Count() != 2 {
		t.Errorf("Count = %d", w.Count())
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := w.Write(rjs[0]); err == nil {
		t.Error("Write after Close succeeded")
	}
	b, err := os.ReadFile(w.Path())
	if err != nil {
		t.Fatal(err)
	}
	want := `{"line":2,"field":"userId","reason":"is required","raw":",01HZY8Q6T4J8K2M3N4P5Q6R7S8"}` + "\n" +
		`{"line":7,"reason":"not valid UTF-8","raw":"<a&b>"}` + "\n"
	if string(b) != want {
		t.Errorf("rejects file:\n%s\nwant:\n%s", b, want)
	}
	// Each line decodes back into the Reject it came from.
	dec := json.NewDecoder(bytes.NewReader(b))
	for i := 0; dec.More(); i++ {
		var r Reject
		if err := dec.Decode(&r); err != nil || r != rjs[i] {
			t.Errorf("line %d decodes to %+v, %v", i+1, r, err)
		}
	}

	bad := NewRejectsWriter(filepath.Join(dir, "missing", "x.rejects.jsonl"))
	if err := bad.Write(rjs[0]); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Write to a missing directory: %v, want a wrapped ErrNotExist", err)
	}
}

func TestFormatFor(t *testing.T) {
	for _, tc := range []struct {
		path, name string
		want       Format
		err        string // in the error; "" for none
	}{
		{"users.txt", "csv", CSV, ""},
		{"users.txt", "JSONL", JSONL, ""},
		{"users.csv", "jsonl", JSONL, ""},
		{"-", "csv", CSV, ""},
		{"-", "", JSONL, ""},
		{"users.csv", "", CSV, ""},
		{"users.txt", "", "", "cannot tell the format"},
		{"users.csv", "xml", "", `unknown format "xml": want jsonl or csv`},
	} {
		got, err := FormatFor(tc.path, tc.name)
		switch {
		case tc.err == "" && (err != nil || got != tc.want):
			t.Errorf("FormatFor(%q, %q) = %q, %v; want %q", tc.path, tc.name, got, err, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("FormatFor(%q, %q) = %q, %v; want an error with %q", tc.path, tc.name, got, err, tc.err)
		}
	}
	if _, err := FormatOf("users.txt"); !errors.Is(err, ErrUnknownFormat) {
		t.Errorf("FormatOf(users.txt) error %v does not wrap ErrUnknownFormat", err)
	}
}

func TestCountRows(t *testing.T) {
	good := `{"userId":"u-1","integrationId":"01HZY8Q6T4J8K2M3N4P5Q6R7S8"}`
	for _, tc := range []struct {
		name   string
		format Format
		input  string
		want   int
	}{
		{"empty JSONL", JSONL, "", 0},
		{"JSONL with blank lines and a bad row", JSONL, good + "\n\n \t\n{bad\n" + good, 3},
		{"CSV header only", CSV, "userId,integrationId\n", 0},
		{"CSV with a quoted newline and a blank line", CSV, "userId,integrationId\n\"u\n1\",x\n\nu-2,y\n", 2},
	} {
		n, err := CountRows(context.Background(), strings.NewReader(tc.input), tc.format)
		if n != tc.want || err != nil {
			t.Errorf("%s: CountRows = %d, %v; want %d", tc.name, n, err, tc.want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := CountRows(ctx, strings.NewReader(good), JSONL); !errors.Is(err, context.Canceled) {
		t.Errorf("CountRows after cancel: err = %v, want context.Canceled", err)
	}
}
