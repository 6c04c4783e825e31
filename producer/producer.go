// Package producer puts activation jobs into the queue: one at a time from a vendor's own Go code
// (a signup handler, say), in bulk from a file, or back from the dead-letter store. Every way in is
// duplicate-safe: a pair already queued, running, done or dead-lettered is not queued again.
package producer

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/batch"
	"github.com/versori/activator/deadletter"
	"github.com/versori/activator/internal/queuestate"
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
	rdb       redis.UniversalClient
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
	Duplicate    Status = "duplicate"     // the pair is already queued, running or done: nothing to do
	DeadLettered Status = "dead_lettered" // the pair is in the dead-letter store: replay it from there
)

// Result is the outcome of enqueueing one request.
type Result struct {
	TaskID string
	Status Status
}

// Option modifies one Enqueue.
type Option func(*tasks.Payload)

// WithBatch tags the job with the id of the batch it belongs to.
func WithBatch(id string) Option { return func(p *tasks.Payload) { p.Batch = id } }

// WithReconcile makes the job look up the pair's activations before activating, for requests whose
// earlier outcome is unknown (say, activated outside activator, or after retention expired).
func WithReconcile() Option { return func(p *tasks.Payload) { p.Reconcile = true } }

// Enqueue validates req and queues its job, unless the pair is already queued, done or
// dead-lettered. A malformed request returns a *versori.ValidationError.
func (p *Producer) Enqueue(ctx context.Context, req versori.ActivationRequest, opts ...Option) (Result, error) {
	pl := tasks.Payload{Request: req}
	for _, o := range opts {
		o(&pl)
	}
	id := tasks.TaskID(req.Pair())
	if err := req.Validate(); err != nil {
		return Result{TaskID: id}, err
	}
	has, err := p.store.Has(ctx, []string{id})
	if err != nil {
		return Result{TaskID: id}, err
	}
	if has[0] {
		return Result{TaskID: id, Status: DeadLettered}, nil
	}
	res, err := p.enqueue(ctx, pl)
	if err == nil && res.Status == Enqueued && pl.Batch != "" {
		err = p.countQueued(ctx, pl.Batch, 1)
	}
	return res, err
}

// countQueued adds n to a batch's queued counter.
func (p *Producer) countQueued(ctx context.Context, id string, n int64) error {
	return batch.Write(ctx, p.rdb, p.cfg.Queue, map[string]map[string]int64{id: {batch.FieldQueued: n}})
}

// enqueue queues a validated payload whose pair was checked against the dead-letter store.
func (p *Producer) enqueue(ctx context.Context, pl tasks.Payload) (Result, error) {
	id := tasks.TaskID(pl.Request.Pair())
	if pl.EnqueuedAt.IsZero() {
		pl.EnqueuedAt = time.Now().UTC()
	}
	t, err := tasks.NewTask(pl,
		asynq.Queue(p.cfg.Queue), asynq.MaxRetry(p.cfg.MaxRetry),
		asynq.Retention(p.cfg.Retention), asynq.Timeout(p.cfg.Timeout))
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
}

// Requeue queues the dead letters with the given ids again and removes them from the store. The new
// jobs look up their pair before activating, since an earlier attempt's outcome may be unknown.
func (p *Producer) Requeue(ctx context.Context, ids []string) (RequeueResult, error) {
	var res RequeueResult
	for len(ids) > 0 {
		n := min(len(ids), 500)
		chunk := ids[:n]
		ids = ids[n:]
		entries, err := p.store.Get(ctx, chunk...)
		if err != nil {
			return res, err
		}
		found := make(map[string]bool, len(entries))
		for _, e := range entries {
			found[e.ID] = true
			// The dead job's record (archived) holds the task id; free it first.
			if err := p.inspector.DeleteTask(p.cfg.Queue, e.ID); err != nil &&
				!errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound) {
				res.Busy = append(res.Busy, e.ID)
				continue
			}
			r, err := p.enqueue(ctx, tasks.Payload{Request: e.Request, Reconcile: true, Batch: e.Batch})
			if err != nil {
				return res, err
			}
			if r.Status == Duplicate {
				res.Busy = append(res.Busy, e.ID)
				continue
			}
			if _, err := p.store.Remove(ctx, e.ID); err != nil {
				return res, err
			}
			// The job counts in its batch again when it ends, so it no longer counts as dead.
			if e.Batch != "" {
				if err := batch.Write(ctx, p.rdb, p.cfg.Queue,
					map[string]map[string]int64{e.Batch: {batch.FieldDeadPrefix + string(e.Reason): -1}}); err != nil {
					return res, err
				}
			}
			res.Requeued = append(res.Requeued, e.ID)
		}
		for _, id := range chunk {
			if !found[id] {
				res.Missing = append(res.Missing, id)
			}
		}
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
