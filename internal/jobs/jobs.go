// Package jobs is the one way activation jobs get into a queue: one at a time, in bulk from a file,
// or back from the dead-letter store. The public packages producer and inspect are its faces. Every
// way in is
// duplicate-safe: a pair already queued, running, done or dead-lettered is not queued again, on this
// queue or any other, and a pair that had a job before whose record is gone (retention ended, a
// purge) is queued with a look-up first.
package jobs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/batch"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/pairorder"
	"github.com/versori/activator/internal/pairs"
	"github.com/versori/activator/internal/redisguard"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

// Config configures a Queue.
type Config struct {
	Queue string
	// MaxRetry is how many times a job may fail before it is dead-lettered. Waits asked for by the
	// API (429) do not count.
	MaxRetry int
	// Retention is how long a finished job's record is kept. While it is, enqueueing the same pair
	// again is refused as a duplicate; after it, the pair can be queued again.
	Retention time.Duration
	// Timeout bounds one attempt of a job; asynq keeps it in whole seconds (under a second: the
	// default).
	Timeout time.Duration
	// Keys seal the credentials of the requests queued (with the first key), so that Redis never
	// holds them in plain text. Without keys, a request with credentials is refused with
	// tasks.ErrPlaintextCredentials unless AllowPlaintext.
	Keys *tasks.Keyring
	// AllowPlaintext lets requests with credentials be queued without keys, in plain text.
	AllowPlaintext bool
}

// DefaultConfig is the configuration used for fields left zero: the enqueue command's defaults.
func DefaultConfig() Config {
	return Config{Queue: tasks.DefaultQueue, MaxRetry: 25, Retention: 30 * 24 * time.Hour, Timeout: 2 * time.Minute}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Queue == "" {
		c.Queue = d.Queue
	}
	if c.MaxRetry <= 0 {
		c.MaxRetry = d.MaxRetry
	}
	if c.Retention <= 0 {
		c.Retention = d.Retention
	}
	if c.Timeout < time.Second {
		c.Timeout = d.Timeout
	}
	return c
}

// Queue enqueues activation jobs. It is safe for concurrent use; make one per process.
type Queue struct {
	cfg       Config
	client    *asynq.Client
	inspector *asynq.Inspector
	store     *deadletter.Store
	pairs     *pairs.Registry
	order     *pairorder.Order
	rdb       redis.UniversalClient

	backfillMu sync.Mutex // held while the registry is backfilled, once per producer
	backfilled bool
}

// New returns a Queue that enqueues through rdb. The producer holds no resources of its own: the
// caller closes rdb when done. EnqueueFile enqueues through rdb's autopipeliner (one per client in
// go-redis, configured by its first caller), which lives until rdb is closed; code that shares rdb
// must not close that autopipeliner while a file runs.
func New(rdb redis.UniversalClient, cfg Config) *Queue {
	cfg = cfg.withDefaults()
	return &Queue{
		cfg:       cfg,
		client:    asynq.NewClientFromRedisClient(rdb),
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		store:     deadletter.NewStore(rdb, cfg.Queue),
		pairs:     pairs.New(rdb),
		order:     pairorder.New(rdb),
		rdb:       rdb,
	}
}

// Name is the name of the asynq queue.
func (q *Queue) Name() string { return q.cfg.Queue }

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
func (q *Queue) Enqueue(ctx context.Context, req versori.ActivationRequest, opts ...Option) (Result, error) {
	req, err := req.Canonical()
	id := tasks.TaskID(req.Pair())
	if err != nil {
		return Result{TaskID: id}, err
	}
	if err := q.CheckSecrets(req); err != nil {
		return Result{TaskID: id}, err
	}
	pl := tasks.Payload{Request: req}
	for _, o := range opts {
		o(&pl)
	}
	if err := q.backfill(ctx); err != nil {
		return Result{TaskID: id}, err
	}
	has, err := q.store.Has(ctx, []string{id})
	if err != nil {
		return Result{TaskID: id}, err
	}
	if has[0] {
		return Result{TaskID: id, Status: DeadLettered}, nil
	}
	claims, err := q.pairs.Claim(ctx, q.cfg.Queue, []string{id})
	if err != nil {
		return Result{TaskID: id}, err
	}
	res, err := q.enqueueClaimed(ctx, pl, claims[0])
	if err == nil && res.Status == Enqueued && pl.Batch != "" {
		err = q.countQueued(ctx, pl.Batch, 1)
	}
	return res, err
}

// CheckSecrets returns the error Enqueue would for req's credentials: a *versori.ValidationError
// naming the connection, which also matches tasks.ErrPlaintextCredentials when req carries
// credentials and q may neither seal them (no keys) nor store them in plain text; or one for
// credentials that are tasks.Withheld, the placeholder displays show instead of them (only
// `dlq requeue --file` takes those, as the dead letter's own). Nil when req may be queued.
func (q *Queue) CheckSecrets(req versori.ActivationRequest) error {
	for i, c := range req.Connections {
		field := "connections[" + strconv.Itoa(i) + "].credentials"
		switch {
		case len(c.Credentials) == 0:
		case tasks.IsWithheld(c.Credentials):
			return &versori.ValidationError{Field: field, Reason: "is the placeholder displays show instead of credentials: give the credentials themselves"}
		case q.cfg.Keys == nil && !q.cfg.AllowPlaintext:
			return &secretsError{field: field}
		}
	}
	return nil
}

// secretsError is CheckSecrets' refusal of credentials it may not store: a ValidationError (so
// that every way in reports it as a bad request, naming the field) that is also
// tasks.ErrPlaintextCredentials.
type secretsError struct{ field string }

func (e *secretsError) Error() string { return e.field + ": " + tasks.ErrPlaintextCredentials.Error() }

func (e *secretsError) Is(target error) bool { return target == tasks.ErrPlaintextCredentials }

func (e *secretsError) As(target any) bool {
	if ve, ok := target.(**versori.ValidationError); ok {
		*ve = &versori.ValidationError{Field: e.field, Reason: tasks.ErrPlaintextCredentials.Error()}
		return true
	}
	return false
}

// backfill brings what older releases left in Redis up to date, once per producer, before it first
// reads the dead-letter store or claims a pair: the pair registry learns the pairs queued before it
// existed, dead letters move to canonical ids (pairs.Backfill), and the queue's Redis run id is
// stored for the workers' restart guard (redisguard.Mark).
func (q *Queue) backfill(ctx context.Context) error {
	q.backfillMu.Lock()
	defer q.backfillMu.Unlock()
	if q.backfilled {
		return nil
	}
	if err := q.pairs.Backfill(ctx); err != nil {
		return err
	}
	// The run id of the queue's Redis, stored from its first job on, so that the workers' restart
	// guard also notices a Redis restored to before then.
	if err := redisguard.Mark(ctx, q.rdb, q.cfg.Queue); err != nil {
		return err
	}
	q.backfilled = true
	return nil
}

// countQueued adds n to a batch's queued counter.
func (q *Queue) countQueued(ctx context.Context, id string, n int64) error {
	return batch.Write(ctx, q.rdb, q.cfg.Queue, map[string]map[string]int64{id: {batch.FieldQueued: n}})
}

// enqueueClaimed queues a validated payload whose pair was checked against the dead-letter store and
// claimed in the pair registry with the result c. A pair another queue owns is a duplicate; one seen
// before is queued with a look-up first, since an earlier job for it may have activated it.
func (q *Queue) enqueueClaimed(ctx context.Context, pl tasks.Payload, c pairs.Claim) (Result, error) {
	id := tasks.TaskIDAt(pl.Request.Pair(), pl.Seq)
	if c.State == pairs.Elsewhere {
		var err error
		if c, err = q.takeOverIfIdle(ctx, tasks.TaskID(pl.Request.Pair()), c); err != nil {
			return Result{TaskID: id}, err
		}
	}
	switch c.State {
	case pairs.Elsewhere:
		return Result{TaskID: id, Status: Duplicate, Owner: c.Owner}, nil
	case pairs.Seen:
		pl.Reconcile = true
	}
	return q.enqueue(ctx, pl)
}

// takeOverAge is how old another queue's claim must be before this queue may take the pair over: a
// younger one may be an enqueue still on its way.
const takeOverAge = time.Minute

// takeOverIfIdle takes over a pair another queue owns but has nothing for (no task, no dead letter:
// its enqueue failed after the claim, or its finished job's record expired), so that the request is
// not dropped as a duplicate of nothing. The pair is Seen then: its job looks first.
func (q *Queue) takeOverIfIdle(ctx context.Context, id string, c pairs.Claim) (pairs.Claim, error) {
	now, err := q.pairs.Now(ctx)
	if err != nil || now.Sub(c.Since) < takeOverAge {
		return c, err
	}
	_, err = q.inspector.GetTaskInfo(c.Owner, id)
	switch {
	case err == nil:
		return c, nil
	case !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound):
		return c, err
	}
	has, err := deadletter.NewStore(q.rdb, c.Owner).Has(ctx, []string{id})
	if err != nil || has[0] {
		return c, err
	}
	ok, err := q.pairs.TakeOver(ctx, q.cfg.Queue, id, c)
	if err != nil || !ok {
		return c, err
	}
	return pairs.Claim{State: pairs.Seen, Owner: q.cfg.Queue}, nil
}

// enqueue queues a validated payload whose pair was checked against the dead-letter store and
// claimed.
func (q *Queue) enqueue(ctx context.Context, pl tasks.Payload) (Result, error) {
	id := tasks.TaskIDAt(pl.Request.Pair(), pl.Seq)
	if pl.EnqueuedAt.IsZero() {
		pl.EnqueuedAt = time.Now().UTC()
	}
	pl.MaxRetry = q.cfg.MaxRetry
	// Sealed here, the one place every way in passes: a request that may not be stored in plain
	// text was refused before (CheckSecrets), so without keys what is left is allowed plaintext.
	if q.cfg.Keys != nil {
		if err := pl.Seal(q.cfg.Keys); err != nil {
			return Result{TaskID: id}, err
		}
	}
	t, err := tasks.NewTask(pl,
		asynq.Queue(q.cfg.Queue), asynq.Retention(q.cfg.Retention), asynq.Timeout(q.cfg.Timeout))
	if err != nil {
		return Result{TaskID: id}, err
	}
	_, err = q.client.EnqueueContext(ctx, t)
	switch {
	case errors.Is(err, asynq.ErrTaskIDConflict):
		return Result{TaskID: id, Status: Duplicate}, nil
	case err != nil:
		return Result{TaskID: id}, fmt.Errorf("enqueueing %s: %w", id, err)
	}
	return Result{TaskID: id, Status: Enqueued}, nil
}
