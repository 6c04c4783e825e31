// Package producer puts activation jobs into the queue from a vendor's own Go code: one at a time (a
// signup handler, say) or in bulk from a file. Every way in is duplicate-safe: a pair already queued,
// running, done or dead-lettered is not queued again, on this queue or any other, and a pair that
// had a job before whose record is gone (retention ended, a purge) is queued with a look-up first.
//
// What an operator does with the queue afterwards (dead letters, pausing, batch status) is in
// package inspect.
package producer

import (
	"context"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/jobs"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

// Config configures a Producer. Its fields:
//
//   - Queue string: the queue jobs go to ("activations").
//   - MaxRetry int: failures before a job is dead-lettered (25); waits a 429 asks for do not count.
//   - Retention time.Duration: how long a finished job's record is kept (720h); while it is,
//     enqueueing the same pair again is a Duplicate.
//   - Timeout time.Duration: the timeout of one attempt (2m), kept in whole seconds.
//   - Keys *tasks.Keyring: seal end users' credentials in Redis with the first key
//     (tasks.ParseKeyring of ACTIVATOR_ENCRYPTION_KEYS). Without keys, a request with credentials
//     is refused (tasks.ErrPlaintextCredentials) unless AllowPlaintext bool.
//
// A field left zero (or negative, or a Timeout under a second) takes DefaultConfig's, shown in
// brackets. Config.Validate refuses those values instead, for a configuration read from a user whose
// every field was given (the enqueue command's); its errors name the field
// ("producer: MaxRetry must be at least 1, got 0"). FileOptions.Validate does the same for
// FileOptions.Concurrency.
type Config = jobs.Config

// DefaultConfig is the configuration used for fields left zero: the enqueue command's defaults.
func DefaultConfig() Config { return jobs.DefaultConfig() }

// Status is what Enqueue did with a request, a string: Enqueued, Duplicate or DeadLettered.
type Status = jobs.Status

// The statuses.
const (
	Enqueued     = jobs.Enqueued     // a new job was queued
	Duplicate    = jobs.Duplicate    // the pair is already queued, running or done, here or on another queue: nothing to do
	DeadLettered = jobs.DeadLettered // the pair is in the dead-letter store: replay it from there
)

// Result is what Enqueue did with one request. Its fields:
//
//   - TaskID string: the pair's task id (also a dead letter's ID), whatever the Status.
//   - Status Status: Enqueued, Duplicate or DeadLettered.
//   - Owner string: when Status is Duplicate because another queue owns the pair, that queue.
type Result = jobs.Result

// Option changes one enqueued job: WithBatch, WithReconcile, WithEndUser, Update and Deactivate
// make them. Update and Deactivate together are refused: Enqueue returns an error naming both.
type Option = jobs.Option

// WithBatch counts the job under batch id, for `enqueue status`.
func WithBatch(id string) Option { return jobs.WithBatch(id) }

// WithReconcile makes the job look up its pair before activating: for a pair that may have been
// activated by other means.
func WithReconcile() Option { return jobs.WithReconcile() }

// Update makes the job update the pair (docs/lifecycle.md): set its dynamic variables to the
// request's when it is active (PUT /activations/{id}/variables), activate it as the request says
// when it is not.
func Update() Option { return jobs.WithOp(tasks.OpUpdate) }

// Deactivate makes the job deactivate the pair: delete its activation, if it has one. The job
// carries the pair alone; the request's other fields are not needed and not stored, so a request of
// just UserID and IntegrationID will do.
func Deactivate() Option { return jobs.WithOp(tasks.OpDeactivate) }

// WithEndUser lets the job create the request's end user should the API not know them: a
// CreateEndUser of e with the request's UserID as externalId, then the activation. Its
// PrimaryConnection, with a Name, Credentials (a JSON object) and Variables (empty, not nil, for
// none), is required: Enqueue refuses e otherwise with a *versori.ValidationError naming the field
// ("endUser.primaryConnection.name"). Its credentials are sealed as the request's (Config.Keys).
func WithEndUser(e tasks.EndUser) Option { return jobs.WithEndUser(&e) }

// FileOptions configures one EnqueueFile run. Its fields:
//
//   - Path string: the input, .jsonl/.ndjson or .csv, or "-" for JSONL read from Stdin io.Reader.
//   - Format string: "jsonl" or "csv" whatever Path's name (stdin too); "" tells it from the name.
//   - Start func(): if set, called once the input is open (a CSV header read) and before any row
//     is enqueued; a run that fails before calling it did nothing.
//   - RejectsPath string: where malformed rows go; empty: PATH.rejects.jsonl beside the input
//     (stdin.rejects.jsonl in the working directory for "-").
//   - Batch string: the batch id stored with every job, for `enqueue status` (inspect's Batch).
//   - Concurrency int: enqueues in flight (default DefaultFileConcurrency).
//   - DryRun bool: validate the rows only; nothing is queued.
//   - NoAutopipeline bool: enqueue command by command instead of through go-redis's
//     autopipeliner (an escape hatch, at about two thirds of the speed).
//   - Reconcile bool: every job looks up its pair before activating (WithReconcile).
//   - Op tasks.Op: what every row's job does, tasks.OpActivate (""), tasks.OpUpdate (Update) or
//     tasks.OpDeactivate (Deactivate), whose rows need only userId and integrationId (their other
//     fields are read, checked and dropped, so that a file of activations can be reused as is).
//   - Rows may carry endUser beside the request (WithEndUser): see internal/ingest's format.
//   - Progress func(Summary), ProgressEvery time.Duration: if Progress is set, it is called about
//     every ProgressEvery (default 1s) with the counts so far.
type FileOptions = jobs.FileOptions

// Summary counts what EnqueueFile did with a file's rows. Its fields:
//
//   - Batch string: the run's batch id.
//   - Rows int: rows read, good and bad.
//   - Enqueued, Duplicates, OtherQueue, DeadLettered int: rows queued; rows whose pair is already
//     queued, running or done (OtherQueue of them because another queue owns it); rows whose pair
//     is in the dead-letter store.
//   - Rejected int, RejectsPath string: malformed rows, and the file they were written to.
//   - StaleRejects string: a rejects file an earlier run left at the rejects path, removed since
//     this run had no rejects.
//   - Failed int, FailedLines []int: valid rows not queued because Redis failed (the first lines
//     of them); re-run the file.
//   - CountErrors int: 1 when the batch's queued counter could not be written at the end, so
//     `enqueue status` undercounts; the jobs themselves are queued.
//   - BytesRead int64, Elapsed time.Duration: how far into the input, and how long; the Rate
//     method gives rows handled per second.
type Summary = jobs.Summary

// Producer enqueues activation jobs. It is safe for concurrent use; make one per process.
type Producer struct {
	q *jobs.Queue
}

// New returns a Producer that enqueues through rdb. The producer holds no resources of its own: the
// caller closes rdb when done. EnqueueFile enqueues through rdb's autopipeliner (one per client in
// go-redis, configured by its first caller), which lives until rdb is closed; code that shares rdb
// must not close that autopipeliner while a file runs.
func New(rdb redis.UniversalClient, cfg Config) *Producer {
	return &Producer{q: jobs.New(rdb, cfg)}
}

// Enqueue validates req and queues a job for it, unless its pair already has one or a dead letter.
// An invalid request is a *versori.ValidationError naming the field; nothing is queued. So are
// credentials that may not be stored (CheckSecrets); with Keys they are sealed before they reach
// Redis.
//
// The job activates the pair, or does what Update or Deactivate says. Operations on a pair take
// effect in the order they are enqueued: an earlier job still waiting when a later operation is
// enqueued ends superseded, doing nothing. An operation that repeats the pair's last one (activate
// after activate or update, deactivate after deactivate) is that one's Duplicate (DeadLettered
// when that one is in the dead-letter store), as a second activation always was; any other is
// queued (a deactivation of a pair whose activation is dead-lettered too).
func (p *Producer) Enqueue(ctx context.Context, req versori.ActivationRequest, opts ...Option) (Result, error) {
	return p.q.Enqueue(ctx, req, opts...)
}

// CheckSecrets returns the error Enqueue would give req for its credentials, before anything is
// queued: with no Keys and no AllowPlaintext, a request with credentials is refused with an error
// that is a *versori.ValidationError naming the connection and matches
// tasks.ErrPlaintextCredentials (errors.Is). A caller queuing several requests as one checks them
// all first.
// The options are Enqueue's: WithEndUser's credentials are checked too, and a Deactivate stores
// none.
func (p *Producer) CheckSecrets(req versori.ActivationRequest, opts ...Option) error {
	return p.q.CheckSecrets(req, opts...)
}

// InputError is EnqueueFile's error when the input cannot be used at all (it cannot be opened, its
// format cannot be told, its CSV header is bad): the run did not start and did nothing. Its field
// Err is the cause.
type InputError = jobs.InputError

// EnqueueFile enqueues every good row of a JSONL or CSV file. Malformed rows go to a rejects file
// with their line, field and reason, and the rest of the file still runs; re-running a file only
// adds what is missing. It returns an error only when the run could not start (an *InputError when
// the input is at fault), the input could not be read, or ctx ended; per-row failures are counted
// in the Summary.
func (p *Producer) EnqueueFile(ctx context.Context, o FileOptions) (Summary, error) {
	return p.q.EnqueueFile(ctx, o)
}

// DefaultFileConcurrency is how many enqueues EnqueueFile keeps in flight when FileOptions does
// not say.
const DefaultFileConcurrency = jobs.DefaultFileConcurrency

// Queue is the name of the queue the producer enqueues to.
func (p *Producer) Queue() string { return p.q.Name() }
