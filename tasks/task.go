// Package tasks defines the activation job: its payload, its task id, the retry policy that maps each
// outcome class to what happens next, and the asynq handler that runs it.
package tasks

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/activator/versori"
)

// TypeActivate is the asynq task type of an activation job.
const TypeActivate = "versori:activate"

// Payload is an activation job's payload: one activation request, plus what the worker must know
// about the job's history that asynq does not tell it.
type Payload struct {
	Request versori.ActivationRequest `json:"request"`
	// Reconcile makes the first attempt look up the pair's activations before activating. Replays of
	// dead letters set it, since an earlier attempt's outcome may be unknown.
	Reconcile bool `json:"reconcile,omitempty"`
	// Batch is the id of the enqueue run the job came from, if any.
	Batch string `json:"batch,omitempty"`
	// EnqueuedAt is when the job was first queued; a job older than the worker's maximum age is
	// dead-lettered instead of retried.
	EnqueuedAt time.Time `json:"enqueuedAt,omitzero"`
}

// TaskID is the stable asynq task id of a pair. Enqueueing a second task for a pair fails with
// asynq.ErrTaskIDConflict for as long as the first task's record exists (queued, running, retrying,
// archived, or completed and retained), which is what makes re-running a file safe. The integration
// id is a ULID (no colon), so the id is unambiguous whatever the user id holds.
func TaskID(p versori.Pair) string {
	return "act:" + p.IntegrationID + ":" + p.UserID
}

// NewTask validates p's request and returns its task, with the pair's task id and opts.
func NewTask(p Payload, opts ...asynq.Option) (*asynq.Task, error) {
	if err := p.Request.Validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("tasks: encoding payload: %w", err)
	}
	opts = append([]asynq.Option{asynq.TaskID(TaskID(p.Request.Pair()))}, opts...)
	return asynq.NewTask(TypeActivate, b, opts...), nil
}

// DecodePayload decodes and validates a task payload.
func DecodePayload(b []byte) (Payload, error) {
	var p Payload
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("tasks: payload is not JSON: %w", err)
	}
	if err := p.Request.Validate(); err != nil {
		return p, fmt.Errorf("tasks: payload request: %w", err)
	}
	return p, nil
}
