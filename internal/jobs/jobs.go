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

// WithOp makes the job do op to the pair instead of activating it (docs/lifecycle.md). A
// deactivation's job carries the pair alone: the request's connections, dynamic variables and end
// user are dropped (so that a file of activations can be reused as is), and never stored.
//
// Given twice with different operations, it makes an Op that ParseOp refuses ("update+deactivate"),
// so that Enqueue fails instead of doing whichever the options named last.
func WithOp(op tasks.Op) Option {
	return func(p *tasks.Payload) {
		if p.Op != tasks.OpActivate && p.Op != op {
			op = p.Op + "+" + op
		}
		p.Op = op
	}
}

// WithEndUser lets the job create the request's end user, should the API not know them:
// e.CreateRequest(userId) is checked as versori.EndUserCreate.Validate checks it, and its
// credentials are sealed as the request's.
func WithEndUser(e *tasks.EndUser) Option { return func(p *tasks.Payload) { p.EndUser = e } }

// Enqueue validates req and queues its job, unless the pair's same operation is already queued,
// done or dead-lettered. A malformed request returns a *versori.ValidationError. The request's ULIDs
// are made canonical first, so the result's task id is the pair's whatever case req spells them in.
//
// Each operation is numbered in its pair's order (internal/pairorder): its task id is the ticket's
// (tasks.TaskIDAt), so that an operation repeating the pair's last one (activate after activate,
// deactivate after deactivate) is that one's Duplicate, or DeadLettered when that one is in the
// dead-letter store, and any other is queued after it. A deactivation of a pair whose activation is
// dead-lettered is therefore queued, and deactivates: the dead letter, requeued after it, ends
// superseded. An operation on a pair another queue owns is a Duplicate (with its Owner) and takes no
// number, so that it does not supersede that queue's job: send it to the owner's queue.
func (q *Queue) Enqueue(ctx context.Context, req versori.ActivationRequest, opts ...Option) (Result, error) {
	req, err := req.Canonical()
	id := tasks.TaskID(req.Pair())
	if err != nil {
		return Result{TaskID: id}, err
	}
	pl, err := q.payload(req, opts)
	if err != nil {
		return Result{TaskID: id}, err
	}
	if err := q.backfill(ctx); err != nil {
		return Result{TaskID: id}, err
	}
	// The pair is claimed before its operation is numbered: an operation on a pair another queue
	// owns is a Duplicate, and must take no number, or it would supersede that queue's job.
	claims, err := q.pairs.Claim(ctx, q.cfg.Queue, []string{id})
	if err != nil {
		return Result{TaskID: id}, err
	}
	c, err := q.own(ctx, id, claims[0])
	switch {
	case err != nil:
		return Result{TaskID: id}, err
	case c.State == pairs.Elsewhere:
		return Result{TaskID: id, Status: Duplicate, Owner: c.Owner}, nil
	}
	tickets, err := q.order.Next(ctx, pl.Op, []versori.Pair{req.Pair()})
	if err != nil {
		return Result{TaskID: id}, err
	}
	pl.Seq, id = tickets[0].Seq, tickets[0].TaskID
	has, err := q.store.Has(ctx, []string{id})
	if err != nil {
		return Result{TaskID: id}, err
	}
	if has[0] {
		return Result{TaskID: id, Status: DeadLettered}, nil
	}
	res, err := q.enqueueOwned(ctx, pl, c)
	if err == nil && res.Status == Enqueued && pl.Batch != "" {
		err = q.countQueued(ctx, pl.Batch, pl.Op, 1)
	}
	return res, err
}

// payload is the payload of the canonical request req with opts, checked as Enqueue checks it.
func (q *Queue) payload(req versori.ActivationRequest, opts []Option) (tasks.Payload, error) {
	pl := tasks.Payload{Request: req}
	for _, o := range opts {
		o(&pl)
	}
	op, err := tasks.ParseOp(string(pl.Op))
	if err != nil {
		return pl, fmt.Errorf("jobs: options: %w", err)
	}
	pl.Op = op // "activate" is OpActivate
	pl = forOp(pl)
	return pl, q.checkPayload(pl)
}

// checkOp refuses what pl's operation cannot mean: an update without dynamicVariables, which
// would set the pair's variables to none. An activation file run as updates by mistake would do
// that to every pair; clearing them takes an explicit {}.
func checkOp(pl tasks.Payload) error {
	if pl.Op == tasks.OpUpdate && (len(pl.Request.DynamicVariables) == 0 || string(pl.Request.DynamicVariables) == "null") {
		return &versori.ValidationError{Field: "dynamicVariables", Reason: "is required for an update: give {} to clear the pair's variables"}
	}
	return nil
}

// forOp is pl as its operation's job needs it: a deactivation's holds the pair alone.
func forOp(pl tasks.Payload) tasks.Payload {
	if pl.Op == tasks.OpDeactivate {
		pl.Request = versori.ActivationRequest{UserID: pl.Request.UserID, IntegrationID: pl.Request.IntegrationID}
		pl.EndUser = nil
	}
	return pl
}

// checkPayload checks what Enqueue checks of a payload beyond its request's validity: its end
// user's, and the credentials of both (CheckSecrets).
func (q *Queue) checkPayload(pl tasks.Payload) error {
	if err := checkOp(pl); err != nil {
		return err
	}
	if pl.EndUser != nil {
		if err := pl.EndUser.CreateRequest(pl.Request.UserID).Validate(); err != nil {
			return err
		}
	}
	return q.checkSecrets(pl)
}

// CheckSecrets returns the error Enqueue would for the credentials of req with opts (its
// connections', and its end user's primary connection's, WithEndUser): a *versori.ValidationError
// naming the connection, which also matches tasks.ErrPlaintextCredentials when they may be neither
// sealed (no keys) nor stored in plain text; or one for credentials that are tasks.Withheld, the
// placeholder displays show instead of them (only `dlq requeue --file` takes those, as the dead
// letter's own). Nil when req may be queued. A deactivation stores no credentials: nil.
func (q *Queue) CheckSecrets(req versori.ActivationRequest, opts ...Option) error {
	pl := tasks.Payload{Request: req}
	for _, o := range opts {
		o(&pl)
	}
	return q.checkSecrets(forOp(pl))
}

func (q *Queue) checkSecrets(pl tasks.Payload) error {
	for i, c := range pl.Request.Connections {
		if err := q.checkCredentials("connections["+strconv.Itoa(i)+"].credentials", c.Credentials); err != nil {
			return err
		}
	}
	if pl.EndUser != nil && pl.EndUser.PrimaryConnection != nil {
		return q.checkCredentials("endUser.primaryConnection.credentials", pl.EndUser.PrimaryConnection.Credentials)
	}
	return nil
}

// checkCredentials is CheckSecrets of the credentials at field.
func (q *Queue) checkCredentials(field string, creds []byte) error {
	switch {
	case len(creds) == 0:
	case tasks.IsWithheld(creds):
		return &versori.ValidationError{Field: field, Reason: "is the placeholder displays show instead of credentials: give the credentials themselves"}
	case q.cfg.Keys == nil && !q.cfg.AllowPlaintext:
		return &secretsError{field: field}
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

// countQueued adds n jobs of op to a batch's queued counters.
func (q *Queue) countQueued(ctx context.Context, id string, op tasks.Op, n int64) error {
	return batch.Write(ctx, q.rdb, q.cfg.Queue, map[string]map[string]int64{id: {batch.FieldQueued: n, batch.QueuedField(op): n}})
}

// enqueueClaimed queues a validated payload whose pair was checked against the dead-letter store and
// claimed in the pair registry with the result c. A pair another queue owns is a duplicate; one seen
// before is queued with a look-up first, since an earlier job for it may have activated it.
func (q *Queue) enqueueClaimed(ctx context.Context, pl tasks.Payload, c pairs.Claim) (Result, error) {
	id := tasks.TaskIDAt(pl.Request.Pair(), pl.Seq)
	c, err := q.own(ctx, tasks.TaskID(pl.Request.Pair()), c)
	switch {
	case err != nil:
		return Result{TaskID: id}, err
	case c.State == pairs.Elsewhere:
		return Result{TaskID: id, Status: Duplicate, Owner: c.Owner}, nil
	}
	return q.enqueueOwned(ctx, pl, c)
}

// own is the claim c of the pair whose TaskID is id once this queue has taken the pair over if it
// may (takeOverIfIdle): Elsewhere when another queue still owns it.
func (q *Queue) own(ctx context.Context, id string, c pairs.Claim) (pairs.Claim, error) {
	if c.State != pairs.Elsewhere {
		return c, nil
	}
	return q.takeOverIfIdle(ctx, id, c)
}

// enqueueOwned queues a validated payload whose pair this queue owns (claim c, not Elsewhere), was
// checked against the dead-letter store and, for an operation of the lifecycle, numbered. A pair
// seen before is queued with a look-up first, since an earlier job for it may have activated it.
func (q *Queue) enqueueOwned(ctx context.Context, pl tasks.Payload, c pairs.Claim) (Result, error) {
	// Not a deactivation's: it looks the pair up whatever it carries, and Reconcile would make it
	// count a pair it finds inactive as deactivated by an earlier attempt of its own, never
	// already_inactive.
	if c.State == pairs.Seen && pl.Op != tasks.OpDeactivate {
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
	// The task id of the payload's place in its pair's order, whatever NewTask names it by.
	t, err := tasks.NewTask(pl, asynq.TaskID(id),
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
