package enqueuecmd_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/versori/activator/internal/cmd/enqueuecmd"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/tasks"
)

// neverStarted checks that a run that never started printed only its one error line: want, on stderr,
// and nothing on stdout (no batch id, no summary of zeros).
func neverStarted(t *testing.T, r result, want string) {
	t.Helper()
	if r.code != enqueuecmd.ExitUsage {
		t.Errorf("exit %d, want 2:\n%s", r.code, r)
	}
	if r.stdout != "" || strings.Count(r.stderr, "\n") != 1 || !strings.HasPrefix(r.stderr, "enqueue: ") || !strings.Contains(r.stderr, want) {
		t.Errorf("want one line on stderr saying %q and nothing on stdout:\n%s", want, r)
	}
}

// TestFileRefusesBadSettings checks that a 0 or negative --concurrency, --max-retry, --retention or
// --timeout (or its variable) is refused with one line naming the variable, exit 2, before Redis is
// asked and before a batch exists: none of them has a meaning of its own at 0, and
// docs/configuration.md does not make 0 the default. The least good values run.
func TestFileRefusesBadSettings(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	good := testutil.WriteFile(t, "in.jsonl", testutil.JSONL(t, request("u-1")))
	for _, tc := range []struct {
		name string
		vars map[string]string
		args []string
		want string
	}{
		{"concurrency 0", nil, []string{"--concurrency", "0"}, "ENQUEUE_CONCURRENCY must be at least 1, got 0"},
		{"concurrency negative", nil, []string{"--concurrency", "-5"}, "ENQUEUE_CONCURRENCY must be at least 1, got -5"},
		{"ENQUEUE_CONCURRENCY 0", map[string]string{"ENQUEUE_CONCURRENCY": "0"}, nil, "ENQUEUE_CONCURRENCY must be at least 1, got 0"},
		{"timeout 0", nil, []string{"--timeout", "0"}, "JOB_TIMEOUT must be at least 1s, got 0s"},
		{"timeout negative", map[string]string{"JOB_TIMEOUT": "-1m"}, nil, "JOB_TIMEOUT must be at least 1s, got -1m0s"},
		{"timeout under a second", nil, []string{"--timeout", "500ms"}, "JOB_TIMEOUT must be at least 1s, got 500ms"},
		{"timeout not whole seconds", nil, []string{"--timeout", "1500ms"}, "JOB_TIMEOUT must be whole seconds (a job's timeout is kept in seconds), got 1.5s"},
		{"retention negative", nil, []string{"--retention", "-1h"}, "RETENTION must be positive, got -1h0m0s"},
		{"retention 0", map[string]string{"RETENTION": "0s"}, nil, "RETENTION must be positive, got 0s"},
		{"max-retry negative", nil, []string{"--max-retry", "-1"}, "MAX_RETRY must be at least 1, got -1"},
		{"max-retry 0", nil, []string{"--max-retry", "0"}, "MAX_RETRY must be at least 1, got 0"},
		{"MAX_RETRY 0, Redis down", map[string]string{"MAX_RETRY": "0", "REDIS_URL": unreachable}, nil, "MAX_RETRY must be at least 1, got 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			vars := map[string]string{"REDIS_URL": db.URL()}
			for k, v := range tc.vars {
				vars[k] = v
			}
			r := run(t, vars, "", append([]string{"file", good}, tc.args...)...)
			neverStarted(t, r, "enqueue: "+tc.want+"\n")
		})
	}
	t.Cleanup(func() {
		if n := testutil.Pending(t, db.Client, queue); n != 0 {
			t.Errorf("refused settings enqueued %d tasks", n)
		}
	})
}

// TestFileLeastSettingsRun checks the least values each setting takes, and that the job carries them.
func TestFileLeastSettingsRun(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	req := request("u-1")
	path := testutil.WriteFile(t, "in.jsonl", testutil.JSONL(t, req))
	r := runDB(t, db, "", "file", "--quiet", "--concurrency", "1", "--max-retry", "1", "--retention", "1s", "--timeout", "1s", path)
	if r.code != enqueuecmd.ExitOK {
		t.Fatalf("want exit 0:\n%s", r)
	}
	counts(t, r, 1, 0, 0, 0)
	if p, _ := payload(t, db, queue, id(req)); p.MaxRetry != 1 {
		t.Errorf("the job's MaxRetry = %d, want 1", p.MaxRetry)
	}
	info, err := inspector(db).GetTaskInfo(queue, id(req))
	if err != nil {
		t.Fatal(err)
	}
	if info.Timeout.Seconds() != 1 || info.Retention.Seconds() != 1 {
		t.Errorf("the task's timeout %s, retention %s; want 1s each", info.Timeout, info.Retention)
	}
}

// TestStatusNeedsBatchID checks that an empty BATCH is a usage error, before Redis is asked, not a
// search for batch "".
func TestStatusNeedsBatchID(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	for _, tc := range []struct {
		name string
		vars map[string]string
		args []string
		want string
	}{
		{"empty", nil, []string{"status", ""}, "status needs a BATCH id"},
		{"blank", nil, []string{"status", "  "}, "status needs a BATCH id"},
		{"empty with --json", nil, []string{"status", "--json", ""}, "status needs a BATCH id"},
		{"empty, Redis down", map[string]string{"REDIS_URL": unreachable}, []string{"status", ""}, "status needs a BATCH id"},
		{"none", nil, []string{"status"}, "status takes one BATCH id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			vars := map[string]string{"REDIS_URL": db.URL()}
			for k, v := range tc.vars {
				vars[k] = v
			}
			neverStarted(t, run(t, vars, "", tc.args...), tc.want)
		})
	}
}

// TestDLQRequeueFileFormat is the operator's round trip: `dlq export > fix.txt` then `dlq requeue
// --file fix.txt` says to pass --format (and does nothing); with --format jsonl it requeues; CSV on
// stdin works with --format csv; --format is the same flag as enqueue file's.
func TestDLQRequeueFileFormat(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	a, b := request("u-a"), request("u-b")
	addDeadLetter(t, db, a, tasks.ReasonNotFound)
	r := runDB(t, db, "", "dlq", "export")
	if r.code != enqueuecmd.ExitOK {
		t.Fatalf("export: %s", r)
	}
	fix := testutil.WriteFile(t, "fix.txt", r.stdout)

	neverStarted(t, runDB(t, db, "", "dlq", "requeue", "--file", fix), "pass --format jsonl or --format csv")
	if got := deadIDs(t, db); len(got) != 1 {
		t.Fatalf("dead letters after the refused run = %v, want %s still there", got, id(a))
	}
	r = runDB(t, db, "", "dlq", "requeue", "--file", fix, "--format", "jsonl")
	if r.code != enqueuecmd.ExitOK || !strings.Contains(r.stdout, "requeued: 1\n") {
		t.Fatalf("requeue --file fix.txt --format jsonl: want exit 0, 1 requeued:\n%s", r)
	}

	addDeadLetter(t, db, b, tasks.ReasonNotFound)
	csv := "userId,integrationId\nu-b," + b.IntegrationID + "\n"
	r = runDB(t, db, csv, "dlq", "requeue", "--file", "-", "--format", "csv")
	if r.code != enqueuecmd.ExitOK || !strings.Contains(r.stdout, "requeued: 1\n") || !strings.Contains(r.stdout, "rejected: 0\n") {
		t.Fatalf("CSV on stdin with --format csv: want exit 0, 1 requeued:\n%s", r)
	}
	if got := deadIDs(t, db); len(got) != 0 {
		t.Errorf("dead letters left = %v, want none", got)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--format", "csv", "--all"}, "--format goes with --file"},
		{[]string{"--file", fix, "--format", "xml"}, `--format: ingest: unknown format "xml": want jsonl or csv`},
	} {
		neverStarted(t, runDB(t, db, "", append([]string{"dlq", "requeue"}, tc.args...)...), tc.want)
	}
	r = runDB(t, db, "", "dlq", "requeue", "-h")
	if r.code != enqueuecmd.ExitOK || !strings.Contains(r.stdout, "-format") {
		t.Errorf("dlq requeue -h does not list --format:\n%s", r)
	}
}

// TestDLQRequeueFileNeverStarted checks that an input requeue --file cannot use at all prints only
// its one error line, exit 2: no "requeued: 0" or "rejected: 0" of a run that never started.
func TestDLQRequeueFileNeverStarted(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	addDeadLetter(t, db, request("u-a"), tasks.ReasonNotFound)
	dir := t.TempDir()
	adir := filepath.Join(dir, "adir.jsonl")
	if err := os.Mkdir(adir, 0o755); err != nil {
		t.Fatal(err)
	}
	badCSV := testutil.WriteFile(t, "bad.csv", "userId,colour\nu-a,red\n")
	badTxt := testutil.WriteFile(t, "bad.txt", "userId,colour\nu-a,red\n")
	for _, tc := range []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"directory", "", []string{"--file", adir}, adir + " is a directory, not a file of activation requests"},
		{"missing file", "", []string{"--file", filepath.Join(dir, "missing.jsonl")}, "missing.jsonl"},
		{"CSV unknown column", "", []string{"--file", badCSV}, "colour"},
		{"CSV by --format, unknown column", "", []string{"--file", badTxt, "--format", "csv"}, "colour"},
		{"CSV on stdin, unknown column", "userId,colour\n", []string{"--file", "-", "--format", "csv"}, "colour"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			neverStarted(t, runDB(t, db, tc.stdin, append([]string{"dlq", "requeue"}, tc.args...)...), tc.want)
		})
	}
	t.Cleanup(func() {
		if got := deadIDs(t, db); len(got) != 1 {
			t.Errorf("dead letters = %v, want the one, untouched", got)
		}
	})
}

// TestProcessOperatorFindings runs the enqueue binary with each command of the operator's test that
// exited 0 or 1, or printed a summary, instead of refusing: each exits 2 with one line on stderr and
// nothing on stdout.
func TestProcessOperatorFindings(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	addDeadLetter(t, db, request("u-a"), tasks.ReasonNotFound)
	dir := t.TempDir()
	good := filepath.Join(dir, "in.jsonl")
	fix := filepath.Join(dir, "fix.txt")
	for _, p := range []string{good, fix} {
		if err := os.WriteFile(p, []byte(testutil.JSONL(t, request("u-1"))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	adir := filepath.Join(dir, "adir.jsonl")
	if err := os.Mkdir(adir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"file", "--concurrency", "0", good}, "enqueue: ENQUEUE_CONCURRENCY must be at least 1, got 0"},
		{[]string{"file", "--concurrency", "-5", good}, "enqueue: ENQUEUE_CONCURRENCY must be at least 1, got -5"},
		{[]string{"file", "--timeout", "0", good}, "enqueue: JOB_TIMEOUT must be at least 1s, got 0s"},
		{[]string{"file", "--retention", "-1h", good}, "enqueue: RETENTION must be positive, got -1h0m0s"},
		{[]string{"file", "--max-retry", "-1", good}, "enqueue: MAX_RETRY must be at least 1, got -1"},
		{[]string{"status", ""}, "enqueue: status needs a BATCH id (the one enqueue file printed first), not an empty one"},
		{[]string{"dlq", "requeue", "--file", adir}, "enqueue: " + adir + " is a directory, not a file of activation requests"},
		{[]string{"dlq", "requeue", "--file", fix}, `enqueue: cannot tell the format of "` + fix + `" from its name (not .jsonl, .ndjson or .csv): pass --format jsonl or --format csv`},
	} {
		oneLine(t, runBinary(t, map[string]string{"REDIS_URL": db.URL()}, tc.args...), enqueuecmd.ExitUsage, tc.want)
	}
	if n := testutil.Pending(t, db.Client, queue); n != 0 {
		t.Errorf("%d tasks enqueued", n)
	}
	if got := deadIDs(t, db); len(got) != 1 {
		t.Errorf("dead letters = %v, want the one, untouched", got)
	}
}
