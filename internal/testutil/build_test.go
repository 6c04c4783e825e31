package testutil_test

import (
	"debug/buildinfo"
	"runtime"
	"testing"

	"github.com/versori/activator/internal/testutil"
)

// TestGoBuildUsesTheTestsToolchain: the binaries tests run are built by the Go release the tests
// themselves were built with (go.mod's, through GOTOOLCHAIN), not by whatever older go is first on
// PATH, whose standard library may have the vulnerabilities the go line moved away from.
func TestGoBuildUsesTheTestsToolchain(t *testing.T) {
	bin := testutil.GoBuild(t, "github.com/versori/activator/cmd/versori-standin")
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if info.GoVersion != runtime.Version() {
		t.Errorf("GoBuild built %s with %s, the test runs on %s", bin, info.GoVersion, runtime.Version())
	}
}
