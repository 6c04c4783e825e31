package enqueuecmd_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/versori/activator/internal/cmd/enqueuecmd"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

const (
	queue       = "activations"
	unreachable = "redis://127.0.0.1:1/0"
	secret      = "s3cr3t"
)

// result is what one run of the command did.
type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// run runs the command with vars as its whole environment and stdin as its standard input.
func run(t *testing.T, vars map[string]string, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	env := enqueuecmd.Env{
		Stdin:  strings.NewReader(stdin),
		Stdout: &stdout,
		Stderr: &stderr,
		Lookup: func(k string) (string, bool) { v, ok := vars[k]; return v, ok },
	}
	code := enqueuecmd.Run(context.Background(), args, env)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// runDB runs the command against db.
func runDB(t *testing.T, db *testutil.RedisDB, stdin string, args ...string) result {
	t.Helper()
	return run(t, map[string]string{"REDIS_URL": db.URL(), tasks.EncryptionKeysVar: testKeys}, stdin, args...)
}

// testKeys is the keyring runDB gives the command: the requests of the tests carry credentials.
const testKeys = "t1:MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

func request(user string) versori.ActivationRequest {
	return versori.ActivationRequest{UserID: user, IntegrationID: testutil.IntegrationID}
}

// fullRequest has every kind of field: an existing connection, a new one and dynamic variables.
func fullRequest(user string) versori.ActivationRequest {
	return versori.ActivationRequest{
		UserID:        user,
		IntegrationID: testutil.IntegrationID,
		Connections: []versori.ActivationConnection{
			{TemplateID: testutil.TemplateID, ConnectionID: testutil.ConnectionID},
			{TemplateID: testutil.OtherTemplateID, Name: "billing <&>", Credentials: json.RawMessage(`{"apiKey":"k"}`),
				Variables: []versori.ConnectionVariable{{Name: "region", Value: "EU"}}},
		},
		DynamicVariables: json.RawMessage(`{"region":"EU","seats":5}`),
	}
}

func id(req versori.ActivationRequest) string { return tasks.TaskID(req.Pair()) }

func jsonLine(t *testing.T, req versori.ActivationRequest) string {
	t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func inspector(db *testutil.RedisDB) *asynq.Inspector {
	return asynq.NewInspectorFromRedisClient(db.Client)
}

// payload returns the payload and state of the task with the given id.
func payload(t *testing.T, db *testutil.RedisDB, q, taskID string) (tasks.Payload, asynq.TaskState) {
	t.Helper()
	info, err := inspector(db).GetTaskInfo(q, taskID)
	if err != nil {
		t.Fatalf("task %s: %v", taskID, err)
	}
	p, err := tasks.DecodePayload(info.Payload)
	if err != nil {
		t.Fatalf("task %s: %v", taskID, err)
	}
	if tasks.HasCredentials(p.Request) {
		t.Fatalf("task %s holds credentials in plain text", taskID)
	}
	// Opened as a worker would, so that the request compares with the one queued.
	keys, err := tasks.ParseKeyring(testKeys)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Open(keys); err != nil {
		t.Fatalf("task %s: %v", taskID, err)
	}
	return p, info.State
}

func noTask(t *testing.T, db *testutil.RedisDB, taskID string) {
	t.Helper()
	if _, err := inspector(db).GetTaskInfo(queue, taskID); !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
		t.Errorf("task %s: GetTaskInfo error = %v, want no such task", taskID, err)
	}
}

func sameRequest(t *testing.T, got, want versori.ActivationRequest) {
	t.Helper()
	if g, w := jsonLine(t, got), jsonLine(t, want); g != w {
		t.Errorf("request = %s\nwant      %s", g, w)
	}
}

// summary parses the "name: value" lines of a file summary.
func summary(t *testing.T, r result) map[string]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "batch ") {
		t.Fatalf("first line is not \"batch <id>\":\n%s", r)
	}
	m := map[string]string{"batch": strings.TrimPrefix(lines[0], "batch ")}
	for _, l := range lines[1:] {
		k, v, ok := strings.Cut(l, ": ")
		if !ok {
			t.Fatalf("summary line %q is not \"name: value\":\n%s", l, r)
		}
		m[k] = v
	}
	for _, k := range []string{"already queued or done", "already dead-lettered", "rejected", "elapsed", "rate"} {
		if _, ok := m[k]; !ok {
			t.Errorf("summary has no %q line:\n%s", k, r)
		}
	}
	if !strings.HasSuffix(m["rate"], " rows/s") {
		t.Errorf("rate = %q, want \"N rows/s\"", m["rate"])
	}
	return m
}

// counts checks the summary's counts: enqueued (or valid, for a dry run), duplicates, dead-lettered, rejected.
func counts(t *testing.T, r result, enqueued, dup, dead, rejected int) map[string]string {
	t.Helper()
	m := summary(t, r)
	verb := "enqueued"
	if _, ok := m["valid (dry run)"]; ok {
		verb = "valid (dry run)"
	}
	want := map[string]int{verb: enqueued, "already queued or done": dup, "already dead-lettered": dead, "rejected": rejected}
	for k, n := range want {
		if m[k] != fmt.Sprint(n) {
			t.Errorf("%s: %q, want %d\n%s", k, m[k], n, r)
		}
	}
	return m
}

func addDeadLetter(t *testing.T, db *testutil.RedisDB, req versori.ActivationRequest, reason tasks.Reason, mod ...func(*deadletter.Entry)) deadletter.Entry {
	t.Helper()
	e := deadletter.Entry{
		ID: id(req), UserID: req.UserID, IntegrationID: req.IntegrationID, Reason: reason,
		Error: "the API said no to " + req.UserID, Attempts: 3, Queue: queue, Request: req,
	}
	for _, m := range mod {
		m(&e)
	}
	if _, err := deadletter.NewStore(db.Client, queue).Add(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	knownQueue(t, db, queue) // a dead letter's job was queued through asynq, which lists its queue
	return e
}

// knownQueue lists q among asynq's queues, as its first task does.
func knownQueue(t *testing.T, db *testutil.RedisDB, q string) {
	t.Helper()
	if err := db.Client.SAdd(context.Background(), rediskeys.AsynqQueues, q).Err(); err != nil {
		t.Fatal(err)
	}
}

func deadIDs(t *testing.T, db *testutil.RedisDB) []string {
	t.Helper()
	ids, err := deadletter.NewStore(db.Client, queue).IDs(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(ids)
	return ids
}

func sorted(ids ...string) []string {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	return ids
}

func TestFileEnqueuesAndRerunEnqueuesNothing(t *testing.T) {
	t.Parallel()
	reqs := []versori.ActivationRequest{fullRequest("u-1"), request("u-2"), request("us\u00e9r-\u00e9")}
	csvContent := "userId,integrationId,templateId,connectionId,var.region,dynamicVariables\n" +
		"u-1," + testutil.IntegrationID + "," + testutil.TemplateID + "," + testutil.ConnectionID + ",EU,\"{\"\"seats\"\":5}\"\n" +
		"u-2," + testutil.IntegrationID + ",,,,\n" +
		"us\u00e9r-\u00e9," + testutil.IntegrationID + ",,,,\n"
	csvWant := []versori.ActivationRequest{
		{UserID: "u-1", IntegrationID: testutil.IntegrationID,
			Connections:      []versori.ActivationConnection{{TemplateID: testutil.TemplateID, ConnectionID: testutil.ConnectionID}},
			DynamicVariables: json.RawMessage(`{"region":"EU","seats":5}`)},
		request("u-2"), request("us\u00e9r-\u00e9"),
	}
	for _, tc := range []struct {
		name, file, content string
		want                []versori.ActivationRequest
	}{
		{"jsonl", "in.jsonl", testutil.JSONL(t, reqs...), reqs},
		{"ndjson", "in.NDJSON", testutil.JSONL(t, reqs...), reqs},
		{"csv", "in.csv", csvContent, csvWant},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := testutil.Redis(t)
			path := testutil.WriteFile(t, tc.file, tc.content)

			r := runDB(t, db, "", "file", path, "--batch", "b-first")
			if r.code != enqueuecmd.ExitOK {
				t.Fatalf("want exit 0:\n%s", r)
			}
			if m := counts(t, r, len(tc.want), 0, 0, 0); m["batch"] != "b-first" {
				t.Errorf("batch = %q, want b-first", m["batch"])
			}
			if n := testutil.Pending(t, db.Client, queue); n != len(tc.want) {
				t.Errorf("pending tasks = %d, want %d", n, len(tc.want))
			}
			for _, want := range tc.want {
				p, state := payload(t, db, queue, id(want))
				if state != asynq.TaskStatePending || p.Batch != "b-first" || p.Reconcile {
					t.Errorf("task %s: state %v, payload %+v; want pending, batch b-first, no reconcile", id(want), state, p)
				}
				sameRequest(t, p.Request, want)
			}
			if _, err := os.Stat(path + ".rejects.jsonl"); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a clean run left a rejects file: %v", err)
			}

			// The same file again: everything is already queued, nothing changes.
			r = runDB(t, db, "", "file", "--quiet", path)
			if r.code != enqueuecmd.ExitOK {
				t.Fatalf("re-run: want exit 0:\n%s", r)
			}
			if m := counts(t, r, 0, len(tc.want), 0, 0); !strings.HasPrefix(m["batch"], "b-") || m["batch"] == "b-first" {
				t.Errorf("re-run without --batch: batch %q, want a new b-... id", m["batch"])
			}
			if n := testutil.Pending(t, db.Client, queue); n != len(tc.want) {
				t.Errorf("after the re-run: pending tasks = %d, want %d", n, len(tc.want))
			}
			if p, _ := payload(t, db, queue, id(tc.want[0])); p.Batch != "b-first" {
				t.Errorf("the re-run replaced a task: batch %q", p.Batch)
			}
		})
	}
}

func TestFileOptionsAndEnvironment(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	path := testutil.WriteFile(t, "in.jsonl", testutil.JSONL(t, request("u-1"), request("u-1"), request("u-2")))
	vars := map[string]string{"REDIS_URL": db.URL(), "QUEUE": "other"}

	// Flags may follow the path; QUEUE picks the queue; a pair twice in a file is queued once.
	r := run(t, vars, "", "file", path, "--reconcile", "--quiet")
	if r.code != enqueuecmd.ExitOK {
		t.Fatalf("want exit 0:\n%s", r)
	}
	counts(t, r, 2, 1, 0, 0)
	if n := testutil.Pending(t, db.Client, queue); n != 0 {
		t.Errorf("queue %s: %d pending, want 0 (QUEUE=other)", queue, n)
	}
	if n := testutil.Pending(t, db.Client, "other"); n != 2 {
		t.Errorf("queue other: %d pending, want 2", n)
	}
	if p, _ := payload(t, db, "other", id(request("u-1"))); !p.Reconcile {
		t.Errorf("--reconcile: payload %+v, want Reconcile", p)
	}

	// --queue wins over QUEUE; a pair is activated from the queue it was first queued on, so the
	// same file on another queue queues nothing there.
	r = run(t, vars, "", "file", "--queue", queue, "--quiet", path)
	if r.code != enqueuecmd.ExitOK || testutil.Pending(t, db.Client, queue) != 0 || !strings.Contains(r.stdout, "of which on another queue: 3") {
		t.Errorf("--queue %s: want exit 0, nothing pending there and 3 rows on another queue:\n%s", queue, r)
	}
	counts(t, r, 0, 3, 0, 0)

	// Job options reach asynq.
	path2 := testutil.WriteFile(t, "more.jsonl", testutil.JSONL(t, request("u-3")))
	r = runDB(t, db, "", "file", path2, "--max-retry", "7", "--timeout", "45s", "--retention", "1h", "--quiet")
	if r.code != enqueuecmd.ExitOK {
		t.Fatalf("want exit 0:\n%s", r)
	}
	info, err := inspector(db).GetTaskInfo(queue, id(request("u-3")))
	if err != nil {
		t.Fatal(err)
	}
	// asynq's own limit leaves room for crash recoveries: the handler ends the job at 7.
	if info.MaxRetry != 7+tasks.CrashRetries || info.Timeout.Seconds() != 45 || info.Retention.Hours() != 1 || info.Type != tasks.TypeActivate {
		t.Errorf("task info = max retry %d, timeout %v, retention %v, type %q; want %d, 45s, 1h, %q",
			info.MaxRetry, info.Timeout, info.Retention, info.Type, 7+tasks.CrashRetries, tasks.TypeActivate)
	}
	if p, _ := payload(t, db, queue, id(request("u-3"))); p.MaxRetry != 7 {
		t.Errorf("payload max retry %d, want 7", p.MaxRetry)
	}
}

func TestFileStdin(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	in := testutil.JSONL(t, request("u-1"), fullRequest("u-2"))
	r := runDB(t, db, in, "file", "-", "--quiet")
	if r.code != enqueuecmd.ExitOK {
		t.Fatalf("want exit 0:\n%s", r)
	}
	counts(t, r, 2, 0, 0, 0)
	p, _ := payload(t, db, queue, id(fullRequest("u-2")))
	sameRequest(t, p.Request, fullRequest("u-2"))

	// A reject on stdin goes to --rejects.
	rejects := filepath.Join(t.TempDir(), "stdin-rejects.jsonl")
	r = runDB(t, db, in+`{"userId":"u-3","integrationId":"nope"}`+"\n", "file", "-", "--rejects", rejects, "--quiet")
	if r.code != enqueuecmd.ExitRejected {
		t.Fatalf("want exit 1:\n%s", r)
	}
	if m := counts(t, r, 0, 2, 0, 1); m["rejects"] != rejects {
		t.Errorf("rejects line = %q, want %q", m["rejects"], rejects)
	}
	if got := readRejects(t, rejects); len(got) != 1 || got[0].Line != 3 || got[0].Field != "integrationId" {
		t.Errorf("rejects = %+v, want line 3, field integrationId", got)
	}
}

type rejectLine struct {
	Line   int
	Field  string
	Reason string
	keys   map[string]json.RawMessage
}

func readRejects(t *testing.T, path string) []rejectLine {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("rejects file: %v", err)
	}
	defer f.Close()
	var out []rejectLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var keys map[string]json.RawMessage
		if err := json.Unmarshal(sc.Bytes(), &keys); err != nil {
			t.Fatalf("rejects line %q is not a JSON object: %v", sc.Text(), err)
		}
		var r rejectLine
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		r.keys = keys
		if r.Line <= 0 || r.Reason == "" {
			t.Errorf("rejects line %s has no line number or reason", sc.Text())
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFileRejectsBadRowsAndRunsTheRest(t *testing.T) {
	t.Parallel()
	good1, good2 := request("u-1"), request("u-2")
	for _, tc := range []struct {
		name, file, content string
		rejects             []rejectLine // line and field
	}{
		{
			name: "jsonl",
			file: "in.jsonl",
			content: jsonLine(t, good1) + "\n" +
				`{"userId":"u-x","integrationId":"not-a-ulid"}` + "\n" +
				`{"userId":` + "\n" +
				"\n" +
				`{"userId":"u-y","integrationId":"` + testutil.IntegrationID + `","connections":[{"templateId":"bad"}]}` + "\n" +
				jsonLine(t, good2) + "\n",
			rejects: []rejectLine{{Line: 2, Field: "integrationId"}, {Line: 3}, {Line: 5, Field: "connections[0].templateId"}},
		},
		{
			name: "csv",
			file: "in.csv",
			content: "userId,integrationId\n" +
				"u-1," + testutil.IntegrationID + "\n" +
				"u-x,not-a-ulid\n" +
				"u-y\n" +
				"u-2," + testutil.IntegrationID + "\n",
			rejects: []rejectLine{{Line: 3, Field: "integrationId"}, {Line: 4}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := testutil.Redis(t)
			path := testutil.WriteFile(t, tc.file, tc.content)
			r := runDB(t, db, "", "file", path, "--quiet")
			if r.code != enqueuecmd.ExitRejected {
				t.Fatalf("want exit 1:\n%s", r)
			}
			m := counts(t, r, 2, 0, 0, len(tc.rejects))
			if m["rejects"] != path+".rejects.jsonl" {
				t.Errorf("rejects line = %q, want %q", m["rejects"], path+".rejects.jsonl")
			}
			got := readRejects(t, path+".rejects.jsonl")
			if len(got) != len(tc.rejects) {
				t.Fatalf("rejects = %+v, want %d", got, len(tc.rejects))
			}
			for i, want := range tc.rejects {
				if got[i].Line != want.Line || got[i].Field != want.Field {
					t.Errorf("reject %d = line %d field %q, want line %d field %q", i, got[i].Line, got[i].Field, want.Line, want.Field)
				}
				if _, ok := got[i].keys["line"]; !ok {
					t.Errorf("reject %d has no \"line\" key", i)
				}
			}
			for _, good := range []versori.ActivationRequest{good1, good2} {
				if _, state := payload(t, db, queue, id(good)); state != asynq.TaskStatePending {
					t.Errorf("good row %s: state %v", good.UserID, state)
				}
			}
			if n := testutil.Pending(t, db.Client, queue); n != 2 {
				t.Errorf("pending = %d, want 2", n)
			}
		})
	}
}

func TestFileDryRunEnqueuesNothing(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	dead := request("u-dead")
	addDeadLetter(t, db, dead, tasks.ReasonNotFound)
	path := testutil.WriteFile(t, "in.jsonl", testutil.JSONL(t, request("u-1"), request("u-2"), dead))

	r := runDB(t, db, "", "file", path, "--dry-run", "--quiet")
	if r.code != enqueuecmd.ExitOK {
		t.Fatalf("want exit 0:\n%s", r)
	}
	counts(t, r, 2, 0, 1, 0)
	if n := testutil.Pending(t, db.Client, queue); n != 0 {
		t.Errorf("dry run: %d pending tasks, want 0", n)
	}
	noTask(t, db, id(request("u-1")))

	// With a bad row: exit 1 and a rejects file, still nothing enqueued.
	bad := testutil.WriteFile(t, "bad.jsonl", testutil.JSONL(t, request("u-1"))+"{}\n")
	r = runDB(t, db, "", "file", bad, "--dry-run", "--quiet")
	if r.code != enqueuecmd.ExitRejected {
		t.Fatalf("want exit 1:\n%s", r)
	}
	counts(t, r, 1, 0, 0, 1)
	if got := readRejects(t, bad+".rejects.jsonl"); len(got) != 1 || got[0].Line != 2 {
		t.Errorf("rejects = %+v, want line 2", got)
	}
	if n := testutil.Pending(t, db.Client, queue); n != 0 {
		t.Errorf("dry run: %d pending tasks, want 0", n)
	}

	// The real run after it enqueues everything.
	r = runDB(t, db, "", "file", path, "--quiet")
	if r.code != enqueuecmd.ExitOK {
		t.Fatalf("want exit 0:\n%s", r)
	}
	counts(t, r, 2, 0, 1, 0)
}

func TestFileSkipsDeadLetteredPairs(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	dead := fullRequest("u-dead")
	addDeadLetter(t, db, dead, tasks.ReasonMissingConnections)
	path := testutil.WriteFile(t, "in.jsonl", testutil.JSONL(t, request("u-1"), dead, request("u-2")))

	r := runDB(t, db, "", "file", path, "--quiet")
	if r.code != enqueuecmd.ExitOK {
		t.Fatalf("want exit 0 (nothing rejected):\n%s", r)
	}
	counts(t, r, 2, 0, 1, 0)
	noTask(t, db, id(dead))
	if got := deadIDs(t, db); !slices.Equal(got, []string{id(dead)}) {
		t.Errorf("dead letters = %v, want the one there was", got)
	}
	if n := testutil.Pending(t, db.Client, queue); n != 2 {
		t.Errorf("pending = %d, want 2", n)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	dir := t.TempDir()
	good := filepath.Join(dir, "good.jsonl")
	txt := filepath.Join(dir, "in.txt")
	csvBad := filepath.Join(dir, "bad.csv")
	for path, content := range map[string]string{
		good:   testutil.JSONL(t, request("u-1")),
		txt:    testutil.JSONL(t, request("u-1")),
		csvBad: "userId,integrationId,colour\nu-1," + testutil.IntegrationID + ",red\n",
	} {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	url := db.URL()
	for _, tc := range []struct {
		name     string
		vars     map[string]string
		args     []string
		inStderr []string
	}{
		{"no command", nil, nil, []string{"usage"}},
		{"unknown command", nil, []string{"bogus"}, []string{`"bogus"`}},
		{"unknown flag", nil, []string{"file", "--bogus", good}, []string{"bogus"}},
		{"unknown flag after path", nil, []string{"file", good, "--bogus"}, []string{"bogus"}},
		{"missing path", nil, []string{"file"}, []string{"PATH"}},
		{"two paths", nil, []string{"file", good, good}, []string{"PATH"}},
		{"unsupported extension", nil, []string{"file", txt}, []string{".jsonl", ".csv"}},
		{"unsupported extension, Redis down", map[string]string{"REDIS_URL": unreachable}, []string{"file", txt}, []string{".jsonl", ".csv"}},
		{"bad REDIS_URL scheme", map[string]string{"REDIS_URL": "http://127.0.0.1:6379/0"}, []string{"file", good}, []string{`REDIS_URL has scheme "http"`}},
		{"--redis-url refused", nil, []string{"file", good, "--redis-url", "mysql://127.0.0.1/0"}, []string{`-redis-url is not accepted`, "set REDIS_URL, or REDIS_URL_FILE"}},
		{"REDIS_URL and REDIS_URL_FILE", map[string]string{"REDIS_URL_FILE": good}, []string{"file", good}, []string{"REDIS_URL and REDIS_URL_FILE are both set: set one of them"}},
		{"REDIS_URL not a URL", map[string]string{"REDIS_URL": "redis://127.0.0.1:6379/%zz"}, []string{"file", good}, []string{"REDIS_URL cannot be parsed: want redis://"}},
		{"CSV unknown column", nil, []string{"file", csvBad}, []string{"colour"}},
		{"missing file", nil, []string{"file", filepath.Join(dir, "missing.jsonl")}, []string{"missing.jsonl"}},
		{"empty QUEUE", map[string]string{"QUEUE": " "}, []string{"file", good}, []string{"QUEUE"}},
		{"bad ENQUEUE_CONCURRENCY", map[string]string{"ENQUEUE_CONCURRENCY": "many"}, []string{"file", good}, []string{"ENQUEUE_CONCURRENCY"}},
		{"bad --timeout", nil, []string{"file", good, "--timeout", "soon"}, []string{"timeout"}},
		{"dlq without verb", nil, []string{"dlq"}, []string{"list"}},
		{"dlq unknown verb", nil, []string{"dlq", "bogus"}, []string{`"bogus"`}},
		{"dlq list with ids", nil, []string{"dlq", "list", "act:x"}, []string{"no ids"}},
		{"dlq export with ids", nil, []string{"dlq", "export", "act:x"}, []string{"no ids"}},
		{"dlq list unknown flag", nil, []string{"dlq", "list", "--all"}, []string{"all"}},
		{"pause unknown flag", nil, []string{"pause", "--now"}, []string{"now"}},
		{"pause bad REDIS_URL", map[string]string{"REDIS_URL": "http://x"}, []string{"pause"}, []string{`REDIS_URL has scheme "http"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			vars := map[string]string{"REDIS_URL": url}
			for k, v := range tc.vars {
				vars[k] = v
			}
			r := run(t, vars, "", tc.args...)
			if r.code != enqueuecmd.ExitUsage {
				t.Fatalf("want exit 2:\n%s", r)
			}
			for _, s := range tc.inStderr {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("stderr does not mention %q:\n%s", s, r)
				}
			}
		})
	}
	t.Cleanup(func() {
		// Nothing of any of them reached the queue (runs after the parallel subtests).
		if n := testutil.Pending(t, db.Client, queue); n != 0 {
			t.Errorf("usage errors enqueued %d tasks", n)
		}
	})
}

func TestHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
		r := run(t, nil, "", args...)
		if r.code != enqueuecmd.ExitOK || !strings.Contains(r.stdout, "enqueue file PATH") || !strings.Contains(r.stdout, "enqueue dlq requeue") {
			t.Errorf("%v: want exit 0 and usage on stdout:\n%s", args, r)
		}
	}
	for _, args := range [][]string{{"file", "-h"}, {"dlq", "list", "-h"}, {"pause", "-h"}} {
		r := run(t, nil, "", args...)
		if r.code != enqueuecmd.ExitOK || !strings.Contains(r.stdout, "REDIS_URL or REDIS_URL_FILE") || r.stderr != "" {
			t.Errorf("%v: want exit 0 and flags on stdout:\n%s", args, r)
		}
	}
}

func TestRedisUnreachable(t *testing.T) {
	t.Parallel()
	path := testutil.WriteFile(t, "in.jsonl", testutil.JSONL(t, request("u-1"), request("u-2")))
	for _, tc := range []struct {
		name  string
		args  []string
		reRun bool // the message says nothing was enqueued and to re-run
	}{
		{"file", []string{"file", path, "--quiet"}, true},
		{"file stdin", []string{"file", "-", "--quiet"}, true},
		{"file dry run", []string{"file", path, "--dry-run", "--quiet"}, false},
		{"dlq list", []string{"dlq", "list"}, false},
		{"dlq list json", []string{"dlq", "list", "--json"}, false},
		{"dlq requeue", []string{"dlq", "requeue", "--all"}, false},
		{"dlq purge", []string{"dlq", "purge", "act:x"}, false},
		{"dlq export", []string{"dlq", "export"}, false},
		{"pause", []string{"pause"}, false},
		{"resume", []string{"resume"}, false},
	} {
		for _, url := range []string{unreachable, "redis://:" + secret + "@127.0.0.1:1/0"} {
			t.Run(tc.name+"/"+url, func(t *testing.T) {
				t.Parallel()
				r := run(t, map[string]string{"REDIS_URL": url}, testutil.JSONL(t, request("u-1")), tc.args...)
				if r.code != enqueuecmd.ExitFailed {
					t.Fatalf("want exit 3:\n%s", r)
				}
				if tc.reRun && (!strings.Contains(r.stderr, "nothing was enqueued") || !strings.Contains(r.stderr, "re-run")) {
					t.Errorf("stderr does not say nothing was enqueued and to re-run:\n%s", r)
				}
				if !strings.Contains(r.stderr, "re-run") && tc.args[0] == "file" {
					t.Errorf("stderr does not say to re-run:\n%s", r)
				}
				if strings.Contains(r.stdout+r.stderr, secret) {
					t.Errorf("output shows the Redis password:\n%s", r)
				}
			})
		}
	}
}

// TestSecretsNeverPrinted runs every kind of failure with a password in REDIS_URL, in the file
// REDIS_URL_FILE names, or passed to the refused --redis-url.
func TestSecretsNeverPrinted(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	path := testutil.WriteFile(t, "in.jsonl", testutil.JSONL(t, request("u-1")))
	// The test Redis has no password; depending on its version, AUTH is refused or ignored.
	withPassword := "redis://:" + secret + "@" + db.Addr + "/" + fmt.Sprint(db.Number)
	for _, tc := range []struct {
		name string
		url  string
		args []string
		code int // -1: any
	}{
		{"unreachable", "redis://:" + secret + "@127.0.0.1:1/0", []string{"file", path}, enqueuecmd.ExitFailed},
		{"unreachable, user and password", "redis://admin:" + secret + "@127.0.0.1:1/0", []string{"dlq", "list"}, enqueuecmd.ExitFailed},
		{"password", withPassword, []string{"file", path}, -1},
		{"password, dry run", withPassword, []string{"file", path, "--dry-run"}, -1},
		{"password, dlq list", withPassword, []string{"dlq", "list", "--json"}, -1},
		{"unknown flag", withPassword, []string{"file", "--bogus", path}, enqueuecmd.ExitUsage},
		{"unknown dlq flag", withPassword, []string{"dlq", "purge", "--bogus"}, enqueuecmd.ExitUsage},
		{"unknown pause flag", withPassword, []string{"pause", "--bogus"}, enqueuecmd.ExitUsage},
		{"file help", withPassword, []string{"file", "-h"}, enqueuecmd.ExitOK},
		{"dlq help", withPassword, []string{"dlq", "list", "-help"}, enqueuecmd.ExitOK},
		{"bad scheme", "http://:" + secret + "@127.0.0.1:6379/0", []string{"file", path}, enqueuecmd.ExitUsage},
		{"bad database", "redis://:" + secret + "@127.0.0.1:6379/x", []string{"dlq", "list"}, enqueuecmd.ExitUsage},
		{"not a URL", "redis://:" + secret + "@127.0.0.1:6379/%zz", []string{"pause"}, enqueuecmd.ExitUsage},
		{"unreachable Sentinel", "redis-sentinel://:" + secret + "@127.0.0.1:1,127.0.0.1:2?master=m", []string{"dlq", "list"}, enqueuecmd.ExitFailed},
		{"unreachable Cluster", "redis-cluster://admin:" + secret + "@127.0.0.1:1,127.0.0.1:2", []string{"file", path}, enqueuecmd.ExitFailed},
		{"Sentinel database", "redis-sentinel://:" + secret + "@127.0.0.1:1/4?master=m", []string{"pause"}, enqueuecmd.ExitUsage},
		{"Cluster database", "redis-cluster://:" + secret + "@127.0.0.1:1/2", []string{"status", "b-1"}, enqueuecmd.ExitUsage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, how := range []string{"env", "file", "flag"} {
				vars, args, code := map[string]string{"REDIS_URL": tc.url}, tc.args, tc.code
				switch how {
				case "file":
					vars = map[string]string{"REDIS_URL_FILE": testutil.WriteFile(t, "redis-url", tc.url+"\n")}
				case "flag":
					// Refused before anything else, -h included.
					vars, args, code = nil, append(slices.Clone(tc.args), "--redis-url="+tc.url), enqueuecmd.ExitUsage
				}
				r := run(t, vars, testutil.JSONL(t, request("u-1")), args...)
				if code >= 0 && r.code != code {
					t.Errorf("%s: want exit %d:\n%s", how, code, r)
				}
				if strings.Contains(r.stdout+r.stderr, secret) {
					t.Errorf("%s: output shows the Redis password:\n%s", how, r)
				}
			}
		})
	}
}

func TestDLQList(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	long := strings.Repeat("x", 300)
	a := addDeadLetter(t, db, fullRequest("u-a"), tasks.ReasonMissingConnections, func(e *deadletter.Entry) { e.Batch = "b-1" })
	b := addDeadLetter(t, db, request("u-b"), tasks.ReasonNotFound, func(e *deadletter.Entry) { e.Error = long; e.Attempts = 1 })
	c := addDeadLetter(t, db, request("u-c"), tasks.ReasonNotFound, func(e *deadletter.Entry) { e.Attempts = 25 })
	all := []deadletter.Entry{a, b, c}

	t.Run("table", func(t *testing.T) {
		t.Parallel()
		r := runDB(t, db, "", "dlq", "list")
		if r.code != enqueuecmd.ExitOK {
			t.Fatalf("want exit 0:\n%s", r)
		}
		for _, s := range []string{"ID", "REASON", "ATTEMPTS", a.ID, b.ID, c.ID, "missing_connections", "not_found", "3 dead letters"} {
			if !strings.Contains(r.stdout, s) {
				t.Errorf("list does not show %q:\n%s", s, r)
			}
		}
		if strings.Contains(r.stdout, long) {
			t.Errorf("list shows a 300-character error whole:\n%s", r)
		}
		r = runDB(t, db, "", "dlq", "list", "--reason", "not_found")
		if r.code != enqueuecmd.ExitOK || strings.Contains(r.stdout, a.ID) || !strings.Contains(r.stdout, b.ID) || !strings.Contains(r.stdout, "2 dead letters") {
			t.Errorf("--reason not_found: want b and c only:\n%s", r)
		}
	})

	for _, tc := range []struct {
		name string
		args []string
		want []deadletter.Entry
	}{
		{"json", []string{"--json"}, all},
		{"json reason", []string{"--reason", "not_found", "--json"}, []deadletter.Entry{b, c}},
		{"json reason none", []string{"--json", "--reason", "unauthorized"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := runDB(t, db, "", append([]string{"dlq", "list"}, tc.args...)...)
			if r.code != enqueuecmd.ExitOK {
				t.Fatalf("want exit 0:\n%s", r)
			}
			var raw []map[string]json.RawMessage
			if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil {
				t.Fatalf("stdout is not one JSON array: %v\n%s", err, r)
			}
			if raw == nil {
				t.Fatalf("stdout is null, want an array:\n%s", r)
			}
			for _, e := range raw {
				for _, k := range []string{"id", "userId", "integrationId", "reason", "error", "attempts", "failedAt", "request"} {
					if _, ok := e[k]; !ok {
						t.Errorf("entry %s has no %q", e["id"], k)
					}
				}
			}
			var got []deadletter.Entry
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
				t.Fatal(err)
			}
			byID := map[string]deadletter.Entry{}
			for _, e := range got {
				byID[e.ID] = e
			}
			if len(byID) != len(tc.want) || len(got) != len(tc.want) {
				t.Fatalf("got %d entries, want %d:\n%s", len(got), len(tc.want), r)
			}
			for _, w := range tc.want {
				g, ok := byID[w.ID]
				if !ok {
					t.Errorf("entry %s missing", w.ID)
					continue
				}
				if g.UserID != w.UserID || g.IntegrationID != w.IntegrationID || g.Reason != w.Reason || g.Error != w.Error ||
					g.Attempts != w.Attempts || g.FailedAt.IsZero() || g.Batch != w.Batch {
					t.Errorf("entry = %+v\nwant    %+v", g, w)
				}
				sameRequest(t, g.Request, tasks.Redact(w.Request))
			}
		})
	}

	t.Run("bad reason", func(t *testing.T) {
		t.Parallel()
		for _, verb := range []string{"list", "requeue", "purge", "export"} {
			r := runDB(t, db, "", "dlq", verb, "--reason", "timeout")
			if r.code != enqueuecmd.ExitUsage {
				t.Errorf("%s: want exit 2:\n%s", verb, r)
			}
			for _, reason := range tasks.Reasons() {
				if !strings.Contains(r.stderr, string(reason)) {
					t.Errorf("%s: stderr does not name %s:\n%s", verb, reason, r)
				}
			}
		}
		if got := deadIDs(t, db); len(got) != 3 {
			t.Errorf("dead letters = %v after failed commands, want 3", got)
		}
	})
}

func TestDLQListEmpty(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	knownQueue(t, db, queue)
	r := runDB(t, db, "", "dlq", "list", "--json")
	var got []deadletter.Entry
	if r.code != enqueuecmd.ExitOK || json.Unmarshal([]byte(r.stdout), &got) != nil || got == nil || len(got) != 0 {
		t.Errorf("want exit 0 and an empty JSON array:\n%s", r)
	}
	r = runDB(t, db, "", "dlq", "list")
	if r.code != enqueuecmd.ExitOK || !strings.Contains(r.stdout, "0 dead letters") {
		t.Errorf("want exit 0 and 0 dead letters:\n%s", r)
	}
	r = runDB(t, db, "", "dlq", "export")
	if r.code != enqueuecmd.ExitOK || r.stdout != "" {
		t.Errorf("want exit 0 and no output:\n%s", r)
	}
}

func TestDLQRequeue(t *testing.T) {
	t.Parallel()
	a, b, c := fullRequest("u-a"), request("u-b"), request("u-c")
	for _, tc := range []struct {
		name      string
		args      []string
		requeued  []versori.ActivationRequest
		remaining []versori.ActivationRequest
	}{
		{"ids", []string{id(a), id(c)}, []versori.ActivationRequest{a, c}, []versori.ActivationRequest{b}},
		{"reason", []string{"--reason", "not_found"}, []versori.ActivationRequest{b, c}, []versori.ActivationRequest{a}},
		{"all", []string{"--all"}, []versori.ActivationRequest{a, b, c}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := testutil.Redis(t)
			addDeadLetter(t, db, a, tasks.ReasonMissingConnections, func(e *deadletter.Entry) { e.Batch = "b-orig" })
			addDeadLetter(t, db, b, tasks.ReasonNotFound)
			addDeadLetter(t, db, c, tasks.ReasonNotFound)

			r := runDB(t, db, "", append([]string{"dlq", "requeue"}, tc.args...)...)
			if r.code != enqueuecmd.ExitOK {
				t.Fatalf("want exit 0:\n%s", r)
			}
			if !strings.Contains(r.stdout, fmt.Sprintf("requeued: %d\n", len(tc.requeued))) {
				t.Errorf("stdout does not say requeued: %d:\n%s", len(tc.requeued), r)
			}
			for _, req := range tc.requeued {
				p, state := payload(t, db, queue, id(req))
				if state != asynq.TaskStatePending || !p.Reconcile {
					t.Errorf("%s: state %v, payload %+v; want pending with Reconcile", id(req), state, p)
				}
				sameRequest(t, p.Request, req)
				if req.UserID == a.UserID && p.Batch != "b-orig" {
					t.Errorf("%s: batch %q, want the dead letter's b-orig", id(req), p.Batch)
				}
			}
			for _, req := range tc.remaining {
				noTask(t, db, id(req))
			}
			var want []string
			for _, req := range tc.remaining {
				want = append(want, id(req))
			}
			if got := deadIDs(t, db); !slices.Equal(got, sorted(want...)) {
				t.Errorf("dead letters left = %v, want %v", got, sorted(want...))
			}
			if n := testutil.Pending(t, db.Client, queue); n != len(tc.requeued) {
				t.Errorf("pending = %d, want %d", n, len(tc.requeued))
			}

			// Requeued pairs are queued: a file with them enqueues nothing.
			path := testutil.WriteFile(t, "again.jsonl", testutil.JSONL(t, a, b, c))
			r = runDB(t, db, "", "file", path, "--quiet")
			if r.code != enqueuecmd.ExitOK {
				t.Fatalf("file: want exit 0:\n%s", r)
			}
			counts(t, r, 0, len(tc.requeued), len(tc.remaining), 0)
		})
	}
}

func TestDLQRequeueUnknownIDs(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	a := request("u-a")
	addDeadLetter(t, db, a, tasks.ReasonNotFound)
	unknown := id(request("u-nobody"))

	r := runDB(t, db, "", "dlq", "requeue", unknown, id(a))
	if r.code != enqueuecmd.ExitRejected {
		t.Fatalf("want exit 1:\n%s", r)
	}
	if !strings.Contains(r.stdout, "requeued: 1") || !strings.Contains(r.stdout, "not found: "+unknown) {
		t.Errorf("stdout does not report 1 requeued and %s not found:\n%s", unknown, r)
	}
	if p, _ := payload(t, db, queue, id(a)); !p.Reconcile {
		t.Errorf("known id: payload %+v, want Reconcile", p)
	}
	noTask(t, db, unknown)
	if got := deadIDs(t, db); len(got) != 0 {
		t.Errorf("dead letters left = %v", got)
	}

	// Requeueing it again: it is no longer a dead letter.
	r = runDB(t, db, "", "dlq", "requeue", id(a))
	if r.code != enqueuecmd.ExitRejected || !strings.Contains(r.stdout, "not found: "+id(a)) {
		t.Errorf("second requeue: want exit 1 and not found:\n%s", r)
	}
}

// TestDLQRequeueReplacesArchivedTask covers the usual state of a dead letter: asynq also holds the
// dead job, archived, under the pair's task id.
func TestDLQRequeueReplacesArchivedTask(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	req := fullRequest("u-archived")
	task, err := tasks.NewTask(tasks.Payload{Request: req, Batch: "b-old"}, asynq.Queue(queue), asynq.MaxRetry(2))
	if err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClientFromRedisClient(db.Client)
	if _, err := client.Enqueue(task); err != nil {
		t.Fatal(err)
	}
	if err := inspector(db).ArchiveTask(queue, id(req)); err != nil {
		t.Fatal(err)
	}
	addDeadLetter(t, db, req, tasks.ReasonRetriesExhausted, func(e *deadletter.Entry) { e.Batch = "b-old" })

	// While the archived task is there, the pair cannot be enqueued again by a file.
	path := testutil.WriteFile(t, "in.jsonl", testutil.JSONL(t, req))
	if r := runDB(t, db, "", "file", path, "--quiet"); r.code != enqueuecmd.ExitOK {
		t.Fatalf("file: want exit 0:\n%s", r)
	} else {
		counts(t, r, 0, 0, 1, 0)
	}

	r := runDB(t, db, "", "dlq", "requeue", "--reason", "retries_exhausted")
	if r.code != enqueuecmd.ExitOK || !strings.Contains(r.stdout, "requeued: 1") {
		t.Fatalf("want exit 0 and requeued: 1:\n%s", r)
	}
	p, state := payload(t, db, queue, id(req))
	if state != asynq.TaskStatePending || !p.Reconcile || p.Batch != "b-old" {
		t.Errorf("task: state %v, payload %+v; want a fresh pending task with Reconcile", state, p)
	}
	sameRequest(t, p.Request, req)
	qi, err := inspector(db).GetQueueInfo(queue)
	if err != nil {
		t.Fatal(err)
	}
	if qi.Archived != 0 || qi.Pending != 1 {
		t.Errorf("queue: %d archived, %d pending; want 0 and 1", qi.Archived, qi.Pending)
	}
	if got := deadIDs(t, db); len(got) != 0 {
		t.Errorf("dead letters left = %v", got)
	}
}

// TestDLQRequeueLeavesRunningJob: a dead letter whose pair has a job running is left alone.
func TestDLQRequeueLeavesRunningJob(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	req := request("u-running")
	running := make(chan struct{})
	release := make(chan struct{})
	srv := asynq.NewServerFromRedisClient(db.Client, asynq.Config{
		Concurrency: 1, Queues: map[string]int{queue: 1}, LogLevel: asynq.FatalLevel,
	})
	var once sync.Once
	mux := asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		once.Do(func() { close(running) })
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
		srv.Shutdown()
	})

	path := testutil.WriteFile(t, "in.jsonl", testutil.JSONL(t, req))
	if r := runDB(t, db, "", "file", path, "--quiet"); r.code != enqueuecmd.ExitOK {
		t.Fatalf("file: want exit 0:\n%s", r)
	}
	<-running
	addDeadLetter(t, db, req, tasks.ReasonPermanentError)

	r := runDB(t, db, "", "dlq", "requeue", id(req))
	if r.code != enqueuecmd.ExitRejected {
		t.Fatalf("want exit 1:\n%s", r)
	}
	if !strings.Contains(r.stdout, "requeued: 0") || !strings.Contains(r.stdout, "queued or running): "+id(req)) {
		t.Errorf("stdout does not report the running job:\n%s", r)
	}
	if got := deadIDs(t, db); !slices.Equal(got, []string{id(req)}) {
		t.Errorf("dead letters = %v, want the running pair's left", got)
	}
	if _, state := payload(t, db, queue, id(req)); state != asynq.TaskStateActive {
		t.Errorf("task state = %v, want still active", state)
	}
	close(release)
}

func TestDLQPurge(t *testing.T) {
	t.Parallel()
	a, b, c := fullRequest("u-a"), request("u-b"), request("u-c")
	unknown := id(request("u-nobody"))
	for _, tc := range []struct {
		name      string
		args      []string
		code      int
		out       []string
		remaining []versori.ActivationRequest
	}{
		{"ids", []string{id(a), id(c)}, enqueuecmd.ExitOK, []string{"purged: 2\n"}, []versori.ActivationRequest{b}},
		{"reason", []string{"--reason", "not_found"}, enqueuecmd.ExitOK, []string{"purged: 2\n"}, []versori.ActivationRequest{a}},
		{"reason none", []string{"--reason", "unauthorized"}, enqueuecmd.ExitOK, []string{"purged: 0\n"}, []versori.ActivationRequest{a, b, c}},
		{"all", []string{"--all"}, enqueuecmd.ExitOK, []string{"purged: 3\n"}, nil},
		{"unknown ids", []string{unknown, id(b)}, enqueuecmd.ExitRejected, []string{"purged: 1\n", "not found: 1\n"}, []versori.ActivationRequest{a, c}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db := testutil.Redis(t)
			addDeadLetter(t, db, a, tasks.ReasonMissingConnections)
			addDeadLetter(t, db, b, tasks.ReasonNotFound)
			addDeadLetter(t, db, c, tasks.ReasonNotFound)
			r := runDB(t, db, "", append([]string{"dlq", "purge"}, tc.args...)...)
			if r.code != tc.code {
				t.Fatalf("want exit %d:\n%s", tc.code, r)
			}
			for _, s := range tc.out {
				if !strings.Contains(r.stdout, s) {
					t.Errorf("stdout does not say %q:\n%s", s, r)
				}
			}
			var want []string
			for _, req := range tc.remaining {
				want = append(want, id(req))
			}
			if got := deadIDs(t, db); !slices.Equal(got, sorted(want...)) {
				t.Errorf("dead letters left = %v, want %v", got, sorted(want...))
			}
			if n := testutil.Pending(t, db.Client, queue); n != 0 {
				t.Errorf("purge enqueued %d tasks", n)
			}
			// The reason indexes follow: listing by reason shows only what is left.
			r = runDB(t, db, "", "dlq", "list", "--json", "--reason", "not_found")
			var left []deadletter.Entry
			if err := json.Unmarshal([]byte(r.stdout), &left); err != nil {
				t.Fatalf("list: %v\n%s", err, r)
			}
			for _, e := range left {
				if !slices.Contains(want, e.ID) {
					t.Errorf("purged %s still listed under not_found", e.ID)
				}
			}
		})
	}
}

func TestDLQRequeueAndPurgeNeedExactlyOneSelection(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	a := request("u-a")
	addDeadLetter(t, db, a, tasks.ReasonNotFound)
	for _, verb := range []string{"requeue", "purge"} {
		for _, args := range [][]string{
			nil,
			{id(a), "--all"},
			{"--all", id(a)},
			{id(a), "--reason", "not_found"},
			{"--reason", "not_found", "--all"},
			{id(a), "--reason", "not_found", "--all"},
		} {
			r := runDB(t, db, "", append([]string{"dlq", verb}, args...)...)
			if r.code != enqueuecmd.ExitUsage || !strings.Contains(r.stderr, "one of them") {
				t.Errorf("dlq %s %v: want exit 2 saying to pick one:\n%s", verb, args, r)
			}
		}
	}
	if got := deadIDs(t, db); !slices.Equal(got, []string{id(a)}) {
		t.Errorf("dead letters = %v, want untouched", got)
	}
	if n := testutil.Pending(t, db.Client, queue); n != 0 {
		t.Errorf("%d tasks enqueued", n)
	}
}

func TestDLQExportFeedsBackIntoFile(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	reqs := []versori.ActivationRequest{fullRequest("u-a"), request("u-b"), request("u-c")}
	addDeadLetter(t, db, reqs[0], tasks.ReasonMissingConnections)
	addDeadLetter(t, db, reqs[1], tasks.ReasonNotFound)
	addDeadLetter(t, db, reqs[2], tasks.ReasonNotFound)

	r := runDB(t, db, "", "dlq", "export", "--reason", "not_found")
	if r.code != enqueuecmd.ExitOK {
		t.Fatalf("want exit 0:\n%s", r)
	}
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 2 {
		t.Errorf("export --reason not_found: %d lines, want 2:\n%s", len(lines), r)
	}

	// Withheld credentials feed back only into `dlq requeue --file`, which takes them from the dead
	// letter (TestDLQExportWithholdsCredentials); to purge and enqueue again, export them shown.
	r = runDB(t, db, "", "dlq", "export", "--show-secrets")
	if r.code != enqueuecmd.ExitOK {
		t.Fatalf("want exit 0:\n%s", r)
	}
	exported := r.stdout
	lines := strings.Split(strings.TrimSpace(exported), "\n")
	if len(lines) != len(reqs) {
		t.Fatalf("export: %d lines, want %d:\n%s", len(lines), len(reqs), r)
	}
	for _, l := range lines {
		var got map[string]json.RawMessage
		if err := json.Unmarshal([]byte(l), &got); err != nil {
			t.Fatalf("export line %q: %v", l, err)
		}
		if _, ok := got["userId"]; !ok || got["request"] != nil || got["reason"] != nil {
			t.Errorf("export line %s is not a POST /activations body", l)
		}
	}

	// Before purging, the pairs are still dead letters: nothing is enqueued.
	r = runDB(t, db, exported, "file", "-", "--quiet")
	if r.code != enqueuecmd.ExitOK {
		t.Fatalf("file -: want exit 0:\n%s", r)
	}
	counts(t, r, 0, 0, len(reqs), 0)

	if r = runDB(t, db, "", "dlq", "purge", "--all"); r.code != enqueuecmd.ExitOK {
		t.Fatalf("purge: want exit 0:\n%s", r)
	}
	r = runDB(t, db, exported, "file", "-", "--quiet", "--batch", "b-replay")
	if r.code != enqueuecmd.ExitOK {
		t.Fatalf("file -: want exit 0:\n%s", r)
	}
	counts(t, r, len(reqs), 0, 0, 0)
	for _, req := range reqs {
		p, state := payload(t, db, queue, id(req))
		if state != asynq.TaskStatePending || p.Batch != "b-replay" {
			t.Errorf("%s: state %v, payload %+v", id(req), state, p)
		}
		sameRequest(t, p.Request, req)
	}
}

func TestPauseResume(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	paused := func() bool {
		t.Helper()
		qi, err := inspector(db).GetQueueInfo(queue)
		if err != nil {
			t.Fatal(err)
		}
		return qi.Paused
	}

	// Pausing a queue nothing was enqueued to yet takes --force, and holds once jobs arrive.
	if r := runDB(t, db, "", "pause"); r.code != enqueuecmd.ExitUsage || !strings.Contains(r.stderr, "--force") {
		t.Fatalf("pause of an unused queue: want exit 2 naming --force:\n%s", r)
	}
	if r := runDB(t, db, "", "pause", "--force"); r.code != enqueuecmd.ExitOK || !strings.Contains(r.stdout, "paused") {
		t.Fatalf("pause --force: want exit 0:\n%s", r)
	}
	path := testutil.WriteFile(t, "in.jsonl", testutil.JSONL(t, request("u-1")))
	if r := runDB(t, db, "", "file", path, "--quiet"); r.code != enqueuecmd.ExitOK {
		t.Fatalf("file: want exit 0:\n%s", r)
	}
	if !paused() {
		t.Fatal("queue is not paused after pause")
	}

	for i, step := range []struct {
		verb string
		want bool
	}{
		{"pause", true}, // again: nothing to do, not an error
		{"resume", false},
		{"resume", false}, // again: nothing to do, not an error
		{"pause", true},
		{"resume", false},
	} {
		r := runDB(t, db, "", step.verb)
		if r.code != enqueuecmd.ExitOK {
			t.Errorf("step %d %s: want exit 0:\n%s", i, step.verb, r)
		}
		if got := paused(); got != step.want {
			t.Errorf("step %d %s: paused = %v, want %v", i, step.verb, got, step.want)
		}
	}
	if n := testutil.Pending(t, db.Client, queue); n != 1 {
		t.Errorf("pending = %d, want the 1 job kept", n)
	}

	// --queue picks the queue.
	if r := runDB(t, db, "", "pause", "--queue", "other", "--force"); r.code != enqueuecmd.ExitOK || !strings.Contains(r.stdout, "other") {
		t.Errorf("pause --queue other: want exit 0:\n%s", r)
	}
	if paused() {
		t.Error("pausing another queue paused this one")
	}
}

// TestDLQFixAndRequeue is the dead-letter workflow of docs/operations.md: requeue what can be requeued as it is
// (a dead letter without a valid request is skipped and named, the rest still goes), fix the rows
// and requeue them from a file (JSONL or CSV; malformed rows to the rejects file, rows without a dead
// letter counted), and purge for good, after which the corrected row queues the pair again.
func TestDLQFixAndRequeue(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	a, c := request("u-a"), request("u-c")
	bad := request("u-b")
	addDeadLetter(t, db, a, tasks.ReasonMissingConnections)
	addDeadLetter(t, db, bad, tasks.ReasonInvalidRequest, func(e *deadletter.Entry) {
		e.Request = versori.ActivationRequest{} // a payload that could not be read
	})
	addDeadLetter(t, db, c, tasks.ReasonNotFound)

	// --all requeues a and c, and names the entry it cannot send as it is.
	r := runDB(t, db, "", "dlq", "requeue", "--all")
	if r.code != enqueuecmd.ExitRejected || !strings.Contains(r.stdout, "requeued: 2\n") ||
		!strings.Contains(r.stdout, "their request is not valid") || !strings.Contains(r.stdout, id(bad)+": ") {
		t.Fatalf("requeue --all: want exit 1, 2 requeued and %s named:\n%s", id(bad), r)
	}
	if got := deadIDs(t, db); !slices.Equal(got, []string{id(bad)}) {
		t.Errorf("dead letters left = %v, want only %s", got, id(bad))
	}

	// The fixed row replaces its dead letter; a row for a pair with no dead letter and a malformed
	// row are reported, and the rest still runs.
	fixed := fullRequest("u-b")
	path := testutil.WriteFile(t, "fixed.jsonl", testutil.JSONL(t, request("u-nobody"), fixed)+"{\"userId\":\n")
	r = runDB(t, db, "", "dlq", "requeue", "--file", path)
	if r.code != enqueuecmd.ExitRejected || !strings.Contains(r.stdout, "requeued: 1\n") ||
		!strings.Contains(r.stdout, "not dead-lettered (nothing done; lines 1): 1\n") || !strings.Contains(r.stdout, "rejected: 1\n") ||
		!strings.Contains(r.stdout, "rejects: "+path+".rejects.jsonl") {
		t.Fatalf("requeue --file: want exit 1, 1 requeued, line 1 not dead-lettered, 1 rejected:\n%s", r)
	}
	p, state := payload(t, db, queue, id(bad))
	if state != asynq.TaskStatePending || !p.Reconcile {
		t.Errorf("the fixed job: state %v, reconcile %v; want pending, looking first", state, p.Reconcile)
	}
	sameRequest(t, p.Request, fixed)
	if got := deadIDs(t, db); len(got) != 0 {
		t.Errorf("dead letters left = %v, want none", got)
	}
	// Again: nothing left to requeue, and nothing queued twice.
	r = runDB(t, db, "", "dlq", "requeue", "--file", path)
	if r.code != enqueuecmd.ExitRejected || !strings.Contains(r.stdout, "requeued: 0\n") || testutil.Pending(t, db.Client, queue) != 3 {
		t.Errorf("requeue --file again: want nothing requeued and 3 jobs pending:\n%s", r)
	}

	// CSV works the same, with ULIDs in lower case.
	d := request("u-d")
	addDeadLetter(t, db, d, tasks.ReasonNotFound)
	csvPath := testutil.WriteFile(t, "fixed.csv", "userId,integrationId\nu-d,"+strings.ToLower(d.IntegrationID)+"\n")
	if r = runDB(t, db, "", "dlq", "requeue", "--file", csvPath); r.code != enqueuecmd.ExitOK || !strings.Contains(r.stdout, "requeued: 1\n") {
		t.Errorf("requeue --file CSV: want exit 0 and 1 requeued:\n%s", r)
	}

	// A purge is final, and frees the pair: the corrected row queues it again, looking first.
	e := request("u-e")
	addDeadLetter(t, db, e, tasks.ReasonMissingConnections)
	if r = runDB(t, db, "", "dlq", "purge", id(e)); r.code != enqueuecmd.ExitOK || !strings.Contains(r.stdout, "purged: 1\n") {
		t.Fatalf("purge: want exit 0, 1 purged:\n%s", r)
	}
	r = runDB(t, db, "", "file", "--quiet", testutil.WriteFile(t, "e.jsonl", testutil.JSONL(t, fullRequest("u-e"))))
	if r.code != enqueuecmd.ExitOK {
		t.Fatalf("file after the purge: want exit 0:\n%s", r)
	}
	counts(t, r, 1, 0, 0, 0)
	if p, _ := payload(t, db, queue, id(e)); !p.Reconcile {
		t.Errorf("the purged pair's new job does not look first: %+v", p)
	}

	// A dead letter whose pair has a job queued again is left by a purge, and named; the job stays.
	addDeadLetter(t, db, a, tasks.ReasonNotFound)
	if r = runDB(t, db, "", "dlq", "purge", "--all"); r.code != enqueuecmd.ExitRejected || !strings.Contains(r.stdout, "left (a job for the pair is queued or running): "+id(a)) {
		t.Errorf("purge of a busy pair: want exit 1 naming %s:\n%s", id(a), r)
	}
	if _, state := payload(t, db, queue, id(a)); state != asynq.TaskStatePending {
		t.Errorf("the busy pair's job is %v, want pending", state)
	}

	// Usage errors, before Redis is asked.
	for _, args := range [][]string{
		{"dlq", "requeue", "--rejects", "x.jsonl", "--all"},
		{"dlq", "requeue", "--file", "fixed.txt"},
		{"dlq", "requeue", "--file", path, "--all"},
	} {
		if r := runDB(t, db, "", args...); r.code != enqueuecmd.ExitUsage {
			t.Errorf("%v: want exit 2:\n%s", args, r)
		}
	}
}
