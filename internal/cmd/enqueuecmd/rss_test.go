package enqueuecmd_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/versori/activator/internal/peakrss"
	"github.com/versori/activator/internal/testutil"
)

// TestEnqueueFileMemoryIsFlat enqueues a 100,000-row file with the real enqueue binary and reads its
// peak RSS from the kernel: the file is streamed, so memory must not grow with it.
func TestEnqueueFileMemoryIsFlat(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the enqueue binary and enqueues 100,000 rows")
	}
	const rows = 100_000
	const limitKB = 64 * 1024 // about twice what it uses (35 MiB at 256 enqueues in flight)
	bin := testutil.GoBuild(t, "github.com/versori/activator/cmd/enqueue")
	path := testutil.WriteRows(t, rows)

	db := testutil.Redis(t)
	cmd := exec.Command(bin, "file", "--quiet", path)
	cmd.Env = append(os.Environ(), "REDIS_URL="+db.URL())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The peak comes from the child's VmHWM while it runs: ru_maxrss after exit carried this test
	// process's own peak (107 MiB under -race in CI) into the child's.
	var peak peakrss.Peak
	exited := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		peak.Sample(cmd.Process.Pid, 10*time.Millisecond, exited)
	}()
	err := cmd.Wait()
	close(exited)
	<-sampled
	if err != nil {
		t.Fatalf("enqueue file: %v\n%s", err, out.Bytes())
	}
	if !strings.Contains(out.String(), fmt.Sprintf("enqueued: %d", rows)) {
		t.Fatalf("enqueue file output:\n%s", out.Bytes())
	}
	kb := peak.KB()
	t.Logf("enqueued %d rows; peak RSS %d KiB\n%s", rows, kb, out.Bytes())
	if kb == 0 {
		t.Fatal("the enqueue process's peak RSS could not be read from /proc")
	}
	if kb > limitKB {
		t.Errorf("peak RSS %d KiB for %d rows, want at most %d KiB", kb, rows, limitKB)
	}
}
