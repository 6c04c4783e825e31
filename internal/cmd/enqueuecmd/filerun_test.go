package enqueuecmd_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/versori"
)

// The tests here run the real enqueue binary as a person does: in a terminal (tmux), with a pipe,
// and stopped with a real signal.

const enqueuePkg = "github.com/versori/activator/cmd/enqueue"

// pauseWrites waits until the run has queued some rows, then makes srv hold every write for d, as
// a slow or stuck Redis would: the run is caught mid-way however fast it otherwise is (with a
// rate, since it has queued rows), and resumes when d is over.
func pauseWrites(t *testing.T, srv *testutil.RedisServer, d time.Duration) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for srv.Client.LLen(ctx, rediskeys.AsynqPending(queue)).Val() < 1000 {
		if time.Now().After(deadline) {
			t.Fatal("the run queued no rows within 30 s")
		}
	}
	if err := srv.Client.Do(ctx, "CLIENT", "PAUSE", strconv.Itoa(int(d.Milliseconds())), "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
}

// terminal is a tmux session of its own (its own server socket) running sh, of a fixed size.
type terminal struct {
	t      *testing.T
	socket string
}

func newTerminal(t *testing.T) *terminal {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("tmux is not installed, and CI needs the terminal tests: %v", err)
		}
		t.Skipf("tmux is not installed (apt-get install tmux): %v", err)
	}
	term := &terminal{t: t, socket: filepath.Join(t.TempDir(), "tmux.sock")}
	// A plain sh with a fixed prompt, whatever the user's shell and rc files.
	term.tmux("new-session", "-d", "-x", "160", "-y", "50", "env", "-i", "PATH="+os.Getenv("PATH"), "TERM=xterm-256color", "PS1=$ ", "sh")
	t.Cleanup(func() { exec.Command("tmux", "-S", term.socket, "kill-server").Run() })
	term.waitPane(regexp.MustCompile(`(?m)^\$`), "the shell's prompt")
	return term
}

func (term *terminal) tmux(args ...string) string {
	term.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-S", term.socket}, args...)...).CombinedOutput()
	if err != nil {
		term.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// run types line and Enter.
func (term *terminal) run(line string) {
	term.tmux("send-keys", "-l", line)
	term.tmux("send-keys", "Enter")
}

// pane is what the terminal shows now.
func (term *terminal) pane() string { return term.tmux("capture-pane", "-p") }

// waitPane waits until the pane matches re, and returns it.
func (term *terminal) waitPane(re *regexp.Regexp, what string) string {
	term.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		pane := term.pane()
		if re.MatchString(pane) {
			return pane
		}
		if time.Now().After(deadline) {
			term.t.Fatalf("timed out after 30s waiting for %s; the pane:\n%s", what, pane)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var (
	barRe     = regexp.MustCompile(`\]\s+(\d+)% ([\d,]+)/([\d,]+) rows · ([\d,]+) enqueued`)
	exitRe    = regexp.MustCompile(`(?m)^EXIT=(\d+)$`)
	progressN = regexp.MustCompile(`(?m)^progress: (\d+)/(\d+) rows \((\d+)%\), .*ETA [0-9.hms]+$`)
)

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(strings.ReplaceAll(s, ",", ""))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkPercent checks that a bar's percent is the share of the rows read (99 while not all are
// handled), and that the total is the file's.
func checkPercent(t *testing.T, m []string, rows int) {
	t.Helper()
	pct, read, total := atoi(t, m[1]), atoi(t, m[2]), atoi(t, m[3])
	want := read * 100 / total
	if want == 100 && atoi(t, m[4]) < total {
		want = 99
	}
	if total != rows || pct != want {
		t.Errorf("bar %q: %d%% of %d/%d rows, want %d%% of %d", m[0], pct, read, total, want, rows)
	}
}

// lineBefore is the pane's line just above the first line starting with prefix.
func lineBefore(pane, prefix string) string {
	lines := strings.Split(pane, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, prefix) && i > 0 {
			return lines[i-1]
		}
	}
	return ""
}

// TestProgressBarInATerminal runs `enqueue file` on 50,000 rows in a tmux terminal, catches the bar
// mid-run (Redis holds writes for a moment, so that it cannot finish first), and checks the pane:
// the percent is that of the rows read of the file's, and the bar's last state, written over it,
// is the line above the summary: 100%, every row, done.
func TestProgressBarInATerminal(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the enqueue binary and enqueues 50,000 rows in a terminal")
	}
	const rows = 50_000
	bin := testutil.GoBuild(t, enqueuePkg)
	path := testutil.WriteRows(t, rows)
	srv := testutil.StartRedisServer(t, false)
	term := newTerminal(t)
	term.run(fmt.Sprintf("REDIS_URL=%s %s file %s; echo EXIT=$?", srv.URL(), bin, path))
	term.waitPane(regexp.MustCompile(`(?m)^batch b-`), "the batch line")
	pauseWrites(t, srv, 1500*time.Millisecond)
	mid := term.waitPane(barRe, "the progress bar")
	if m := barRe.FindStringSubmatch(mid); m != nil && !strings.Contains(mid, "EXIT=") {
		checkPercent(t, m, rows)
	}
	pane := term.waitPane(exitRe, "the end of the run")
	t.Logf("mid-run:\n%s\nend:\n%s", strings.TrimSpace(mid), strings.TrimSpace(pane))
	if got := exitRe.FindStringSubmatch(pane)[1]; got != "0" {
		t.Errorf("exit %s, want 0", got)
	}
	if n := strings.Count(pane, " rows · "); n != 1 {
		t.Errorf("the pane shows %d progress lines, want the one last state", n)
	}
	last := lineBefore(pane, "enqueued: ")
	if !strings.HasPrefix(last, "[====================] 100% 50,000/50,000 rows · 50,000 enqueued · 0 rejected · done in ") {
		t.Errorf("line above the summary = %q, want the bar at 100%% of 50,000 rows, done", last)
	}
	if !strings.Contains(pane, "enqueued: 50000\n") {
		t.Errorf("summary does not say 50000 enqueued")
	}
}

// TestCtrlCInATerminal presses Ctrl-C in the terminal while a run waits on Redis: the last line says
// interrupted, not 100%, the summary and message say interrupted (not that Redis failed) and to
// re-run the file, and the exit status is 130.
func TestCtrlCInATerminal(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the enqueue binary and runs it in a terminal")
	}
	const rows = 50_000
	bin := testutil.GoBuild(t, enqueuePkg)
	path := testutil.WriteRows(t, rows)
	srv := testutil.StartRedisServer(t, false)
	term := newTerminal(t)
	term.run(fmt.Sprintf("REDIS_URL=%s %s file %s; echo EXIT=$?", srv.URL(), bin, path))
	term.waitPane(regexp.MustCompile(`(?m)^batch b-`), "the batch line")
	pauseWrites(t, srv, 2*time.Second)
	term.waitPane(barRe, "the progress bar")
	term.tmux("send-keys", "C-c")
	pane := term.waitPane(exitRe, "the end of the run")
	t.Logf("pane:\n%s", strings.TrimSpace(pane))
	if got := exitRe.FindStringSubmatch(pane)[1]; got != "130" {
		t.Errorf("exit %s, want 130", got)
	}
	if strings.Contains(pane, "100%") || strings.Contains(pane, "Redis failed") {
		t.Errorf("the pane says 100%% or Redis failed after Ctrl-C")
	}
	if n := strings.Count(pane, " rows read · "); n != 1 || strings.Count(pane, " rows · ") != 0 {
		t.Errorf("want one last line (interrupted) and no running bar left")
	}
	if last := lineBefore(pane, "enqueued: "); !strings.HasPrefix(last, "interrupted: ") || !strings.HasSuffix(strings.TrimSpace(last), "not enqueued") {
		t.Errorf("line above the summary = %q, want the interrupted state", last)
	}
	if !strings.Contains(pane, "enqueue: interrupted after ") || !strings.Contains(pane, "re-run the same file to add the rest") {
		t.Errorf("no message saying interrupted and to re-run the file")
	}
}

// TestSignalEndsFileRun stops a run with a real signal while Redis holds its writes, with output to
// pipes as under a supervisor or in CI: it says interrupted and to re-run, never that Redis
// failed, and exits 128 plus the signal (130 for SIGINT). The plain progress lines it wrote carry
// the rows of the total, the percent and an ETA.
func TestSignalEndsFileRun(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the enqueue binary")
	}
	const rows = 50_000
	bin := testutil.GoBuild(t, enqueuePkg)
	path := testutil.WriteRows(t, rows)
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGINT, 130}, {syscall.SIGTERM, 143}} {
		t.Run(tc.sig.String(), func(t *testing.T) {
			t.Parallel()
			srv := testutil.StartRedisServer(t, false)
			cmd := exec.Command(bin, "file", path)
			cmd.Env = append(os.Environ(), "REDIS_URL="+srv.URL())
			var stdout, stderr testutil.SyncBuffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			testutil.WaitFor(t, 30*time.Second, "the batch line", func() bool { return strings.HasPrefix(stdout.String(), "batch ") })
			pauseWrites(t, srv, 3*time.Second)
			testutil.WaitFor(t, 30*time.Second, "a progress line", func() bool { return strings.Contains(stderr.String(), "progress: ") })
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tc.code {
				t.Errorf("exit: %v, want %d", err, tc.code)
			}
			out, errOut := stdout.String(), stderr.String()
			t.Logf("stdout:\n%sstderr:\n%s", out, errOut)
			if strings.Contains(out+errOut, "Redis failed") {
				t.Error("an interrupt is reported as a Redis failure")
			}
			if !regexp.MustCompile(`(?m)^not enqueued \(interrupted\): [1-9]\d*$`).MatchString(out) {
				t.Error(`summary has no "not enqueued (interrupted): N" line`)
			}
			if !strings.Contains(errOut, "enqueue: interrupted after ") || !strings.Contains(errOut, "re-run the same file to add the rest") {
				t.Error("stderr does not say interrupted and to re-run the file")
			}
			m := progressN.FindStringSubmatch(errOut)
			if m == nil {
				t.Fatal("no progress line with rows of the total, percent and ETA")
			}
			if read, total, pct := atoi(t, m[1]), atoi(t, m[2]), atoi(t, m[3]); total != rows || pct != min(read*100/total, 99) {
				t.Errorf("progress line %q: want %d%% of %d rows", m[0], read*100/total, rows)
			}
		})
	}
}

// TestFileThatCannotStart runs the binary on inputs that cannot be used: it prints one line on
// stderr naming the problem, no batch and no summary, and exits 2.
func TestFileThatCannotStart(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the enqueue binary")
	}
	bin := testutil.GoBuild(t, enqueuePkg)
	db := testutil.Redis(t)
	dir := t.TempDir()
	badCSV := testutil.WriteFile(t, "users.csv", "userId,integrationId,colour\nu-1,"+testutil.IntegrationID+",red\n")
	txt := testutil.WriteFile(t, "users.txt", testutil.JSONL(t, request("u-1")))
	dirInput := filepath.Join(dir, "dir.jsonl")
	if err := os.Mkdir(dirInput, 0o755); err != nil {
		t.Fatal(err)
	}
	locked := testutil.WriteFile(t, "locked.jsonl", testutil.JSONL(t, request("u-1")))
	if err := os.Chmod(locked, 0); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string // in the line
	}{
		{"missing file", []string{"nope.jsonl"}, "nope.jsonl: no such file or directory"},
		{"bad CSV header", []string{badCSV}, "colour"},
		{"a directory", []string{dirInput}, "is a directory"},
		{"unknown extension", []string{txt}, "pass --format jsonl or --format csv"},
		{"unknown format", []string{"--format", "xml", txt}, `unknown format "xml"`},
	}
	if os.Geteuid() != 0 { // root reads it anyway
		tests = append(tests, struct {
			name string
			args []string
			want string
		}{"unreadable file", []string{locked}, "permission denied"})
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(bin, append([]string{"file"}, tc.args...)...)
			cmd.Env = append(os.Environ(), "REDIS_URL="+db.URL())
			cmd.Dir = dir
			var stdout, stderr strings.Builder
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Errorf("exit: %v, want 2", err)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout = %q, want nothing (no batch, no summary)", stdout.String())
			}
			if e := stderr.String(); strings.Count(e, "\n") != 1 || !strings.HasPrefix(e, "enqueue: ") || !strings.Contains(e, tc.want) {
				t.Errorf("stderr = %q, want one line naming %q", e, tc.want)
			}
		})
	}
	t.Cleanup(func() {
		if n := testutil.Pending(t, db.Client, queue); n != 0 {
			t.Errorf("runs that never started enqueued %d tasks", n)
		}
	})
}

// TestFormatFlagOnAPipe pipes a CSV file into the binary with --format csv, as `cat users.csv |
// enqueue file --format csv -`.
func TestFormatFlagOnAPipe(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the enqueue binary")
	}
	bin := testutil.GoBuild(t, enqueuePkg)
	db := testutil.Redis(t)
	csv := testutil.WriteFile(t, "users.csv", "userId,integrationId\nu-1,"+testutil.IntegrationID+"\nu-2,"+testutil.IntegrationID+"\n")
	cmd := exec.Command("sh", "-c", `cat "$1" | REDIS_URL="$3" "$2" file --format csv -`, "sh", csv, bin, db.URL())
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "enqueued: 2\n") || !strings.Contains(string(out), "rejected: 0\n") {
		t.Fatalf("cat users.csv | enqueue file --format csv -: %v\n%s", err, out)
	}
	if n := testutil.Pending(t, db.Client, queue); n != 2 {
		t.Errorf("%d tasks pending, want 2", n)
	}
	// Without --format, stdin is JSONL: every CSV line is rejected.
	cmd = exec.Command("sh", "-c", `cat "$1" | REDIS_URL="$3" "$2" file -`, "sh", csv, bin, db.URL())
	cmd.Dir = t.TempDir()
	out, _ = cmd.CombinedOutput()
	if !strings.Contains(string(out), "rejected: 3\n") {
		t.Errorf("CSV on stdin without --format:\n%s", out)
	}
}

// TestFileRerunReplacesRejects runs a file with bad rows, then the same file fixed: the first run's
// rejects file is overwritten by a run with rejects, and removed by a clean one, which says so.
func TestFileRerunReplacesRejects(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	path := filepath.Join(t.TempDir(), "users.jsonl")
	rejects := path + ".rejects.jsonl"
	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	good := testutil.JSONL(t, request("u-1"), request("u-2"))
	write(good + "{bad\n{worse\n")
	r := runDB(t, db, "", "file", "--quiet", path)
	if m := counts(t, r, 2, 0, 0, 2); m["rejects"] != rejects || len(readRejects(t, rejects)) != 2 {
		t.Fatalf("first run: want 2 rejects in %s:\n%s", rejects, r)
	}
	write(good + "{bad\n")
	r = runDB(t, db, "", "file", "--quiet", path)
	if got := readRejects(t, rejects); len(got) != 1 || got[0].Line != 3 || strings.Contains(r.stdout, "stale") {
		t.Errorf("second run: rejects file holds %+v, want its one reject (line 3), overwritten:\n%s", got, r)
	}
	write(good)
	r = runDB(t, db, "", "file", "--quiet", path)
	m := counts(t, r, 0, 2, 0, 0)
	if _, err := os.Stat(rejects); !os.IsNotExist(err) {
		t.Errorf("clean re-run left the rejects file (%v):\n%s", err, r)
	}
	if want := rejects + " (an earlier run's; this run had no rejects)"; m["removed stale rejects file"] != want {
		t.Errorf("summary does not say the stale rejects file was removed:\n%s", r)
	}
	if _, ok := m["rejects"]; ok || r.code != 0 {
		t.Errorf("clean re-run: want exit 0 and no rejects line:\n%s", r)
	}
	// Nothing to say when there was nothing to remove.
	r = runDB(t, db, "", "file", "--quiet", path)
	if strings.Contains(r.stdout, "stale") {
		t.Errorf("a run with no stale rejects file mentions one:\n%s", r)
	}
}

// TestSIGINTWithStdinOpen interrupts a run reading a pipe whose writer keeps it open (`tail -f |
// enqueue file -`): the run must not wait for the pipe to close.
func TestSIGINTWithStdinOpen(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the enqueue binary")
	}
	bin := testutil.GoBuild(t, enqueuePkg)
	db := testutil.Redis(t)
	cmd := exec.Command(bin, "file", "-")
	cmd.Env = append(os.Environ(), "REDIS_URL="+db.URL())
	cmd.Dir = t.TempDir()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	var stdout, stderr testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reqs := make([]versori.ActivationRequest, 100)
	for i := range reqs {
		reqs[i] = request(fmt.Sprintf("u-%d", i))
	}
	if _, err := io.WriteString(stdin, testutil.JSONL(t, reqs...)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 30*time.Second, "a progress line", func() bool { return strings.Contains(stderr.String(), "progress: 100 rows") })
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err = <-exited:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("still running 20 s after SIGINT, waiting for stdin to close\nstdout:\n%sstderr:\n%s", stdout.String(), stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Errorf("exit: %v, want 130\nstdout:\n%sstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stderr.String(), "enqueue: interrupted after 100 rows") {
		t.Errorf("stderr does not say interrupted after 100 rows:\n%s", stderr.String())
	}
}
