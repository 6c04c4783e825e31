// Package queuestate pauses and resumes a queue idempotently, remembering why it was paused. asynq
// refuses to pause a paused queue or resume a running one; for an operator, and for several workers
// reacting to the same refused key at once, both mean "done". The reason lets a worker's probe
// resume a queue it paused for a refused API key, and never one an operator paused.
package queuestate

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/rediskeys"
)

// Reasons a queue is paused.
const (
	ReasonUnauthorized = "unauthorized" // a worker paused it: the API refused the API key or the signing key
	ReasonOperator     = "operator"     // someone ran `enqueue pause`
)

// Controller pauses and resumes one queue.
type Controller struct {
	insp      *asynq.Inspector
	rdb       redis.UniversalClient
	queue     string
	reasonKey string
}

// New returns the Controller of queue.
func New(rdb redis.UniversalClient, queue string) *Controller {
	return &Controller{insp: asynq.NewInspectorFromRedisClient(rdb), rdb: rdb, queue: queue,
		reasonKey: rediskeys.PausedReason(queue)}
}

// Pause pauses the queue for reason, succeeding if it is already paused. An operator's reason is
// never replaced by another: a call refused after `enqueue pause` (say, while the key is rotated)
// must not let a worker's probe resume the queue.
func (c *Controller) Pause(ctx context.Context, reason string) error {
	var err error
	if reason == ReasonOperator {
		err = c.rdb.Set(ctx, c.reasonKey, reason, 0).Err()
	} else {
		err = c.rdb.SetNX(ctx, c.reasonKey, reason, 0).Err()
	}
	if err != nil {
		return fmt.Errorf("pausing %s: %w", c.queue, err)
	}
	err = c.insp.PauseQueue(c.queue)
	if err != nil && strings.Contains(err.Error(), "already paused") {
		return nil
	}
	return err
}

// Resume unpauses the queue, succeeding if it is not paused or does not exist yet.
func (c *Controller) Resume(ctx context.Context) error {
	err := c.insp.UnpauseQueue(c.queue)
	if err != nil && !strings.Contains(err.Error(), "not paused") && !errors.Is(err, asynq.ErrQueueNotFound) {
		return err
	}
	if err := c.rdb.Del(ctx, c.reasonKey).Err(); err != nil {
		return fmt.Errorf("resuming %s: %w", c.queue, err)
	}
	return nil
}

// Paused reports whether the queue is paused, and why ("" when paused by other means).
func (c *Controller) Paused(ctx context.Context) (bool, string, error) {
	qi, err := c.insp.GetQueueInfo(c.queue)
	if errors.Is(err, asynq.ErrQueueNotFound) {
		return false, "", nil
	}
	if err != nil {
		return false, "", err
	}
	if !qi.Paused {
		return false, "", nil
	}
	reason, err := c.rdb.Get(ctx, c.reasonKey).Result()
	if errors.Is(err, redis.Nil) {
		return true, "", nil
	}
	return true, reason, err
}
