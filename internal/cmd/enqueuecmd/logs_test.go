package enqueuecmd_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/versori/activator/internal/testutil"
)

// These tests run the enqueue binary, as a person does, and read its stderr.

// enqueueProcess runs the enqueue binary with args and env (nothing else of the test's environment).
func enqueueProcess(t *testing.T, env []string, args ...string) (*exec.Cmd, *testutil.SyncBuffer) {
	t.Helper()
	cmd := exec.Command(testutil.GoBuild(t, "github.com/versori/activator/cmd/enqueue"), args...)
	stderr := &testutil.SyncBuffer{}
	cmd.Env, cmd.Stdout, cmd.Stderr = env, &testutil.SyncBuffer{}, stderr
	return cmd, stderr
}

// TestProcessRedisRefusesDatabase checks that a REDIS_URL naming a database Redis does not have is a
// bad setting: one line naming REDIS_URL, exit 2, from the intake (which otherwise starts with Redis
// down) as from the other subcommands (which exit 3 when Redis does not answer).
func TestProcessRedisRefusesDatabase(t *testing.T) {
	t.Parallel()
	url := "redis://" + testutil.RedisAddr() + "/99"
	want := "enqueue: REDIS_URL (" + url + ") names database 99, which Redis refuses (ERR DB index is out of range)"
	for _, args := range [][]string{
		{"serve", "--insecure", "--addr", "127.0.0.1:0"},
		{"dlq", "list"},
	} {
		cmd, stderr := enqueueProcess(t, []string{"REDIS_URL=" + url}, args...)
		err := cmd.Run()
		if code := cmd.ProcessState.ExitCode(); code != 2 {
			t.Errorf("enqueue %s: exit %d (%v), want 2; stderr:\n%s", strings.Join(args, " "), code, err, stderr)
		}
		if out := stderr.String(); strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, want) {
			t.Errorf("enqueue %s: stderr = %q, want one line starting %q", strings.Join(args, " "), out, want)
		}
	}
}

// TestProcessServeLogsJSON checks that `enqueue serve` logs JSON lines (it logged slog's text), go-redis's
// messages about a Redis that does not answer among them, not go-redis's own plain lines; and
// LOG_FORMAT=text for a terminal.
func TestProcessServeLogsJSON(t *testing.T) {
	t.Parallel()
	down := "redis://127.0.0.1:" + strconv.Itoa(testutil.FreePort(t)) + "/0"
	for _, format := range []string{"", "text"} {
		cmd, stderr := enqueueProcess(t, []string{"REDIS_URL=" + down, "LOG_FORMAT=" + format}, "serve", "--insecure", "--addr", "127.0.0.1:0")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 30*time.Second, "the intake listening, and go-redis's refused dial", func() bool {
			out := stderr.String()
			return strings.Contains(out, "intake listening") && strings.Contains(out, "go-redis")
		})
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("LOG_FORMAT=%q: exit %d after SIGTERM, want 0", format, code)
		}
		for _, l := range strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n") {
			if format == "" && !json.Valid([]byte(l)) || format == "text" && !strings.HasPrefix(l, "time=") {
				t.Errorf("LOG_FORMAT=%q: line %q is not in that format", format, l)
			}
		}
	}
}

// TestProcessOneShotRedisDownOneLine checks that a one-shot command run with Redis down writes exactly
// one line to stderr, its own, and exits 3 (Redis failed), whatever LOG_FORMAT says: go-redis's refused
// dial used to come before it as a JSON warning and after it as a JSON "repeated" count. `enqueue
// serve` still logs go-redis's messages (TestProcessServeLogsJSON).
func TestProcessOneShotRedisDownOneLine(t *testing.T) {
	t.Parallel()
	down := "redis://127.0.0.1:" + strconv.Itoa(testutil.FreePort(t)) + "/0"
	want := "enqueue: no answer from Redis at " + down + " ("
	dir := t.TempDir()
	file := dir + "/rows.jsonl"
	if err := os.WriteFile(file, []byte(`{"endUserId":"u1","connectionId":"c1"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		format string
		args   []string
	}{
		{"", []string{"status", "x"}},
		{"text", []string{"status", "x"}},
		{"", []string{"status", "x", "--force"}},
		{"", []string{"pause"}},
		{"", []string{"resume", "--force"}},
		{"", []string{"dlq", "list"}},
		{"", []string{"dlq", "purge", "--all"}},
		{"", []string{"file", file, "--quiet"}},
	} {
		t.Run("LOG_FORMAT="+tc.format+" "+strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			cmd, stderr := enqueueProcess(t, []string{"REDIS_URL=" + down, "LOG_FORMAT=" + tc.format}, tc.args...)
			_ = cmd.Run()
			if code := cmd.ProcessState.ExitCode(); code != 3 {
				t.Errorf("exit %d, want 3; stderr:\n%s", code, stderr)
			}
			if out := stderr.String(); strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, want) {
				t.Errorf("stderr = %q, want exactly one line starting %q", out, want)
			}
		})
	}
}
