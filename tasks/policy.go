package tasks

import (
	"github.com/versori/activator/versori"
)

// Action is what a job does after an attempt.
type Action string

// The actions.
const (
	ActionDone       Action = "done"        // the pair is active
	ActionRetry      Action = "retry"       // retry with backoff; counts as an attempt
	ActionSnooze     Action = "snooze"      // retry after the wait the API asked for; not an attempt
	ActionDeadLetter Action = "dead_letter" // store for a person; never retried
	ActionPause      Action = "pause"       // pause the queue: every job would fail alike (the key is refused)
)

// Rule is the policy for one outcome class.
type Rule struct {
	Action Action
	Reason Reason // for ActionDeadLetter, and for ActionRetry once attempts run out
}

// ClassCircuitOpen is the one class that does not come from the API: the circuit breaker was open, so
// no call was made.
const ClassCircuitOpen versori.Class = "circuit_open"

// RuleFor is the policy table: what a job does after an attempt of the given class. perUserAuth is
// true when calls use per-end-user JWTs, so that a refusal concerns one user rather than the key.
//
// With an API key, a refusal pauses the queue only when a probe call confirms that the key itself is
// refused; when the probe is accepted, the refusal concerned the request, and the job is
// dead-lettered with the rule's reason. A conflict (409) is looked up within the attempt: a pair
// found active is done, so the rule applies only when none was found; then it is retried after the
// settle time, since a POST still committing may be what the API conflicts with.
func RuleFor(c versori.Class, perUserAuth bool) Rule {
	switch c {
	case versori.ClassOK:
		return Rule{Action: ActionDone}
	case versori.ClassTransient:
		return Rule{Action: ActionRetry, Reason: ReasonRetriesExhausted}
	case versori.ClassRateLimited, ClassCircuitOpen:
		return Rule{Action: ActionSnooze, Reason: ReasonRetriesExhausted}
	case versori.ClassMissingConnections:
		return Rule{Action: ActionDeadLetter, Reason: ReasonMissingConnections}
	case versori.ClassInvalidRequest:
		return Rule{Action: ActionDeadLetter, Reason: ReasonInvalidRequest}
	case versori.ClassNotFound:
		return Rule{Action: ActionDeadLetter, Reason: ReasonNotFound}
	case versori.ClassConflict:
		return Rule{Action: ActionRetry, Reason: ReasonPermanentError}
	case versori.ClassUnauthorized:
		if perUserAuth {
			return Rule{Action: ActionDeadLetter, Reason: ReasonUnauthorized}
		}
		return Rule{Action: ActionPause, Reason: ReasonUnauthorized}
	default:
		return Rule{Action: ActionDeadLetter, Reason: ReasonPermanentError}
	}
}
