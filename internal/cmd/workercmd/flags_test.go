package workercmd

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/versori/activator/internal/testutil"
)

// TestBinaryFlags runs the built worker as a person does: -version and -h write to stdout (so that
// `worker --version | cat` shows it, as `enqueue --version | cat` does) and exit 0; a bad flag is one
// line on stderr pointing at -h, exit 2, not the flag package's error followed by the whole usage.
func TestBinaryFlags(t *testing.T) {
	t.Parallel()
	bin := testutil.GoBuild(t, "github.com/versori/activator/cmd/worker")
	run := func(args ...string) (code int, stdout, stderr string) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		// Whatever the environment: a bad value there must not hide -version.
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "WORKER_CONCURRENCY=lots"}
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			return ee.ExitCode(), out.String(), errOut.String()
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, out.String(), errOut.String()
	}
	for _, arg := range []string{"-version", "--version"} {
		if code, out, errOut := run(arg); code != 0 || !strings.HasPrefix(out, "worker github.com/versori/activator ") || strings.Count(out, "\n") != 1 || errOut != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 0 and one line on stdout naming the module, nothing on stderr", arg, code, out, errOut)
		}
	}
	for _, arg := range []string{"-h", "--help"} {
		if code, out, errOut := run(arg); code != 0 || !strings.HasPrefix(out, "usage: worker [flags]") || !strings.Contains(out, "  -version\n") || errOut != "" {
			t.Errorf("%s: exit %d, stderr %q; want 0, the usage on stdout and nothing on stderr; stdout:\n%s", arg, code, errOut, out)
		}
	}
	for arg, want := range map[string]string{
		"-bogus":            "worker: flag provided but not defined: -bogus; see worker -h\n",
		"-concurrency=many": `worker: invalid value "many" for flag -concurrency: parse error; see worker -h` + "\n",
	} {
		if code, out, errOut := run(arg); code != 2 || errOut != want || out != "" {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 2, nothing on stdout and %q", arg, code, out, errOut, want)
		}
	}
}
