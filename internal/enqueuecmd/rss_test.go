package enqueuecmd_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/versori/activator/internal/redistest"
)

// TestEnqueueFileMemoryIsFlat enqueues a 100,000-row file with the real enqueue binary and reads its
// peak RSS from the kernel: the file is streamed, so memory must not grow with it.
func TestEnqueueFileMemoryIsFlat(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the enqueue binary and enqueues 100,000 rows")
	}
	const rows = 100_000
	const limitKB = 100 * 1024
	dir := t.TempDir()
	bin := filepath.Join(dir, "enqueue")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/versori/activator/cmd/enqueue").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	path := filepath.Join(dir, "rows.jsonl")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := range rows {
		fmt.Fprintf(w, `{"userId":"user-%07d","integrationId":"01JDCRM0000000000000000000","connections":[{"templateId":"01JDCRMTP10000000000000000","connectionId":"01JDC0NN000000000000000000"}],"dynamicVariables":{"region":"eu"}}`+"\n", i)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	db := redistest.New(t)
	cmd := exec.Command(bin, "file", "--quiet", "--redis-url", db.URL(), path)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("enqueue file: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("enqueued: %d", rows)) {
		t.Fatalf("enqueue file output:\n%s", out)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		t.Fatal("no rusage for the enqueue process")
	}
	t.Logf("enqueued %d rows; peak RSS %d KiB\n%s", rows, ru.Maxrss, out)
	if ru.Maxrss > limitKB {
		t.Errorf("peak RSS %d KiB for %d rows, want at most %d KiB", ru.Maxrss, rows, limitKB)
	}
}
