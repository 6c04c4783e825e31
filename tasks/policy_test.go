package tasks_test

import (
	"fmt"
	"testing"

	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

func TestRuleFor(t *testing.T) {
	t.Parallel()
	tests := []struct {
		class       versori.Class
		perUserAuth bool
		want        tasks.Rule
	}{
		{versori.ClassOK, false, tasks.Rule{Action: tasks.ActionDone}},
		{versori.ClassOK, true, tasks.Rule{Action: tasks.ActionDone}},
		{versori.ClassTransient, false, tasks.Rule{Action: tasks.ActionRetry, Reason: tasks.ReasonRetriesExhausted}},
		{versori.ClassTransient, true, tasks.Rule{Action: tasks.ActionRetry, Reason: tasks.ReasonRetriesExhausted}},
		{versori.ClassRateLimited, false, tasks.Rule{Action: tasks.ActionSnooze, Reason: tasks.ReasonRetriesExhausted}},
		{versori.ClassRateLimited, true, tasks.Rule{Action: tasks.ActionSnooze, Reason: tasks.ReasonRetriesExhausted}},
		{versori.ClassMissingConnections, false, tasks.Rule{Action: tasks.ActionDeadLetter, Reason: tasks.ReasonMissingConnections}},
		{versori.ClassMissingConnections, true, tasks.Rule{Action: tasks.ActionDeadLetter, Reason: tasks.ReasonMissingConnections}},
		{versori.ClassInvalidRequest, false, tasks.Rule{Action: tasks.ActionDeadLetter, Reason: tasks.ReasonInvalidRequest}},
		{versori.ClassInvalidRequest, true, tasks.Rule{Action: tasks.ActionDeadLetter, Reason: tasks.ReasonInvalidRequest}},
		// At the retry limit a paused job is dead-lettered with the pause's reason.
		{versori.ClassUnauthorized, false, tasks.Rule{Action: tasks.ActionPause, Reason: tasks.ReasonUnauthorized}},
		{tasks.ClassCircuitOpen, false, tasks.Rule{Action: tasks.ActionSnooze, Reason: tasks.ReasonRetriesExhausted}},
		{versori.ClassUnauthorized, true, tasks.Rule{Action: tasks.ActionDeadLetter, Reason: tasks.ReasonUnauthorized}},
		{versori.ClassNotFound, false, tasks.Rule{Action: tasks.ActionDeadLetter, Reason: tasks.ReasonNotFound}},
		{versori.ClassNotFound, true, tasks.Rule{Action: tasks.ActionDeadLetter, Reason: tasks.ReasonNotFound}},
		// A 409 whose look-up found the pair active is done before the rule applies; else it is
		// retried, after the settle time.
		{versori.ClassConflict, false, tasks.Rule{Action: tasks.ActionRetry, Reason: tasks.ReasonPermanentError}},
		{versori.ClassConflict, true, tasks.Rule{Action: tasks.ActionRetry, Reason: tasks.ReasonPermanentError}},
		{versori.ClassPermanent, false, tasks.Rule{Action: tasks.ActionDeadLetter, Reason: tasks.ReasonPermanentError}},
		{versori.ClassPermanent, true, tasks.Rule{Action: tasks.ActionDeadLetter, Reason: tasks.ReasonPermanentError}},
		{versori.Class("something_new"), false, tasks.Rule{Action: tasks.ActionDeadLetter, Reason: tasks.ReasonPermanentError}},
		{versori.Class(""), true, tasks.Rule{Action: tasks.ActionDeadLetter, Reason: tasks.ReasonPermanentError}},
	}
	covered := make(map[versori.Class]int)
	for _, tt := range tests {
		covered[tt.class]++
		t.Run(fmt.Sprintf("%s/perUser=%v", tt.class, tt.perUserAuth), func(t *testing.T) {
			t.Parallel()
			got := tasks.RuleFor(tt.class, tt.perUserAuth)
			if got != tt.want {
				t.Errorf("RuleFor(%q, %v) = %+v, want %+v", tt.class, tt.perUserAuth, got, tt.want)
			}
			// A rule that dead-letters, or retries until it must, names a valid reason.
			if got.Action == tasks.ActionDeadLetter || got.Action == tasks.ActionRetry {
				if _, err := tasks.ParseReason(string(got.Reason)); err != nil {
					t.Errorf("rule %+v: %v", got, err)
				}
			}
		})
	}
	for _, c := range versori.Classes() {
		if covered[c] != 2 {
			t.Errorf("class %q has %d rows, want one per perUserAuth value", c, covered[c])
		}
	}
}
