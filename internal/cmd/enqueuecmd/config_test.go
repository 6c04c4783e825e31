package enqueuecmd_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/versori/activator/internal/cmd/enqueuecmd"
	"github.com/versori/activator/internal/cmd/envflag"
)

// TestConfigurationDoc checks docs/configuration.md's enqueue tables against the flags: every
// variable and flag of the subcommands with settings of their own, with its default, and nothing
// else.
func TestConfigurationDoc(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	for sub, vars := range enqueuecmd.Vars() {
		section := "enqueue"
		if sub != "" {
			section += " " + sub
		}
		for _, p := range envflag.CheckDoc(string(doc), section, vars) {
			t.Error("docs/configuration.md: " + p)
		}
	}
}
