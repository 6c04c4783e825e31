package enqueuecmd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/activator/internal/batch"
	"github.com/versori/activator/internal/testutil"
)

// runBinary runs the built enqueue binary with args and vars as its environment (and PATH), as a
// person at a shell does.
func runBinary(t *testing.T, vars map[string]string, args ...string) result {
	t.Helper()
	cmd := exec.Command(testutil.GoBuild(t, "github.com/versori/activator/cmd/enqueue"), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// oneLine checks that r's stderr is the one line want.
func oneLine(t *testing.T, r result, code int, want string) {
	t.Helper()
	if r.code != code || r.stderr != want+"\n" || r.stdout != "" {
		t.Errorf("want exit %d, nothing on stdout and stderr the one line %q:\n%s", code, want, r)
	}
}

// TestBinaryHelp runs every help the way a person asks for it: exit 0, the help on stdout, its usage
// line naming the arguments.
func TestBinaryHelp(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"dlq", "--help"}, "  enqueue dlq requeue (ID... | --reason R | --all | --file FIXED [--format F] [--rejects PATH])\n"},
		{[]string{"dlq", "-h"}, "  enqueue dlq purge (ID... | --reason R | --all)\n"},
		{[]string{"dlq", "help"}, "  enqueue dlq list [--json] [--reason R] [--show-secrets]\n"},
		{[]string{"status", "-h"}, "usage: enqueue status BATCH [flags]\n"},
		{[]string{"status", "--help"}, "  -force\n"},
		{[]string{"dlq", "requeue", "-h"}, "usage: enqueue dlq requeue (ID... | --reason R | --all | --file FIXED) [flags]\n"},
		{[]string{"dlq", "purge", "-h"}, "usage: enqueue dlq purge (ID... | --reason R | --all) [flags]\n"},
		{[]string{"dlq", "list", "-h"}, "usage: enqueue dlq list [flags]\n"},
		{[]string{"file", "-h"}, "usage: enqueue file PATH [flags]\n"},
		{[]string{"pause", "-h"}, "usage: enqueue pause [flags]\n"},
		{[]string{"serve", "-h"}, "usage: enqueue serve [flags]\n"},
		{[]string{"--help"}, "  enqueue status BATCH [--json] [--watch]"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			r := runBinary(t, nil, tc.args...)
			if r.code != 0 || !strings.Contains(r.stdout, tc.want) || r.stderr != "" {
				t.Errorf("want exit 0 and stdout with %q:\n%s", tc.want, r)
			}
		})
	}
}

// TestBinaryUsageErrorsAreOneLine runs mistakes on the command line: each is one line saying what
// is wrong and where the help is, exit 2.
func TestBinaryUsageErrorsAreOneLine(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"status", "--bogus", "b1"}, "enqueue: flag provided but not defined: -bogus; see enqueue status -h"},
		{[]string{"dlq", "list", "--all"}, "enqueue: flag provided but not defined: -all; see enqueue dlq list -h"},
		{[]string{"file", "--batch"}, "enqueue: flag needs an argument: -batch; see enqueue file -h"},
		{[]string{"status", "b1", "--interval", "soon"}, `enqueue: invalid value "soon" for flag -interval: parse error; see enqueue status -h`},
		{[]string{"bogus"}, `enqueue: unknown command "bogus"; see enqueue -h`},
		{[]string{"dlq", "bogus"}, `enqueue: unknown dlq command "bogus": want list, requeue, purge or export; see enqueue dlq -h`},
		{[]string{"pause", "now"}, "enqueue: pause takes no arguments (-queue names the queue)"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			oneLine(t, runBinary(t, nil, tc.args...), 2, tc.want)
		})
	}
}

func TestBinaryVersion(t *testing.T) {
	t.Parallel()
	for _, arg := range []string{"--version", "-version", "version"} {
		r := runBinary(t, nil, arg)
		if r.code != 0 || !strings.HasPrefix(r.stdout, "enqueue github.com/versori/activator ") || strings.Count(r.stdout, "\n") != 1 || r.stderr != "" {
			t.Errorf("%s: want exit 0 and one line naming the module:\n%s", arg, r)
		}
	}
}

// TestBinaryUnknownQueue runs every verb on a mistyped queue: each refuses, with one line, exit 2,
// and changes nothing, unless --force. A queue that has had a task, or has a worker, is known.
func TestBinaryUnknownQueue(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ctx := context.Background()
	vars := map[string]string{"REDIS_URL": db.URL()}
	const typo = "activatons"
	for _, args := range [][]string{
		{"pause"}, {"resume"}, {"status", "b1"}, {"dlq", "list"}, {"dlq", "list", "--json"}, {"dlq", "export"},
		{"dlq", "requeue", "--all"}, {"dlq", "purge", "--all"},
	} {
		r := runBinary(t, vars, append(args, "-queue", typo)...)
		oneLine(t, r, 2, "enqueue: queue activatons is unknown: no task or worker has used it; --force to act anyway")
	}
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	if qs, err := insp.Queues(); err != nil || len(qs) != 0 {
		t.Fatalf("the refused verbs left queues %v, %v", qs, err)
	}
	if keys, err := db.Keys(ctx); err != nil || len(keys) != 0 {
		t.Errorf("the refused verbs wrote keys %v, %v", keys, err)
	}

	// --force acts anyway.
	if r := runBinary(t, vars, "pause", "-queue", typo, "--force"); r.code != 0 || r.stdout != "queue activatons paused\n" {
		t.Errorf("pause --force: want exit 0:\n%s", r)
	}
	// and, once paused, the queue is known.
	if r := runBinary(t, vars, "resume", "-queue", typo); r.code != 0 {
		t.Errorf("resume of a queue paused with --force: want exit 0:\n%s", r)
	}

	// A queue that has had a task is known.
	c := asynq.NewClientFromRedisClient(db.Client)
	defer c.Close()
	if _, err := c.Enqueue(asynq.NewTask("t", nil), asynq.Queue("tasked")); err != nil {
		t.Fatal(err)
	}
	if r := runBinary(t, vars, "pause", "-queue", "tasked"); r.code != 0 {
		t.Errorf("pause of a queue with a task: want exit 0:\n%s", r)
	}
	// So is one a worker serves, though nothing was queued on it yet.
	srv := asynq.NewServerFromRedisClient(db.Client, asynq.Config{Queues: map[string]int{"served": 1}, LogLevel: asynq.FatalLevel})
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return nil })); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	testutil.WaitFor(t, 10*time.Second, "the worker to show in asynq's servers", func() bool {
		return runBinary(t, vars, "dlq", "list", "-queue", "served").code == 0
	})
}

// TestBinaryStatus reads batches with the real binary: an unknown batch in one clean line, a
// finished batch's frozen rate, a paused queue, and JSON durations in seconds.
func TestBinaryStatus(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ctx := context.Background()
	vars := map[string]string{"REDIS_URL": db.URL()}
	knownQueue(t, db, queue)
	write := func(id string, when time.Time, counts map[string]int64) {
		t.Helper()
		if err := batch.WriteAt(ctx, db.Client, queue, map[string]map[string]int64{id: counts}, when); err != nil {
			t.Fatal(err)
		}
	}

	oneLine(t, runBinary(t, vars, "status", "nosuchbatch"), 1,
		"enqueue: batch nosuchbatch: no such batch on queue activations (never run there, or its counters expired 30 days after they last changed)")

	// Finished long ago: its rate is that of its run, from the first job's end to the last, whenever it is read.
	long := time.Now().Add(-20 * 24 * time.Hour)
	write("done", long, map[string]int64{batch.FieldQueued: 1000})
	write("done", long.Add(time.Minute), map[string]int64{batch.FieldActivated: 500})
	write("done", long.Add(3*time.Minute), map[string]int64{batch.FieldActivated: 490, batch.FieldDeadPrefix + "not_found": 10})
	r := runBinary(t, vars, "status", "done")
	for _, want := range []string{"batch done: done\n", "remaining: 0\n", "rate: 8.3/s (from the first job's end to the last: 2m0s)\n",
		"elapsed: 3m0s (from enqueueing to the last job's end)\n"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("status of a finished batch: want exit 0 and %q:\n%s", want, r)
		}
	}

	// Running: jobs ended over the last half minute.
	now := time.Now()
	write("run", now.Add(-5*time.Minute), map[string]int64{batch.FieldQueued: 100_000})
	for d := 30 * time.Second; d > 0; d -= time.Second {
		write("run", now.Add(-d), map[string]int64{batch.FieldActivated: 100})
	}
	r = runBinary(t, vars, "status", "run", "--json")
	var st map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &st); r.code != 0 || err != nil {
		t.Fatalf("status --json: %v\n%s", err, r)
	}
	for _, k := range []string{"etaSeconds", "elapsedSeconds", "runningSeconds", "rateWindowSeconds", "averageRate", "rate"} {
		if _, ok := st[k].(float64); !ok {
			t.Errorf("status --json has no number %s: %s", k, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "Nanos") {
		t.Errorf("status --json gives nanoseconds: %s", r.stdout)
	}

	// Paused by an operator: it says so, and tells no ETA.
	if r := runBinary(t, vars, "pause"); r.code != 0 {
		t.Fatalf("pause:\n%s", r)
	}
	r = runBinary(t, vars, "status", "run")
	for _, want := range []string{"batch run: paused by an operator (enqueue pause); `enqueue resume` starts it again\n", "eta: none while the queue is paused\n"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("status of a paused batch: want exit 0 and %q:\n%s", want, r)
		}
	}
	r = runBinary(t, vars, "status", "run", "--json")
	if !strings.Contains(r.stdout, `"paused":true,"pausedReason":"operator"`) || strings.Contains(r.stdout, "etaSeconds") {
		t.Errorf("status --json of a paused batch:\n%s", r)
	}
}

// TestBinaryServeAddressTaken checks that `enqueue serve` on an address it cannot listen on exits
// 2, a configuration error, as the worker does for its METRICS_ADDR.
func TestBinaryServeAddressTaken(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	r := runBinary(t, map[string]string{"REDIS_URL": unreachable}, "serve", "--insecure", "--addr", ln.Addr().String())
	if r.code != 2 || !strings.Contains(r.stderr, "address already in use") {
		t.Errorf("want exit 2 and the address in use:\n%s", r)
	}
}

// TestBinaryStatusWatchInterrupted stops `status --watch` with Ctrl-C before the batch is done:
// exit 130, as for any command interrupted before it finished.
func TestBinaryStatusWatchInterrupted(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	knownQueue(t, db, queue)
	if err := batch.Write(context.Background(), db.Client, queue, map[string]map[string]int64{"b1": {batch.FieldQueued: 10}}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testutil.GoBuild(t, "github.com/versori/activator/cmd/enqueue"), "status", "b1", "--watch", "--interval", "1h")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "REDIS_URL=" + db.URL()}
	var out testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the first status", func() bool { return strings.Contains(out.String(), "batch b1: running") })
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Errorf("status --watch after Ctrl-C: %v, want exit 130\n%s", err, out.String())
	}
}
