package worker

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// jobEndRetry is a go-redis hook that carries asynq's job-ending scripts (done, complete, retry,
// archive, requeue) through a Redis outage. asynq v0.26.0 runs each of them once, when the handler
// returns; its "will retry syncing" fallback reuses a context it has already cancelled and never
// succeeds. Without the hook, a job that finished while Redis did not answer would stay active
// until its lease expired and asynq's recoverer retried it, one to two minutes later (a look-up
// would then find the activation, so nothing is done twice, but the job is late and counted twice).
// The hook retries such a script every interval until Redis answers, asynq's context (bounded by
// the task's lease) ends, or stop is done (the worker's shutdown grace is over).
type jobEndRetry struct {
	stop  context.Context
	every time.Duration
	log   *slog.Logger
}

func (h jobEndRetry) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h jobEndRetry) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h jobEndRetry) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if !unanswered(err) || !isJobEnd(cmd) {
			return err
		}
		h.log.Warn("Redis did not answer while a job was finishing; retrying until its lease ends", "error", err.Error())
		for tries := 1; unanswered(err); tries++ {
			t := time.NewTimer(h.every)
			select {
			case <-ctx.Done():
				t.Stop()
				return err
			case <-h.stop.Done():
				t.Stop()
				return err
			case <-t.C:
			}
			if err = next(ctx, cmd); err == nil {
				h.log.Info("Redis answered: job finished", "tries", tries+1)
			}
		}
		return err
	}
}

// unanswered reports whether err says Redis was not reached or did not reply, as opposed to Redis
// replying with an error or the caller giving up.
func unanswered(err error) bool {
	var reply redis.Error
	switch {
	case err == nil, errors.As(err, &reply), errors.Is(err, redis.ErrClosed),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return false
	}
	return true
}

// isJobEnd reports whether cmd runs one of asynq's scripts that end a task's run: only they touch a
// queue's active list, its lease set and a task hash together (dequeue has no task key; lease
// extension is not a script). Retrying one that ran but whose reply was lost is harmless: it finds
// the task gone from the active list and replies NOT FOUND.
func isJobEnd(cmd redis.Cmder) bool {
	if name := cmd.Name(); name != "evalsha" && name != "eval" {
		return false
	}
	args := cmd.Args()
	if len(args) < 3 {
		return false
	}
	n, ok := args[2].(int)
	if !ok || len(args) < 3+n {
		return false
	}
	var active, lease, task bool
	for _, a := range args[3 : 3+n] {
		k, _ := a.(string)
		if !strings.HasPrefix(k, "asynq:{") {
			continue
		}
		active = active || strings.HasSuffix(k, "}:active")
		lease = lease || strings.HasSuffix(k, "}:lease")
		task = task || strings.Contains(k, "}:t:")
	}
	return active && lease && task
}
