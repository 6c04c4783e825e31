// Package inspect is what an operator does with a queue once jobs are in it: list, export, requeue
// and purge dead letters, pause and resume the queue, and read how far a batch is. It is to
// activator what asynq's Inspector is to asynq; cmd/enqueue's verbs are built on it.
package inspect

import (
	"context"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/batch"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/jobs"
	"github.com/versori/activator/internal/queuestate"
	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/tasks"
)

// DeadLetter is one job that needs a person. Its fields:
//
//   - ID string: the job's task id, so a pair has at most one dead letter.
//   - UserID, IntegrationID string: the pair.
//   - Reason tasks.Reason: why it failed, for --reason (missing_connections, retries_exhausted …).
//   - Error string, Attempts int: its last error and how many attempts it had.
//   - FailedAt, DeadLetteredAt time.Time: when it failed, and when it was stored here.
//   - Queue, Batch string: where it ran, and the batch it was enqueued in.
//   - Request versori.ActivationRequest: the request, as Requeue sends it again.
//   - Op tasks.Op, Seq int64: the job's operation ("" activates) and its number in the pair's order;
//     Requeue queues the same operation under the same task id, so that a dead letter requeued
//     after a later operation on its pair ends superseded.
//   - EndUser *tasks.EndUser: the end user the job creates should the API not know them.
type DeadLetter = deadletter.Entry

// BatchStatus is how far one enqueue run's jobs are. Its fields:
//
//   - ID string: the batch id.
//   - Queued, Activated, AlreadyActive, Retries int64: jobs queued, activated, found already
//     active, and retries so far.
//   - DeadLetters map[string]int64: dead letters by reason.
//   - Done, Remaining int64: activated, already active and dead-lettered together; Queued less Done.
//   - StartedAt, UpdatedAt time.Time: when the batch started, and when it last changed.
//   - FirstDoneAt, LastDoneAt time.Time: when its first and last job ended (zero before).
//   - Rate float64, RateWindow time.Duration: jobs ended per second over the last minute (the
//     window, shorter when the first job ended more recently); once the batch is finished, its
//     AverageRate, frozen.
//   - AverageRate float64, Running time.Duration: jobs ended per second over the whole run, from
//     the first job's end to now (to the last job's end once finished), and that time.
//   - Elapsed time.Duration: from StartedAt to now, or to the last job's end once finished.
//   - ETA time.Duration: Remaining at Rate; 0 when it cannot be told (finished, paused, nothing
//     ended in the window).
//   - Finished bool: something was queued and nothing remains.
//   - Paused bool, PausedReason string: the queue is paused, and why when known ("operator":
//     `enqueue pause`; "unauthorized": the workers paused it because the API refused the key).
//
// Its JSON gives the durations in seconds: rateWindowSeconds, runningSeconds, elapsedSeconds,
// etaSeconds (absent when it cannot be told).
type BatchStatus = batch.Status

// ErrUnknownBatch is returned by Batch for a batch with no counters: never run on the queue, or its
// counters expired 30 days after they last changed.
var ErrUnknownBatch = batch.ErrUnknown

// RequeueResult says what Requeue did with each id. Its fields, each a []string of ids unless said:
//
//   - Requeued: queued again, looking up the pair before activating.
//   - Missing: no such dead letter.
//   - Busy: the pair has a job queued or running again; the dead letter is left.
//   - Invalid []InvalidEntry: dead letters whose request cannot be sent as it is; left, for
//     RequeueFile with corrected rows or for Purge.
type RequeueResult = jobs.RequeueResult

// InvalidEntry is a dead letter that cannot be requeued as it is: its ID string, and why, Err error
// (a *versori.ValidationError naming the field).
type InvalidEntry = jobs.InvalidEntry

// PurgeResult says what Purge did with each id. Its fields, each a []string of ids:
//
//   - Purged: removed for good, from the store and from asynq's archive.
//   - Missing: no such dead letter.
//   - Busy: the pair has a job queued or running again; the dead letter is left.
type PurgeResult = jobs.PurgeResult

// RequeueFileOptions configures one RequeueFile run. Its fields:
//
//   - Path string: the file of corrected rows, .jsonl/.ndjson or .csv, or "-" for JSONL read from
//     Stdin io.Reader.
//   - Format string: "jsonl" or "csv", the input's format whatever Path's name; empty: from the
//     name (stdin: JSONL).
//   - RejectsPath string: where malformed rows go; empty: PATH.rejects.jsonl beside the input
//     (stdin.rejects.jsonl in the working directory for "-").
type RequeueFileOptions = jobs.RequeueFileOptions

// RequeueFileSummary counts what RequeueFile did with a file's rows. Its fields:
//
//   - Rows int: rows read.
//   - Requeued int: rows whose pair's dead letter was replaced by a job with the corrected request.
//   - NotDeadLettered int, NotDeadLetteredLines []int: rows whose pair has no dead letter (never
//     failed, already requeued or purged, or the fix changed the pair); nothing was done.
//   - Busy int, BusyLines []int: rows whose pair has a job queued or running again; its dead
//     letter is left.
//   - Rejected int, RejectsPath string: malformed rows, and the file they went to.
type RequeueFileSummary = jobs.RequeueFileSummary

// Inspector works one queue. It is safe for concurrent use.
type Inspector struct {
	rdb   redis.UniversalClient
	asynq *asynq.Inspector
	queue string
	jobs  *jobs.Queue
	store *deadletter.Store
	state *queuestate.Controller
}

// New returns an Inspector of the named queue ("activations" when empty) through rdb, which the
// caller keeps and closes. A requeued job gets cfg's retry limit, retention and timeout, as
// producer.New's jobs do.
func New(rdb redis.UniversalClient, cfg producer.Config) *Inspector {
	q := jobs.New(rdb, cfg)
	return &Inspector{
		rdb:   rdb,
		asynq: asynq.NewInspectorFromRedisClient(rdb),
		queue: q.Name(),
		jobs:  q,
		store: deadletter.NewStore(rdb, q.Name()),
		state: queuestate.New(rdb, q.Name()),
	}
}

// Queue is the name of the queue the inspector works.
func (i *Inspector) Queue() string { return i.queue }

// Known reports whether anything has used the queue: a task was queued on it (asynq's list of
// queues), a worker serves it now (asynq's servers), or it is paused or has dead letters. A queue
// name nothing has used is most likely mistyped.
func (i *Inspector) Known(ctx context.Context) (bool, error) {
	pipe := i.rdb.Pipeline()
	listed := pipe.SIsMember(ctx, rediskeys.AsynqQueues, i.queue)
	keys := []*redis.IntCmd{
		pipe.Exists(ctx, rediskeys.AsynqPaused(i.queue)),
		pipe.Exists(ctx, rediskeys.PausedReason(i.queue)),
		pipe.Exists(ctx, rediskeys.DeadLetters(i.queue)),
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return false, fmt.Errorf("looking queue %s up: %w", i.queue, err)
	}
	if listed.Val() {
		return true, nil
	}
	for _, k := range keys {
		if k.Val() > 0 {
			return true, nil
		}
	}
	servers, err := i.asynq.Servers()
	if err != nil {
		return false, fmt.Errorf("listing the workers: %w", err)
	}
	for _, s := range servers {
		if _, ok := s.Queues[i.queue]; ok {
			return true, nil
		}
	}
	return false, nil
}

// DeadLetters calls fn with every dead letter of reason r (every reason when r is empty), oldest
// first, reading them a page at a time; an error from fn stops it and is returned.
func (i *Inspector) DeadLetters(ctx context.Context, r tasks.Reason, fn func(DeadLetter) error) error {
	return i.store.Each(ctx, r, fn)
}

// DeadLetterIDs lists the ids of the dead letters of reason r (every reason when r is empty).
func (i *Inspector) DeadLetterIDs(ctx context.Context, r tasks.Reason) ([]string, error) {
	return i.store.IDs(ctx, r)
}

// CountDeadLetters counts the dead letters of reason r (every reason when r is empty).
func (i *Inspector) CountDeadLetters(ctx context.Context, r tasks.Reason) (int64, error) {
	return i.store.Count(ctx, r)
}

// CountDeadLettersByReason counts the dead letters of every reason.
func (i *Inspector) CountDeadLettersByReason(ctx context.Context) (map[tasks.Reason]int64, error) {
	return i.store.CountByReason(ctx)
}

// Requeue queues the dead letters with the given ids again, each with the request it holds, and
// removes them from the store. The new jobs look up their pair before activating, since an earlier
// attempt's outcome may be unknown. A dead letter whose request is not valid is left and reported
// in Invalid; the others are requeued.
func (i *Inspector) Requeue(ctx context.Context, ids []string) (RequeueResult, error) {
	return i.jobs.Requeue(ctx, ids)
}

// RequeueFile is the "fix the rows, then requeue" workflow: each row of a file of corrected
// requests replaces its pair's dead letter with a job carrying the corrected request. Malformed rows
// go to a rejects file; re-running the file is safe. An input it cannot use at all (it cannot be
// opened, its format cannot be told, its CSV header is bad) is a *producer.InputError, returned
// before any row is read.
func (i *Inspector) RequeueFile(ctx context.Context, o RequeueFileOptions) (RequeueFileSummary, error) {
	return i.jobs.RequeueFile(ctx, o)
}

// Purge drops the dead letters with the given ids for good and releases their pairs: enqueueing a
// pair again afterwards queues it, with a look-up first.
func (i *Inspector) Purge(ctx context.Context, ids []string) (PurgeResult, error) {
	return i.jobs.Purge(ctx, ids)
}

// Pause pauses the queue: workers stop taking its jobs, which stay queued. Pausing a paused queue
// is not an error. A queue paused this way is resumed only by Resume, never by a worker's probe.
func (i *Inspector) Pause(ctx context.Context) error {
	return i.state.Pause(ctx, queuestate.ReasonOperator)
}

// Resume unpauses the queue, after the cause of a pause (a refused API key) has been fixed.
// Resuming a running queue is not an error.
func (i *Inspector) Resume(ctx context.Context) error { return i.state.Resume(ctx) }

// Batch returns how far batch id is, or ErrUnknownBatch.
func (i *Inspector) Batch(ctx context.Context, id string) (BatchStatus, error) {
	return i.BatchAt(ctx, id, time.Now())
}

// BatchAt is Batch as of now, the time its rates and durations are measured to.
func (i *Inspector) BatchAt(ctx context.Context, id string, now time.Time) (BatchStatus, error) {
	st, err := batch.ReadAt(ctx, i.rdb, i.queue, id, now)
	if err != nil {
		return st, err
	}
	st.Paused, st.PausedReason, err = i.state.Paused(ctx)
	if err != nil {
		return st, fmt.Errorf("reading whether queue %s is paused: %w", i.queue, err)
	}
	if st.Paused {
		st.ETA = 0 // nothing ends while it is paused
	}
	return st, nil
}

// ReencryptSummary counts what Reencrypt did. Its fields:
//
//   - Tasks, DeadLetters int: sealed again with the current key (or sealed for the first time).
//   - Current int: already sealed with the current key, or holding no credentials.
//   - Running int, RunningIDs []string: tasks a worker held, left as they are; re-run once they end.
//   - Changed int: tasks and dead letters that changed between the read and the write; re-run.
//   - Unreadable int, UnreadableIDs []string: sealed under a key the keyring lacks, or not
//     authenticating; left as they are.
//
// Its Done method reports whether nothing is left under another key, so that the old keys may go.
type ReencryptSummary = jobs.ReencryptSummary

// Reencrypt seals with the current key (the first of producer.Config.Keys) the credentials of every
// task no worker holds (pending, scheduled, retry, archived) and every dead letter that holds them
// under another key or in plain text. Each task's payload is rewritten in place in a
// compare-and-set, so that a task a worker takes meanwhile is never overwritten.
func (i *Inspector) Reencrypt(ctx context.Context) (ReencryptSummary, error) {
	return i.jobs.Reencrypt(ctx)
}
