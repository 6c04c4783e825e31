package demo_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/versori/activator/internal/cmd/demo"
	"github.com/versori/activator/tasks"
)

// TestDemo runs what `make demo` runs, so that the README's first command keeps working.
func TestDemo(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	res, err := demo.Run(context.Background(), &out, demo.Options{Faults: demo.DefaultFaults()})
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if res.Enqueued != 1000 || res.Activated != 950 || res.Duplicates != 0 ||
		res.DeadLetters[tasks.ReasonMissingConnections] != 50 {
		t.Errorf("demo result = %+v\n%s", res, out.String())
	}
	for _, want := range []string{
		"(faults: 3% 503, 0.5% 429, 2% dropped after commit, 1% 504 then committed later)",
		"activated: 950 (duplicates: 0)", "dead-lettered: 50 [missing_connections 50]", "elapsed:",
		"\n  activate 0: ", " (no answer: dropped after commit)\n  activate 200: ", "\n  list_activations 200: ",
		"the dead letters were in the demo's in-process Redis, gone with it",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "map[") {
		t.Errorf("demo output shows a Go map:\n%s", out.String())
	}
}
