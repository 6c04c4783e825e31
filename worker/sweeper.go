package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/hibiken/asynq"

	"github.com/versori/activator/internal/batch"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/metrics"
	"github.com/versori/activator/tasks"
)

// sweeper makes sure nothing sits only in asynq's archive, which is capped and trims silently. The
// handler stores every dead letter itself and has asynq drop the task, but asynq archives a task
// without calling the handler when it has killed its workers tasks.CrashRetries times in a row (and
// releases before the store held every dead letter archived theirs); the sweeper copies every
// archived task that has no entry into the dead-letter store. It is idempotent, so every worker
// process may run one.
type sweeper struct {
	inspector *asynq.Inspector
	store     *deadletter.Store
	queue     string
	metrics   *metrics.Worker
	log       *slog.Logger
	batches   *batch.Counter // nil: not counted
	keys      *tasks.Keyring // seals a plaintext task's credentials in its dead letter; nil: none
}

// newSweeper returns a sweeper of queue's archive into store.
func newSweeper(inspector *asynq.Inspector, store *deadletter.Store, queue string, m *metrics.Worker, log *slog.Logger) *sweeper {
	return &sweeper{inspector: inspector, store: store, queue: queue, metrics: m, log: log}
}

// sweepPage is how many archived tasks one round trip reads.
const sweepPage = 500

// Sweep copies archived tasks that have no dead-letter entry into the store and returns how many.
func (s *sweeper) Sweep(ctx context.Context) (int, error) {
	moved := 0
	for page := 1; ; page++ {
		if err := ctx.Err(); err != nil {
			return moved, err
		}
		infos, err := s.inspector.ListArchivedTasks(s.queue, asynq.PageSize(sweepPage), asynq.Page(page))
		if errors.Is(err, asynq.ErrQueueNotFound) {
			return moved, nil
		}
		if err != nil {
			return moved, fmt.Errorf("sweeper: listing archived tasks: %w", err)
		}
		ids := make([]string, len(infos))
		for i, t := range infos {
			ids[i] = t.ID
		}
		has, err := s.store.Has(ctx, ids)
		if err != nil {
			return moved, fmt.Errorf("sweeper: %w", err)
		}
		for i, t := range infos {
			if has[i] {
				continue
			}
			e := entryOf(t)
			e.Keep(sealPlaintext(e.Payload(), s.keys))
			// Only while the task is still archived: a purge deletes the task first, then its entry.
			added, err := s.store.AddWhile(ctx, e, rediskeys.AsynqTask(s.queue, t.ID))
			if err != nil {
				return moved, fmt.Errorf("sweeper: %w", err)
			}
			if added {
				moved++
				s.metrics.DeadLetters.WithLabelValues(string(e.Reason)).Inc()
				s.batches.Add(e.Batch, batch.FieldDeadPrefix+string(e.Reason), 1)
				s.log.Warn("job", "task_id", t.ID, "user_id", e.UserID, "integration_id", e.IntegrationID,
					"action", "dead_letter", "reason", string(e.Reason), "attempt", e.Attempts,
					"error", e.Error, "source", "archive")
			}
		}
		if len(infos) < sweepPage {
			return moved, nil
		}
	}
}

// entryOf builds the dead letter of an archived task. A task archived by the handler names its reason
// in its last error; one asynq archived itself ran out of attempts.
func entryOf(t *asynq.TaskInfo) deadletter.Entry {
	e := deadletter.Entry{
		ID:       t.ID,
		Reason:   tasks.ReasonRetriesExhausted,
		Error:    t.LastErr,
		Attempts: t.Retried + 1,
		FailedAt: t.LastFailedAt.UTC(),
		Queue:    t.Queue,
	}
	if r, ok := reasonFromError(t.LastErr); ok {
		e.Reason = r
	}
	p, err := tasks.DecodePayload(t.Payload)
	if err != nil {
		e.Reason = tasks.ReasonInvalidRequest
		e.Error = err.Error()
	}
	e.Keep(p)
	e.UserID, e.IntegrationID = p.Request.UserID, p.Request.IntegrationID
	return e
}
