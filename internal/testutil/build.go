package testutil

import (
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sync"
	"testing"
)

// built holds, per package path, the binary GoBuild built in this test process.
var built sync.Map // package path -> *binary

type binary struct {
	once sync.Once
	path string
	err  error
}

// GoBuild builds the main package pkg (say "github.com/versori/activator/cmd/worker") once per test
// process and returns the binary's path, so that tests can run, signal and kill a real process.
// The binary stays in a temporary directory for the life of the process: tests of one package share it.
func GoBuild(t testing.TB, pkg string) string {
	t.Helper()
	v, _ := built.LoadOrStore(pkg, &binary{})
	b := v.(*binary)
	b.once.Do(func() {
		dir, err := os.MkdirTemp("", "activator-"+path.Base(pkg)+"-bin-")
		if err != nil {
			b.err = err
			return
		}
		b.path = filepath.Join(dir, path.Base(pkg))
		if out, err := exec.Command("go", "build", "-o", b.path, pkg).CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
		}
	})
	if b.err != nil {
		t.Fatal(b.err)
	}
	return b.path
}
