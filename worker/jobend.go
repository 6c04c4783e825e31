package worker

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/rediskeys"
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
		if !unanswered(err) {
			return err
		}
		end, until := jobEnd(cmd)
		if !end {
			return err
		}
		h.log.Warn("Redis did not answer while a job was finishing; retrying until its lease ends", "error", err.Error())
		for tries := 1; unanswered(err); tries++ {
			if !until.IsZero() && time.Now().Add(h.every).After(until) {
				return err
			}
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

// jobEnd reports whether cmd runs one of asynq's scripts that end a task's run, and until when it
// may be sent again (zero: for as long as the task's lease holds). Only those scripts touch a
// queue's active list, its lease set and a task hash together (dequeue has no task key; lease
// extension is not a script).
//
// Sending again a script that ran but whose reply was lost is harmless only while the task cannot
// have been fetched again: then it finds the task gone from the active list and replies NOT FOUND.
// A task done, completed or archived is not fetched again, and one whose script never ran stays
// active until its lease has been expired 30 s, after the hook has given up. But a retry makes the
// task runnable at its processAt, and a requeue at once: sent again after that, it would move another
// worker's run back with this run's stale message (retry count and all), whose next attempt could
// then POST without looking. So a retry is sent again only until a second before its processAt, and
// a requeue not at all.
func jobEnd(cmd redis.Cmder) (end bool, until time.Time) {
	if name := cmd.Name(); name != "evalsha" && name != "eval" {
		return false, time.Time{}
	}
	args := cmd.Args()
	if len(args) < 3 {
		return false, time.Time{}
	}
	n, ok := args[2].(int)
	if !ok || len(args) < 3+n {
		return false, time.Time{}
	}
	var active, lease, task, retry, pending bool
	for _, a := range args[3 : 3+n] {
		k, _ := a.(string)
		switch rediskeys.AsynqKindOf(k) {
		case rediskeys.AsynqActiveKind:
			active = true
		case rediskeys.AsynqLeaseKind:
			lease = true
		case rediskeys.AsynqTaskKind:
			task = true
		case rediskeys.AsynqRetryKind:
			retry = true
		case rediskeys.AsynqPendingKind:
			pending = true
		}
	}
	switch {
	case !active || !lease || !task || pending:
		return false, time.Time{}
	case retry:
		// asynq v0.26's retry script: ARGV[3] is processAt, in unix seconds.
		if len(args) < 3+n+3 {
			return false, time.Time{}
		}
		at, ok := args[3+n+2].(int64)
		if !ok {
			return false, time.Time{}
		}
		return true, time.Unix(at, 0).Add(-time.Second)
	}
	return true, time.Time{}
}
