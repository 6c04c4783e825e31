// Package queuestate pauses and resumes a queue idempotently. asynq refuses to pause a paused queue or
// resume a running one; for an operator, and for several workers reacting to the same refused key at
// once, both mean "done".
package queuestate

import (
	"errors"
	"strings"

	"github.com/hibiken/asynq"
)

// Pause pauses queue, succeeding if it is already paused.
func Pause(insp *asynq.Inspector, queue string) error {
	err := insp.PauseQueue(queue)
	if err != nil && strings.Contains(err.Error(), "already paused") {
		return nil
	}
	return err
}

// Resume unpauses queue, succeeding if it is not paused or does not exist yet.
func Resume(insp *asynq.Inspector, queue string) error {
	err := insp.UnpauseQueue(queue)
	if err != nil && (strings.Contains(err.Error(), "not paused") || errors.Is(err, asynq.ErrQueueNotFound)) {
		return nil
	}
	return err
}

// Paused reports whether queue is paused; a queue that does not exist yet is not.
func Paused(insp *asynq.Inspector, queue string) (bool, error) {
	qi, err := insp.GetQueueInfo(queue)
	if errors.Is(err, asynq.ErrQueueNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return qi.Paused, nil
}
