package producer_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/versori/activator/internal/batch"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/producer"
)

// TestEnqueueFileCountsItsBatch checks the batch's queued counter, written behind the run: it holds
// what the run queued, and a dry run or a run that queues nothing writes no counter at all.
func TestEnqueueFileCountsItsBatch(t *testing.T) {
	t.Parallel()
	const n = 1000
	db := testutil.Redis(t)
	// Its own database: a pair is activated from the queue it was first queued on, so the same rows
	// on another queue of the same Redis would queue nothing.
	plainDB := testutil.Redis(t)
	ctx := context.Background()
	p := producer.New(db.Client, producer.Config{})
	plain := producer.New(plainDB.Client, producer.Config{Queue: "plain"})
	path := testutil.WriteRows(t, n)
	tests := []struct {
		name       string
		db         *testutil.RedisDB
		p          *producer.Producer
		opts       producer.FileOptions
		wantQueued int64 // -1: no counter
		wantSum    producer.Summary
	}{
		{"dry run", db, p, producer.FileOptions{Path: path, Batch: "dry", DryRun: true}, -1, producer.Summary{Rows: n, Enqueued: n}},
		{"first run", db, p, producer.FileOptions{Path: path, Batch: "first"}, n, producer.Summary{Rows: n, Enqueued: n}},
		{"re-run", db, p, producer.FileOptions{Path: path, Batch: "again"}, -1, producer.Summary{Rows: n, Duplicates: n}},
		{"without the autopipeliner", plainDB, plain, producer.FileOptions{Path: path, Batch: "plain", NoAutopipeline: true}, n, producer.Summary{Rows: n, Enqueued: n}},
		{"re-run without the autopipeliner", plainDB, plain, producer.FileOptions{Path: path, Batch: "plain-again", NoAutopipeline: true}, -1, producer.Summary{Rows: n, Duplicates: n}},
	}
	for _, tt := range tests { // in order: each run sees the queue the one before left
		sum, err := tt.p.EnqueueFile(ctx, tt.opts)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if sum.Rows != tt.wantSum.Rows || sum.Enqueued != tt.wantSum.Enqueued || sum.Duplicates != tt.wantSum.Duplicates ||
			sum.Failed != 0 || sum.CountErrors != 0 {
			t.Errorf("%s: summary %+v, want %+v", tt.name, sum, tt.wantSum)
		}
		st, err := batch.Read(ctx, tt.db.Client, tt.p.Queue(), tt.opts.Batch)
		switch {
		case tt.wantQueued < 0 && !errors.Is(err, batch.ErrUnknown):
			t.Errorf("%s: batch counter %+v, %v; want none", tt.name, st, err)
		case tt.wantQueued >= 0 && (err != nil || st.Queued != tt.wantQueued):
			t.Errorf("%s: batch queued %d, %v; want %d", tt.name, st.Queued, err, tt.wantQueued)
		}
	}
	for _, tt := range tests[len(tests)-2:] {
		if got := testutil.Pending(t, tt.db.Client, tt.p.Queue()); got != n {
			t.Errorf("queue %s: %d jobs pending, want %d", tt.p.Queue(), got, n)
		}
	}
	if got := testutil.Pending(t, db.Client, p.Queue()); got != n {
		t.Errorf("queue %s: %d jobs pending, want %d", p.Queue(), got, n)
	}
}

// TestEnqueueFileStopsWhenCancelled cancels a run part-way: the enqueues in flight finish, every
// other row is counted failed at once (the autopipeliner does not see ctx, so EnqueueFile checks
// it), and what the summary says was enqueued is exactly what is queued.
func TestEnqueueFileStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	const n = 20000
	db := testutil.Redis(t)
	p := producer.New(db.Client, producer.Config{})
	path := testutil.WriteRows(t, n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sum, err := p.EnqueueFile(ctx, producer.FileOptions{Path: path, ProgressEvery: time.Millisecond,
		Progress: func(s producer.Summary) {
			if s.Enqueued >= 500 {
				cancel()
			}
		}})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("EnqueueFile = %v, want an interrupted error wrapping context.Canceled", err)
	}
	t.Logf("%+v", sum)
	if sum.Enqueued+sum.Failed != sum.Rows || sum.Enqueued >= n/2 || sum.Failed == 0 {
		t.Errorf("enqueued %d + failed %d of %d rows read; want all accounted for, and the run stopped well before %d", sum.Enqueued, sum.Failed, sum.Rows, n/2)
	}
	if got := testutil.Pending(t, db.Client, p.Queue()); got != sum.Enqueued {
		t.Errorf("%d jobs pending, summary says %d enqueued", got, sum.Enqueued)
	}
}

// TestEnqueueFileThatCannotStart checks that an input that cannot be used at all fails before the
// run starts, as an *InputError: Start is never called and nothing is queued or written.
func TestEnqueueFileThatCannotStart(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	p := producer.New(db.Client, producer.Config{})
	dir := t.TempDir()
	badCSV := testutil.WriteFile(t, "bad.csv", "userId,integrationId,colour\nu-1,"+testutil.IntegrationID+",red\n")
	txt := testutil.WriteFile(t, "users.txt", testutil.JSONL(t, testutil.Request("u-1")))
	for _, tc := range []struct{ name, path, format string }{
		{"missing file", filepath.Join(dir, "nope.jsonl"), ""},
		{"directory", dir, "jsonl"},
		{"bad CSV header", badCSV, ""},
		{"unknown extension", txt, ""},
		{"unknown format", txt, "xml"},
	} {
		started := false
		sum, err := p.EnqueueFile(context.Background(), producer.FileOptions{Path: tc.path, Format: tc.format, Batch: "b", Start: func() { started = true }})
		var ie *producer.InputError
		if !errors.As(err, &ie) || started || sum.Rows != 0 {
			t.Errorf("%s: err %v (want an *InputError), started %v, rows %d", tc.name, err, started, sum.Rows)
		}
	}
	if n := testutil.Pending(t, db.Client, "activations"); n != 0 {
		t.Errorf("%d jobs pending, want none", n)
	}
	if _, err := os.Stat(badCSV + ".rejects.jsonl"); !os.IsNotExist(err) {
		t.Errorf("a rejects file was written for a run that never started: %v", err)
	}
}

// TestEnqueueFileFormatOption reads a file whose name does not tell its format, as the one named.
func TestEnqueueFileFormatOption(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	p := producer.New(db.Client, producer.Config{})
	path := testutil.WriteFile(t, "users.txt", "userId,integrationId\nu-1,"+testutil.IntegrationID+"\nu-2,"+testutil.IntegrationID+"\n")
	started := false
	sum, err := p.EnqueueFile(context.Background(), producer.FileOptions{Path: path, Format: "csv", Batch: "b", Start: func() { started = true }})
	if err != nil || !started || sum.Rows != 2 || sum.Enqueued != 2 {
		t.Fatalf("summary %+v, err %v, started %v; want 2 rows enqueued", sum, err, started)
	}
}

// TestEnqueueFileRemovesStaleRejects checks that the rejects file always holds the last run's
// rejects: a run with rejects overwrites an earlier one's, and a run with none removes it and says so.
func TestEnqueueFileRemovesStaleRejects(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	p := producer.New(db.Client, producer.Config{})
	path := filepath.Join(t.TempDir(), "users.jsonl")
	rejects := path + ".rejects.jsonl"
	good := testutil.JSONL(t, testutil.Request("u-1"))
	for _, tc := range []struct {
		name, input, staleBefore string
		wantRejects              string // the rejects file's lines' count after, "" for no file
		wantStale                bool
	}{
		{"two rejects over an older file", good + "{bad\n{worse\n", strings.Repeat(`{"line":1,"reason":"old","raw":"x"}`+"\n", 3), "2", false},
		{"one reject overwrites", good + "{bad\n", "", "1", false},
		{"clean re-run removes it", good, "", "", true},
		{"clean run without one", good, "", "", false},
	} {
		if err := os.WriteFile(path, []byte(tc.input), 0o644); err != nil {
			t.Fatal(err)
		}
		if tc.staleBefore != "" {
			if err := os.WriteFile(rejects, []byte(tc.staleBefore), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		sum, err := p.EnqueueFile(context.Background(), producer.FileOptions{Path: path, Batch: "b"})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		b, rerr := os.ReadFile(rejects)
		switch {
		case tc.wantRejects == "" && !os.IsNotExist(rerr):
			t.Errorf("%s: rejects file still there (%v): %q", tc.name, rerr, b)
		case tc.wantRejects != "" && fmt.Sprint(bytes.Count(b, []byte("\n"))) != tc.wantRejects:
			t.Errorf("%s: rejects file %q, want %s lines", tc.name, b, tc.wantRejects)
		}
		if got := sum.StaleRejects == rejects; got != tc.wantStale {
			t.Errorf("%s: StaleRejects = %q, want removed: %v", tc.name, sum.StaleRejects, tc.wantStale)
		}
	}
}

// TestEnqueueFileGuardsTheRejectsPath checks that a rejects path that would destroy something is
// refused before the run starts (an InputError, nothing queued, the file untouched), and that a clean
// run removes only a rejects file, never another file named by --rejects or stdin's shared one.
func TestEnqueueFileGuardsTheRejectsPath(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	p := producer.New(db.Client, producer.Config{Queue: "guard-rejects"})
	dir := t.TempDir()
	input := filepath.Join(dir, "users.jsonl")
	content := testutil.JSONL(t, testutil.Request("u-1")) + "{bad\n"
	if err := os.WriteFile(input, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	notes := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notes, []byte("precious\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, rejects, want string }{
		{"the input itself", input, "is the input itself"},
		{"someone's file", notes, "holds something other than rejects"},
		{"a directory", dir, "is not a regular file"},
		{"a missing directory", filepath.Join(dir, "nope", "r.jsonl"), "does not exist"},
	} {
		_, err := p.EnqueueFile(context.Background(), producer.FileOptions{Path: input, RejectsPath: tc.rejects})
		var ie *producer.InputError
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: EnqueueFile error %v, want an InputError saying %q", tc.name, err, tc.want)
		}
	}
	if b, _ := os.ReadFile(input); string(b) != content {
		t.Errorf("the input changed: %q", b)
	}
	if n := testutil.Pending(t, db.Client, "guard-rejects"); n != 0 {
		t.Errorf("%d tasks queued by refused runs", n)
	}

	// A clean run beside someone's file named by --rejects: nothing to overwrite, nothing removed.
	clean := filepath.Join(dir, "clean.jsonl")
	if err := os.WriteFile(clean, []byte(testutil.JSONL(t, testutil.Request("u-2"))), 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.txt")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if sum, err := p.EnqueueFile(context.Background(), producer.FileOptions{Path: clean, RejectsPath: empty}); err != nil || sum.StaleRejects != "" {
		t.Errorf("clean run: %+v, %v", sum, err)
	}
	if _, err := os.Stat(empty); err != nil {
		t.Errorf("an empty file named by --rejects was removed: %v", err)
	}

	// stdin's rejects file may be another stdin run's: a clean stdin run leaves it.
	wd := t.TempDir()
	shared := filepath.Join(wd, "stdin.rejects.jsonl")
	if err := os.WriteFile(shared, []byte(`{"line":3,"reason":"x","raw":"y"}`+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sum, err := p.EnqueueFile(context.Background(), producer.FileOptions{Path: "-", RejectsPath: shared,
		Stdin: strings.NewReader(testutil.JSONL(t, testutil.Request("u-3")))})
	if err != nil || sum.StaleRejects != "" {
		t.Errorf("clean stdin run: %+v, %v", sum, err)
	}
	if _, err := os.Stat(shared); err != nil {
		t.Errorf("stdin's rejects file was removed: %v", err)
	}
}
