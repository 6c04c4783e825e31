package demo_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/versori/activator/internal/cmd/demo"
	"github.com/versori/activator/tasks"
)

// TestDemo runs what `make demo` runs, so that the README's first command keeps working: the
// sample's activations, then onboarding end users the API does not know, then offboarding.
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
	// Onboarding: 60 rows for 50 end users the API did not know, every one created once and every
	// row activated. Offboarding: the sample's last 100 rows, half active, half dead-lettered.
	on, off := res.Onboard, res.Offboard
	if on.Queued != 60 || on.Activated+on.AlreadyActive != 60 || len(on.DeadLetters) != 0 || on.CreatedUser < 50 ||
		res.NewUsers != 50 || res.UsersCreated != 50 || res.FinalStats.UsersCreated != 50 || res.FinalStats.UsersCreatedTwice != 0 {
		t.Errorf("onboarding: batch %+v, %d new users, %d created; stand-in %+v\n%s", on, res.NewUsers, res.UsersCreated, res.FinalStats, out.String())
	}
	if off.Queued != 100 || off.Deactivated != 50 || off.AlreadyInactive != 50 || len(off.DeadLetters) != 0 || res.FinalActivations != 960 {
		t.Errorf("offboarding: batch %+v, %d activations after, want 960\n%s", off, res.FinalActivations, out.String())
	}
	for _, want := range []string{
		"(faults: 3% 503, 0.5% 429, 2% dropped after commit, 1% 504 then committed later)",
		"activated: 950 (duplicates: 0)", "dead-lettered: 50 [missing_connections 50]", "elapsed:",
		"\n  activate 0: ", " (no answer: dropped after commit)\n  activate 200: ", "\n  list_activations 200: ",
		"the dead letters were in the demo's in-process Redis, gone with it",
		"onboarding: enqueued 60 requests for 50 end users the API does not know yet, from onboard.jsonl (0 rejected)\n",
		"onboarded: 60 activated; end users created: 50 of 50 (each once: 0 created twice); jobs that created their end user: ",
		"offboarding: enqueued 100 deactivations from offboard.jsonl, the sample's last 100 rows as they are (0 rejected)\n",
		"offboarded: 50 deactivated, 50 already inactive (their activation was dead-lettered); activations now: 960\n",
		"API calls for onboarding and offboarding: ", "\n  create_end_user 201: ", "\n  delete_activation 204: ",
		"\n  get_end_user 404: ",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "map[") {
		t.Errorf("demo output shows a Go map:\n%s", out.String())
	}
}
