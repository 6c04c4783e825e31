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

// TestBinaryFlags runs the built worker as a person does: -version and -h exit 0; a bad flag is
// one line pointing at -h, exit 2, not the flag package's error followed by the whole usage.
func TestBinaryFlags(t *testing.T) {
	t.Parallel()
	bin := testutil.GoBuild(t, "github.com/versori/activator/cmd/worker")
	run := func(args ...string) (int, string) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		// Whatever the environment: a bad value there must not hide -version.
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "WORKER_CONCURRENCY=lots"}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			return ee.ExitCode(), out.String()
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, out.String()
	}
	for _, arg := range []string{"-version", "--version"} {
		if code, out := run(arg); code != 0 || !strings.HasPrefix(out, "worker github.com/versori/activator ") || strings.Count(out, "\n") != 1 {
			t.Errorf("%s: exit %d, want 0 and one line naming the module:\n%s", arg, code, out)
		}
	}
	if code, out := run("-h"); code != 0 || !strings.HasPrefix(out, "usage: worker [flags]") || !strings.Contains(out, "  -version\n") {
		t.Errorf("-h: exit %d, want 0 and the usage:\n%s", code, out)
	}
	for arg, want := range map[string]string{
		"-bogus":            "worker: flag provided but not defined: -bogus; see worker -h\n",
		"-concurrency=many": `worker: invalid value "many" for flag -concurrency: parse error; see worker -h` + "\n",
	} {
		if code, out := run(arg); code != 2 || out != want {
			t.Errorf("%s: exit %d, output %q; want 2 and %q", arg, code, out, want)
		}
	}
}
