// Package producer puts activation jobs into the queue: one at a time from a vendor's own Go code
// (a signup handler, say), in bulk from a file, or back from the dead-letter store. Every way in is
// duplicate-safe: a pair already queued, running, done or dead-lettered is not queued again, on this
// queue or any other, and a pair that had a job before whose record is gone (retention ended, a
// purge) is queued with a look-up first.
package producer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/batch"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/ingest"
	"github.com/versori/activator/internal/pairs"
	"github.com/versori/activator/internal/queuestate"
	"github.com/versori/activator/internal/redisguard"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

// Config configures a Producer.
type Config struct {
	Queue string // default "activations"
	// MaxRetry is how many times a job may fail before it is dead-lettered (default 25). Waits asked
	// for by the API (429) do not count.
	MaxRetry int
	// Retention is how long a finished job's record is kept (default 30 days). While it is, enqueueing
	// the same pair again is refused as a duplicate; after it, the pair can be queued again.
	Retention time.Duration
	// Timeout bounds one attempt of a job (default 2 minutes); asynq keeps it in whole seconds.
	Timeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.Queue == "" {
		c.Queue = "activations"
	}
	if c.MaxRetry <= 0 {
		c.MaxRetry = 25
	}
	if c.Retention <= 0 {
		c.Retention = 30 * 24 * time.Hour
	}
	if c.Timeout < time.Second {
		c.Timeout = 2 * time.Minute
	}
	return c
}

// Producer enqueues activation jobs. It is safe for concurrent use; make one per process.
type Producer struct {
	cfg       Config
	client    *asynq.Client
	inspector *asynq.Inspector
	store     *deadletter.Store
	state     *queuestate.Controller
	pairs     *pairs.Registry
	rdb       redis.UniversalClient

	backfillMu sync.Mutex // held while the registry is backfilled, once per producer
	backfilled bool
}

// New returns a Producer that enqueues through rdb. The producer holds no resources of its own: the
// caller closes rdb when done. EnqueueFile enqueues through rdb's autopipeliner (one per client in
// go-redis, configured by its first caller), which lives until rdb is closed; code that shares rdb
// must not close that autopipeliner while a file runs.
func New(rdb redis.UniversalClient, cfg Config) *Producer {
	cfg = cfg.withDefaults()
	return &Producer{
		cfg:       cfg,
		client:    asynq.NewClientFromRedisClient(rdb),
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		store:     deadletter.NewStore(rdb, cfg.Queue),
		state:     queuestate.New(rdb, cfg.Queue),
		pairs:     pairs.New(rdb),
		rdb:       rdb,
	}
}

// Queue is the queue the producer enqueues to.
func (p *Producer) Queue() string { return p.cfg.Queue }

// Store is the dead-letter store of the producer's queue.
func (p *Producer) Store() *deadletter.Store { return p.store }

// Status is what Enqueue did with a request.
type Status string

// The statuses.
const (
	Enqueued     Status = "enqueued"      // a new job was queued
	Duplicate    Status = "duplicate"     // the pair is already queued, running or done, here or on another queue: nothing to do
	DeadLettered Status = "dead_lettered" // the pair is in the dead-letter store: replay it from there
)

// Result is the outcome of enqueueing one request.
type Result struct {
	TaskID string
	Status Status
	// Owner is the queue that owns the pair when it is not the producer's: the pair was queued there
	// first, and is activated from there (Status is Duplicate).
	Owner string
}

// Option modifies one Enqueue.
type Option func(*tasks.Payload)

// WithBatch tags the job with the id of the batch it belongs to.
func WithBatch(id string) Option { return func(p *tasks.Payload) { p.Batch = id } }

// WithReconcile makes the job look up the pair's activations before activating, for requests whose
// earlier outcome is unknown (say, activated outside activator, or after retention expired).
func WithReconcile() Option { return func(p *tasks.Payload) { p.Reconcile = true } }

// Enqueue validates req and queues its job, unless the pair is already queued, done or
// dead-lettered. A malformed request returns a *versori.ValidationError. The request's ULIDs are made
// canonical first, so the result's task id is the pair's whatever case req spells them in.
func (p *Producer) Enqueue(ctx context.Context, req versori.ActivationRequest, opts ...Option) (Result, error) {
	req, err := req.Canonical()
	id := tasks.TaskID(req.Pair())
	if err != nil {
		return Result{TaskID: id}, err
	}
	pl := tasks.Payload{Request: req}
	for _, o := range opts {
		o(&pl)
	}
	if err := p.backfill(ctx); err != nil {
		return Result{TaskID: id}, err
	}
	has, err := p.store.Has(ctx, []string{id})
	if err != nil {
		return Result{TaskID: id}, err
	}
	if has[0] {
		return Result{TaskID: id, Status: DeadLettered}, nil
	}
	claims, err := p.pairs.Claim(ctx, p.cfg.Queue, []string{id})
	if err != nil {
		return Result{TaskID: id}, err
	}
	res, err := p.enqueueClaimed(ctx, pl, claims[0])
	if err == nil && res.Status == Enqueued && pl.Batch != "" {
		err = p.countQueued(ctx, pl.Batch, 1)
	}
	return res, err
}

// backfill brings what older releases left in Redis up to date, once per producer, before it first
// reads the dead-letter store or claims a pair: the pair registry learns the pairs queued before it
// existed, dead letters move to canonical ids (pairs.Backfill), and the queue's Redis run id is
// stored for the workers' restart guard (redisguard.Mark).
func (p *Producer) backfill(ctx context.Context) error {
	p.backfillMu.Lock()
	defer p.backfillMu.Unlock()
	if p.backfilled {
		return nil
	}
	if err := p.pairs.Backfill(ctx); err != nil {
		return err
	}
	// The run id of the queue's Redis, stored from its first job on, so that the workers' restart
	// guard also notices a Redis restored to before then.
	if err := redisguard.Mark(ctx, p.rdb, p.cfg.Queue); err != nil {
		return err
	}
	p.backfilled = true
	return nil
}

// countQueued adds n to a batch's queued counter.
func (p *Producer) countQueued(ctx context.Context, id string, n int64) error {
	return batch.Write(ctx, p.rdb, p.cfg.Queue, map[string]map[string]int64{id: {batch.FieldQueued: n}})
}

// enqueueClaimed queues a validated payload whose pair was checked against the dead-letter store and
// claimed in the pair registry with the result c. A pair another queue owns is a duplicate; one seen
// before is queued with a look-up first, since an earlier job for it may have activated it.
func (p *Producer) enqueueClaimed(ctx context.Context, pl tasks.Payload, c pairs.Claim) (Result, error) {
	id := tasks.TaskID(pl.Request.Pair())
	if c.State == pairs.Elsewhere {
		var err error
		if c, err = p.takeOverIfIdle(ctx, id, c); err != nil {
			return Result{TaskID: id}, err
		}
	}
	switch c.State {
	case pairs.Elsewhere:
		return Result{TaskID: id, Status: Duplicate, Owner: c.Owner}, nil
	case pairs.Seen:
		pl.Reconcile = true
	}
	return p.enqueue(ctx, pl)
}

// takeOverAge is how old another queue's claim must be before this queue may take the pair over: a
// younger one may be an enqueue still on its way.
const takeOverAge = time.Minute

// takeOverIfIdle takes over a pair another queue owns but has nothing for (no task, no dead letter:
// its enqueue failed after the claim, or its finished job's record expired), so that the request is
// not dropped as a duplicate of nothing. The pair is Seen then: its job looks first.
func (p *Producer) takeOverIfIdle(ctx context.Context, id string, c pairs.Claim) (pairs.Claim, error) {
	now, err := p.pairs.Now(ctx)
	if err != nil || now.Sub(c.Since) < takeOverAge {
		return c, err
	}
	_, err = p.inspector.GetTaskInfo(c.Owner, id)
	switch {
	case err == nil:
		return c, nil
	case !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound):
		return c, err
	}
	has, err := deadletter.NewStore(p.rdb, c.Owner).Has(ctx, []string{id})
	if err != nil || has[0] {
		return c, err
	}
	ok, err := p.pairs.TakeOver(ctx, p.cfg.Queue, id, c)
	if err != nil || !ok {
		return c, err
	}
	return pairs.Claim{State: pairs.Seen, Owner: p.cfg.Queue}, nil
}

// enqueue queues a validated payload whose pair was checked against the dead-letter store and
// claimed.
func (p *Producer) enqueue(ctx context.Context, pl tasks.Payload) (Result, error) {
	id := tasks.TaskID(pl.Request.Pair())
	if pl.EnqueuedAt.IsZero() {
		pl.EnqueuedAt = time.Now().UTC()
	}
	pl.MaxRetry = p.cfg.MaxRetry
	t, err := tasks.NewTask(pl,
		asynq.Queue(p.cfg.Queue), asynq.Retention(p.cfg.Retention), asynq.Timeout(p.cfg.Timeout))
	if err != nil {
		return Result{TaskID: id}, err
	}
	_, err = p.client.EnqueueContext(ctx, t)
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		return Result{TaskID: id, Status: Duplicate}, nil
	case err != nil:
		return Result{TaskID: id}, fmt.Errorf("enqueueing %s: %w", id, err)
	}
	return Result{TaskID: id, Status: Enqueued}, nil
}

// RequeueResult says what Requeue did with each id.
type RequeueResult struct {
	Requeued []string // queued again, looking up the pair before activating
	Missing  []string // no such dead letter
	Busy     []string // the pair has a job queued or running again; the dead letter is left
	// Invalid are dead letters whose request cannot be sent as it is (a dead letter of reason
	// invalid_request may hold no request at all): they are left, for `dlq requeue --file` with the
	// corrected rows, or for a purge.
	Invalid []InvalidEntry
}

// InvalidEntry is a dead letter that cannot be requeued as it is, and why.
type InvalidEntry struct {
	ID  string
	Err error
}

// requeueChunk bounds how many dead letters one round trip reads.
const requeueChunk = 500

// Requeue queues the dead letters with the given ids again, each with the request it holds, and
// removes them from the store. The new jobs look up their pair before activating, since an earlier
// attempt's outcome may be unknown. A dead letter whose request is not valid is skipped and reported
// in Invalid; the others are requeued.
func (p *Producer) Requeue(ctx context.Context, ids []string) (RequeueResult, error) {
	var res RequeueResult
	if err := p.backfill(ctx); err != nil {
		return res, err
	}
	for len(ids) > 0 {
		n := min(len(ids), requeueChunk)
		chunk := ids[:n]
		ids = ids[n:]
		entries, err := p.store.Get(ctx, chunk...)
		if err != nil {
			return res, err
		}
		found := make(map[string]bool, len(entries))
		for _, e := range entries {
			found[e.ID] = true
			st, err := p.requeueEntry(ctx, e, e.Request)
			var ve *versori.ValidationError
			switch {
			case errors.As(err, &ve):
				res.Invalid = append(res.Invalid, InvalidEntry{ID: e.ID, Err: err})
			case err != nil:
				return res, err
			case st == Enqueued:
				res.Requeued = append(res.Requeued, e.ID)
			default:
				res.Busy = append(res.Busy, e.ID)
			}
		}
		for _, id := range chunk {
			if !found[id] {
				res.Missing = append(res.Missing, id)
			}
		}
	}
	return res, nil
}

// requeueEntry queues dead letter e again with the request req (e's own, or a corrected one for the
// same pair) and removes e from the store. It returns Enqueued, or Duplicate when a job for the pair
// is queued or running again (or another queue owns it), in which case e is left. An invalid req is
// a *versori.ValidationError, and e is left.
func (p *Producer) requeueEntry(ctx context.Context, e deadletter.Entry, req versori.ActivationRequest) (Status, error) {
	req, err := req.Canonical()
	if err != nil {
		return "", err
	}
	// A dead letter stored before the store kept every one may still have its task in asynq's
	// archive, holding the task id: free it first.
	if err := p.deleteArchived(e.ID); errors.Is(err, errHasJob) {
		return Duplicate, nil
	} else if err != nil {
		return "", err
	}
	id := tasks.TaskID(req.Pair())
	claims, err := p.pairs.Claim(ctx, p.cfg.Queue, []string{id})
	if err != nil {
		return "", err
	}
	r, err := p.enqueueClaimed(ctx, tasks.Payload{Request: req, Reconcile: true, Batch: e.Batch}, claims[0])
	if err != nil {
		return "", err
	}
	if r.Status != Enqueued {
		return r.Status, nil
	}
	// Only the entry read: the new job may have been dead-lettered again already, under the same id.
	if _, err := p.store.RemoveEntry(ctx, e); err != nil {
		return "", err
	}
	// The job counts in its batch again when it ends, so it no longer counts as dead.
	if e.Batch != "" {
		if err := batch.Write(ctx, p.rdb, p.cfg.Queue,
			map[string]map[string]int64{e.Batch: {batch.FieldDeadPrefix + string(e.Reason): -1}}); err != nil {
			return "", err
		}
	}
	return Enqueued, nil
}

// errHasJob says a dead letter's pair has a job queued or running again.
var errHasJob = errors.New("the pair has a job queued or running")

// deleteArchived deletes task id from asynq's archive, if it is there. A task in any other state is
// left, and reported as errHasJob.
func (p *Producer) deleteArchived(id string) error {
	info, err := p.inspector.GetTaskInfo(p.cfg.Queue, id)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return nil
	case err != nil:
		return err
	case info.State != asynq.TaskStateArchived:
		return fmt.Errorf("task %s is %s: %w", id, info.State, errHasJob)
	}
	err = p.inspector.DeleteTask(p.cfg.Queue, id)
	if errors.Is(err, asynq.ErrTaskNotFound) {
		return nil
	}
	return err
}

// PurgeResult says what Purge did.
type PurgeResult struct {
	Purged  []string
	Missing []string // no such dead letter
	Busy    []string // the pair has a job queued or running again; the dead letter is left
}

// Purge drops the dead letters with the given ids for good: from the store, and from asynq's archive
// if their task is there (so that the archive sweep cannot store them again). Their pairs are
// released: enqueueing a pair again afterwards (the corrected row, on any queue) queues it, with a
// look-up first, since a purged job may have activated its pair with a call whose outcome was
// unknown.
func (p *Producer) Purge(ctx context.Context, ids []string) (PurgeResult, error) {
	var res PurgeResult
	for len(ids) > 0 {
		n := min(len(ids), requeueChunk)
		chunk := ids[:n]
		ids = ids[n:]
		has, err := p.store.Has(ctx, chunk)
		if err != nil {
			return res, err
		}
		var found []string
		for i, id := range chunk {
			if !has[i] {
				res.Missing = append(res.Missing, id)
				continue
			}
			// The archived task first: a sweep between the two steps then finds neither.
			if err := p.deleteArchived(id); errors.Is(err, errHasJob) {
				res.Busy = append(res.Busy, id)
				continue
			} else if err != nil {
				return res, fmt.Errorf("purging %s: %w", id, err)
			}
			found = append(found, id)
		}
		if _, err := p.store.Remove(ctx, found...); err != nil {
			return res, err
		}
		if _, err := p.pairs.Release(ctx, p.cfg.Queue, found); err != nil {
			return res, err
		}
		res.Purged = append(res.Purged, found...)
	}
	return res, nil
}

// Pause pauses the queue: workers stop taking its jobs, which stay queued. Pausing a paused queue
// is not an error. A queue paused this way is resumed only by Resume, never by a worker's probe.
func (p *Producer) Pause(ctx context.Context) error {
	return p.state.Pause(ctx, queuestate.ReasonOperator)
}

// Resume unpauses the queue, after the cause of a pause (a refused API key) has been fixed.
// Resuming a running queue is not an error.
func (p *Producer) Resume(ctx context.Context) error { return p.state.Resume(ctx) }

// RequeueFileOptions configures one RequeueFile run.
type RequeueFileOptions struct {
	// Path is the file of corrected rows: .jsonl/.ndjson, .csv, or "-" for JSONL on Stdin, read as
	// EnqueueFile reads its input.
	Path  string
	Stdin io.Reader
	// RejectsPath receives malformed rows (default ingest.RejectsPath(Path)).
	RejectsPath string
}

// RequeueFileSummary counts what RequeueFile did with a file's rows.
type RequeueFileSummary struct {
	Rows     int
	Requeued int
	// NotDeadLettered rows name a pair that has no dead letter (never failed, already requeued or
	// purged, or the fix changed the pair): nothing was done with them.
	NotDeadLettered      int
	NotDeadLetteredLines []int
	// Busy rows name a pair that has a job queued or running again; its dead letter is left.
	Busy      int
	BusyLines []int
	Rejected  int // malformed; see RejectsPath
	// RejectsPath is where malformed rows went, when there were any.
	RejectsPath string
}

// RequeueFile is the "fix the rows, then requeue" workflow: for each row of a file of corrected
// activation requests, the dead letter of the row's pair is replaced by a job with the corrected
// request (looking up the pair before activating, as every requeued job does). Malformed rows go to
// the rejects file, and the rest of the file still runs. It stops at the first Redis error, which it
// returns with the counts so far; re-running the file is safe (requeued pairs no longer have a dead
// letter, and count as NotDeadLettered).
func (p *Producer) RequeueFile(ctx context.Context, o RequeueFileOptions) (RequeueFileSummary, error) {
	var sum RequeueFileSummary
	if err := p.backfill(ctx); err != nil {
		return sum, err
	}
	in, format, closeIn, err := openInput(o.Path, o.Stdin)
	if err != nil {
		return sum, err
	}
	defer closeIn()
	rd, err := ingest.NewReader(in, format)
	if err != nil {
		return sum, err
	}
	if o.RejectsPath == "" {
		o.RejectsPath = ingest.RejectsPath(o.Path)
	}
	rejects := ingest.NewRejectsWriter(o.RejectsPath)
	addLine := func(lines []int, n int) []int {
		if len(lines) < maxFailedLines {
			lines = append(lines, n)
		}
		return lines
	}
	for ctx.Err() == nil {
		row, rej, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			rejects.Close()
			return sum, fmt.Errorf("reading %s: %w", o.Path, err)
		}
		sum.Rows++
		if rej != nil {
			sum.Rejected++
			if err := rejects.Write(*rej); err != nil {
				rejects.Close()
				return sum, fmt.Errorf("writing rejects: %w", err)
			}
			continue
		}
		id := tasks.TaskID(row.Request.Pair())
		entries, err := p.store.Get(ctx, id)
		if err != nil {
			rejects.Close()
			return sum, err
		}
		if len(entries) == 0 {
			sum.NotDeadLettered++
			sum.NotDeadLetteredLines = addLine(sum.NotDeadLetteredLines, row.Line)
			continue
		}
		st, err := p.requeueEntry(ctx, entries[0], row.Request)
		if err != nil {
			rejects.Close()
			return sum, fmt.Errorf("line %d: %w", row.Line, err)
		}
		if st == Enqueued {
			sum.Requeued++
		} else {
			sum.Busy++
			sum.BusyLines = addLine(sum.BusyLines, row.Line)
		}
	}
	if err := rejects.Close(); err != nil {
		return sum, fmt.Errorf("writing rejects: %w", err)
	}
	if rejects.Count() > 0 {
		sum.RejectsPath = rejects.Path()
	}
	if err := context.Cause(ctx); err != nil {
		return sum, fmt.Errorf("interrupted after %d rows: re-run the same file to requeue the rest: %w", sum.Rows, err)
	}
	return sum, nil
}
