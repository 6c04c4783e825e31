package jobs

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/background"
	"github.com/versori/activator/internal/batch"
	"github.com/versori/activator/internal/ingest"
	"github.com/versori/activator/internal/pairs"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

// FileOptions configures one EnqueueFile run.
type FileOptions struct {
	// Path is the input: .jsonl/.ndjson, .csv, or "-" for JSONL on Stdin.
	Path  string
	Stdin io.Reader
	// Format is the input's format, "jsonl" or "csv", whatever Path's name; "" tells it from the
	// name (stdin: JSONL).
	Format string
	// Start, if set, is called once the run has started: the input is open, a CSV header read and
	// the pair registry up to date, and no row has been enqueued yet. A run whose EnqueueFile
	// returns before calling it did nothing.
	Start func()
	// RejectsPath receives malformed rows (default: PATH.rejects.jsonl beside the input, or
	// stdin.rejects.jsonl in the working directory for "-").
	RejectsPath string
	Batch       string
	// Concurrency is how many enqueues are in flight at once (default DefaultFileConcurrency).
	Concurrency int
	DryRun      bool // validate only
	// NoAutopipeline enqueues command by command, as before go-redis's autopipeliner (experimental
	// in go-redis v9.23) was used: an escape hatch, at about two thirds of the speed.
	NoAutopipeline bool
	Reconcile      bool // every job looks up its pair before activating
	// Op is what every row's job does to its pair (WithOp): activate (""), update, or deactivate,
	// whose jobs carry the row's pair alone, so that a file of activations can be reused as is.
	Op tasks.Op
	// Progress, if set, is called about every ProgressEvery with the counts so far.
	Progress      func(Summary)
	ProgressEvery time.Duration
}

// Summary counts what EnqueueFile did with a file's rows.
type Summary struct {
	Batch        string
	Rows         int // rows read, good and bad
	Enqueued     int
	Duplicates   int // already queued, running or done, here or on another queue
	OtherQueue   int // of Duplicates, those whose pair another queue owns
	DeadLettered int // already in the dead-letter store
	Rejected     int // malformed; see RejectsPath
	Failed       int // valid but not enqueued because Redis failed; re-run the file
	FailedLines  []int
	BytesRead    int64 // of the input so far, for progress against its size
	// CountErrors is 1 when the batch's queued counter could not be written at the end of the run, so
	// `enqueue status` undercounts what was queued; the jobs themselves are queued.
	CountErrors int
	Elapsed     time.Duration
	RejectsPath string
	// StaleRejects is a rejects file an earlier run left at the rejects path, removed because this
	// run had no rejects: a rejects file always holds the last run's.
	StaleRejects string
}

// InputError is EnqueueFile's error when the input cannot be used at all: it cannot be opened, its
// format cannot be told, or its CSV header is bad. The run did not start and did nothing.
type InputError struct{ Err error }

func (e *InputError) Error() string { return e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// Rate is rows handled per second.
func (s Summary) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.Enqueued+s.Duplicates+s.DeadLettered+s.Rejected+s.Failed) / s.Elapsed.Seconds()
}

// interruptGrace is how long an interrupted EnqueueFile waits for the enqueues it already sent.
const interruptGrace = 5 * time.Second

// counterInterval is how often EnqueueFile writes the batch's queued counter, and counterTimeout
// bounds one write.
const (
	counterInterval = 500 * time.Millisecond
	counterTimeout  = 2 * time.Second
)

// DefaultFileConcurrency is how many enqueues EnqueueFile keeps in flight unless told otherwise:
// they are what the autopipeliner batches.
const DefaultFileConcurrency = 256

// bulkPipeline configures the autopipeliner of EnqueueFile: up to four batches of 64 commands in
// flight at once, so that Redis runs one batch while this process encodes the next: with a single
// batch in flight (go-redis's default), every enqueue waits for the same round trip, and Redis and
// this process take turns. Order between batches does not matter: each enqueue waits for its own
// reply before its next command.
// go-redis keeps one autopipeliner per client, configured by its first caller: activator has no
// other, but an application that shares its client with a Producer and made one first gives
// EnqueueFile its configuration.
func bulkPipeline() *redis.AutoPipelineOptions {
	o := redis.DefaultBlockingAutoPipelineOptions()
	o.MaxBatchSize, o.MaxConcurrentBatches, o.Unordered = 64, 4, true
	return o
}

// maxFailedLines bounds how many failed line numbers a summary lists.
const maxFailedLines = 100

// chunkSize rows are checked against the dead-letter store in one command. Memory holds at most
// 2 × Concurrency + 1 chunks: one being enqueued per worker, Concurrency queued, one being read.
const chunkSize = 32

// EnqueueFile streams a file of activation requests into the queue: malformed rows go to the rejects
// file with their line, field and reason, and every good row is enqueued unless its pair is already
// queued, done or dead-lettered, so re-running a file (whole, or after a crash half-way) only adds
// what is missing. Memory stays flat whatever the file's size. It returns an error only when the run
// could not start (an *InputError when the input is at fault), the input could not be read, or ctx
// ended; per-row failures are counted in the Summary. When ctx ends, rows not yet sent to Redis are counted as failed at once, and enqueues
// already sent get interruptGrace to finish: those still waiting then (Redis hangs) are counted as
// failed too, and finish or fail in the background, bounded by the client's timeouts and retries.
func (q *Queue) EnqueueFile(ctx context.Context, o FileOptions) (Summary, error) {
	r, err := q.newFileRun(ctx, o)
	if err != nil {
		return r.sum, err
	}
	defer r.closeIn()
	if o.Start != nil {
		o.Start()
	}
	r.startCounter(ctx)
	r.startWorkers(ctx)
	stopProgress := r.startProgress()
	readErr := r.readUntilDone(ctx)
	finished := r.waitWorkers(ctx)
	r.stopCounting()
	stopProgress()
	return r.finish(ctx, finished, readErr)
}

// fileRun is one EnqueueFile run: a reader handing chunks of rows to workers that enqueue them and
// count what happened into one summary.
type fileRun struct {
	q *Queue
	// bulk enqueues through rdb's autopipeliner when there is one: see startWorkers.
	bulk    *Queue
	o       FileOptions
	start   time.Time
	in      *countingReader
	closeIn func()
	rd      *ingest.Reader
	rejects *ingest.RejectsWriter
	work    chan []ingest.Row
	workers sync.WaitGroup

	// The batch's queued counter is written behind, as the workers write theirs: one write per
	// flush interval rather than one per chunk.
	counter      *batch.Counter
	stopCounting context.CancelFunc
	counterDone  chan struct{}
	counterErr   error // the counter's last flush's; read once its loop is done

	mu  sync.Mutex
	sum Summary
	// abandoned is set when the run stops counting: workers still waiting on Redis after an
	// interrupt's grace no longer change the summary.
	abandoned bool
}

// newFileRun opens the input (and reads a CSV header) and, unless it is a dry run, brings the pair
// registry up to date. Its errors are the input's, as *InputError, or Redis's.
func (q *Queue) newFileRun(ctx context.Context, o FileOptions) (*fileRun, error) {
	r := &fileRun{q: q, bulk: q, start: time.Now(), sum: Summary{Batch: o.Batch}}
	op, err := tasks.ParseOp(string(o.Op))
	if err != nil {
		return r, fmt.Errorf("FileOptions.Op: %w", err)
	}
	o.Op = op // "activate" is OpActivate

	in, format, closeIn, err := openInput(o.Path, o.Format, o.Stdin)
	if err != nil {
		return r, &InputError{err}
	}
	r.in, r.closeIn = &countingReader{r: in}, closeIn
	if r.rd, err = ingest.NewReader(r.in, format); err != nil {
		closeIn()
		return r, &InputError{err}
	}
	if o.RejectsPath == "" {
		o.RejectsPath = ingest.RejectsPath(o.Path)
	}
	if err := checkRejectsPath(o.Path, o.RejectsPath); err != nil {
		closeIn()
		return r, &InputError{err}
	}
	if !o.DryRun {
		if err := q.backfill(ctx); err != nil {
			closeIn()
			return r, err
		}
	}
	if o.Concurrency < 1 {
		o.Concurrency = DefaultFileConcurrency
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = time.Second
	}
	r.o = o
	r.rejects = ingest.NewRejectsWriter(o.RejectsPath)
	r.work = make(chan []ingest.Row, o.Concurrency)
	return r, nil
}

// count changes the summary, unless the run has stopped counting.
func (r *fileRun) count(f func(*Summary)) {
	r.mu.Lock()
	if !r.abandoned {
		f(&r.sum)
	}
	r.mu.Unlock()
}

// startCounter starts writing the batch's queued counter. The loop's last flush, after the run,
// says whether the counter is complete. It goes through the queue's own client, which, unlike the
// autopipeliner, gives up when its context ends.
func (r *fileRun) startCounter(ctx context.Context) {
	r.counter = batch.NewCounter(r.q.rdb, r.q.cfg.Queue, batch.Config{Interval: counterInterval, Timeout: counterTimeout})
	var counting context.Context
	counting, r.stopCounting = context.WithCancel(context.WithoutCancel(ctx))
	r.counterDone = make(chan struct{})
	go func() {
		defer close(r.counterDone)
		r.counterErr = r.counter.Run(counting)
	}()
}

// startWorkers starts the workers that enqueue the chunks read.
func (r *fileRun) startWorkers(ctx context.Context) {
	// asynq sends one command per enqueue. Through go-redis's autopipeliner, the commands of the
	// enqueues in flight go to Redis batched, many per write and read, which halves Redis's CPU per
	// row and most of ours. A client without one (a Ring) enqueues command by command. The
	// autopipeliner runs commands on its own context, not ctx, so enqueueChunk checks ctx itself.
	if !r.o.NoAutopipeline {
		if ap, err := r.q.rdb.AutoPipelineWithOptions(bulkPipeline()); err == nil {
			r.bulk = New(ap, r.q.cfg)
		}
	}
	for range r.o.Concurrency {
		r.workers.Go(func() {
			// Until the reader is done, or ctx ends: a reader blocked on a pipe that stays open
			// may never close r.work, and chunks left in it count as failed anyway.
			for {
				select {
				case rows, ok := <-r.work:
					if !ok {
						return
					}
					r.enqueueChunk(ctx, rows)
				case <-ctx.Done():
					return
				}
			}
		})
	}
}

// readUntilDone runs read, and returns its error once it is done, or at once when ctx ends: a read
// blocked on a pipe that stays open (stdin) does not see ctx, and would hold an interrupted run
// until its writer closed it. Such a reader is left behind, blocked, until the input ends; what
// it reads then no longer counts.
func (r *fileRun) readUntilDone(ctx context.Context) error {
	done := make(chan error, 1)
	go func() { done <- r.read(ctx) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		select {
		case err := <-done:
			return err
		default:
			return nil
		}
	}
}

// startProgress calls the Progress option about every ProgressEvery until stopped.
func (r *fileRun) startProgress() (stop func()) {
	if r.o.Progress == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		background.Every(ctx, r.o.ProgressEvery, background.AfterInterval, func(context.Context) {
			r.mu.Lock()
			s := r.sum
			r.mu.Unlock()
			s.Elapsed = time.Since(r.start)
			s.BytesRead = r.in.n.Load()
			r.o.Progress(s)
		})
	})
	return func() { cancel(); wg.Wait() }
}

// read reads the input to its end (or until ctx ends), writes malformed rows to the rejects file
// and hands the good ones to the workers in chunks. Its error is the input's or the rejects file's.
func (r *fileRun) read(ctx context.Context) error {
	defer close(r.work)
	// send hands a chunk to the workers; one left unsent when ctx ends is counted as failed later.
	send := func(chunk []ingest.Row) {
		select {
		case r.work <- chunk:
		case <-ctx.Done():
		}
	}
	chunk := make([]ingest.Row, 0, chunkSize)
	defer func() {
		if len(chunk) > 0 {
			send(chunk)
		}
	}()
	for ctx.Err() == nil {
		row, rej, err := r.rd.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", r.o.Path, err)
		}
		r.count(func(s *Summary) { s.Rows++ })
		if rej == nil {
			rej = r.secretsReject(row)
		}
		if rej != nil {
			if err := r.rejects.Write(*rej); err != nil {
				return fmt.Errorf("writing rejects: %w", err)
			}
			r.count(func(s *Summary) { s.Rejected++ })
			continue
		}
		chunk = append(chunk, *row)
		if len(chunk) == chunkSize {
			send(chunk)
			chunk = make([]ingest.Row, 0, chunkSize)
		}
	}
	return nil
}

// secretsReject is the reject of a row its operation cannot take (checkOp) or whose credentials may
// not be queued (CheckSecrets), nil for
// a row that may. Its Raw is the row as read back into JSON, as the input holds it.
func (r *fileRun) secretsReject(row *ingest.Row) *ingest.Reject {
	pl := r.payload(row)
	err := checkOp(pl)
	if err == nil {
		err = r.q.checkSecrets(pl)
	}
	if err == nil {
		return nil
	}
	var ve *versori.ValidationError
	if !errors.As(err, &ve) {
		ve = &versori.ValidationError{Reason: err.Error()}
	}
	raw, _ := json.Marshal(row.Request)
	if row.EndUser != nil {
		if end, err := json.Marshal(row.EndUser); err == nil {
			raw = append(append(append(raw[:len(raw)-1], `,"endUser":`...), end...), '}')
		}
	}
	return &ingest.Reject{Line: row.Line, Field: ve.Field, Reason: ve.Reason, Raw: string(raw)}
}

// payload is the payload of a row's job, before its place in the pair's order is known.
func (r *fileRun) payload(row *ingest.Row) tasks.Payload {
	return forOp(tasks.Payload{Request: row.Request, EndUser: row.EndUser, Batch: r.o.Batch, Reconcile: r.o.Reconcile, Op: r.o.Op})
}

// waitWorkers waits for the workers; after ctx ends it waits interruptGrace at most, and says
// whether they finished. Then the run stops counting: rows read but neither enqueued nor settled
// otherwise (left unsent, or still in flight) count as failed.
func (r *fileRun) waitWorkers(ctx context.Context) (finished bool) {
	done := make(chan struct{})
	go func() { r.workers.Wait(); close(done) }()
	finished = true
	select {
	case <-done:
	case <-ctx.Done():
		// The autopipeliner does not see ctx: an enqueue already sent to a hung Redis waits for the
		// client's read timeout, retried, which was 40 s in all.
		t := time.NewTimer(interruptGrace)
		select {
		case <-done:
		case <-t.C:
			finished = false
		}
		t.Stop()
	}
	r.mu.Lock()
	r.abandoned = true
	s := &r.sum
	s.Failed = s.Rows - s.Enqueued - s.Duplicates - s.DeadLettered - s.Rejected
	r.mu.Unlock()
	return finished
}

// finish completes the summary once everything has stopped.
func (r *fileRun) finish(ctx context.Context, finished bool, readErr error) (Summary, error) {
	r.mu.Lock()
	sum := r.sum
	r.mu.Unlock()
	if finished {
		<-r.counterDone
		if r.counterErr != nil {
			sum.CountErrors++
		}
	} else {
		// Redis hangs: the counter's last write would wait for it too, and misses the rows in flight.
		sum.CountErrors++
	}
	if err := r.rejects.Close(); err != nil && readErr == nil {
		readErr = fmt.Errorf("writing rejects: %w", err)
	}
	sum.Elapsed = time.Since(r.start)
	sum.BytesRead = r.in.n.Load()
	if r.rejects.Count() > 0 {
		sum.RejectsPath = r.rejects.Path()
	} else if removed, err := removeStaleRejects(r.o.Path, r.rejects.Path()); err != nil && readErr == nil {
		readErr = err
	} else if removed {
		sum.StaleRejects = r.rejects.Path()
	}
	if readErr == nil && ctx.Err() != nil {
		readErr = fmt.Errorf("interrupted after %d rows: re-run the same file to add the rest: %w", sum.Rows, context.Cause(ctx))
	}
	return sum, readErr
}

// enqueueChunk enqueues one chunk of rows: one pipeline claims their pairs, one numbers the
// operations of those this queue owns (internal/pairorder), one command checks the tickets' task
// ids against the dead-letter store, then each is enqueued.
func (r *fileRun) enqueueChunk(ctx context.Context, rows []ingest.Row) {
	q, o := r.bulk, r.o
	fail := func(rows []ingest.Row) {
		r.count(func(s *Summary) {
			s.Failed += len(rows)
			for _, row := range rows {
				if len(s.FailedLines) < maxFailedLines {
					s.FailedLines = append(s.FailedLines, row.Line)
				}
			}
		})
	}
	// failRows fails the rows at the indices given.
	failRows := func(idx []int) {
		picked := make([]ingest.Row, len(idx))
		for j, i := range idx {
			picked[j] = rows[i]
		}
		fail(picked)
	}
	var queued int64
	defer func() {
		if queued > 0 {
			r.counter.Add(o.Batch, batch.FieldQueued, queued)
			r.counter.Add(o.Batch, batch.QueuedField(o.Op), queued)
		}
	}()
	if ctx.Err() != nil {
		fail(rows)
		return
	}
	pairList := make([]versori.Pair, len(rows))
	ids := make([]string, len(rows))
	for i, row := range rows {
		pairList[i] = row.Request.Pair()
		ids[i] = tasks.TaskID(pairList[i])
	}
	if o.DryRun {
		// Nothing is claimed or numbered: the dead letter looked for is the pair's first activation's.
		dead, err := q.store.Has(ctx, ids)
		if err != nil {
			fail(rows)
			return
		}
		for i := range rows {
			r.count(func(s *Summary) {
				if dead[i] {
					s.DeadLettered++
				} else {
					s.Enqueued++
				}
			})
		}
		return
	}
	// One claim for the chunk's pairs, by the pair's own task id. A pair another queue owns is a
	// duplicate, and its operation takes no number (see Enqueue).
	claims, err := q.pairs.Claim(ctx, q.cfg.Queue, ids)
	if err != nil {
		fail(rows)
		return
	}
	var owned []int // indices of the rows whose pair this queue owns
	for i := range rows {
		c, err := q.own(ctx, ids[i], claims[i])
		switch {
		case err != nil:
			fail(rows[i : i+1])
			continue
		case c.State == pairs.Elsewhere:
			r.count(func(s *Summary) { s.Duplicates++; s.OtherQueue++ })
			continue
		}
		claims[i] = c
		owned = append(owned, i)
	}
	if len(owned) == 0 {
		return
	}
	// Each owned row's place in its pair's order, in one pipeline, then one look-up of the tickets'
	// task ids in the dead-letter store.
	ownedPairs := make([]versori.Pair, len(owned))
	for j, i := range owned {
		ownedPairs[j] = pairList[i]
	}
	tickets, err := q.order.Next(ctx, o.Op, ownedPairs)
	if err != nil {
		failRows(owned)
		return
	}
	ticketIDs := make([]string, len(owned))
	for j, t := range tickets {
		ticketIDs[j] = t.TaskID
	}
	dead, err := q.store.Has(ctx, ticketIDs)
	if err != nil {
		failRows(owned)
		return
	}
	for j, i := range owned {
		if ctx.Err() != nil {
			failRows(owned[j:])
			return
		}
		if dead[j] {
			r.count(func(s *Summary) { s.DeadLettered++ })
			continue
		}
		pl := r.payload(&rows[i])
		pl.Seq = tickets[j].Seq
		res, err := q.enqueueOwned(ctx, pl, claims[i])
		switch {
		case err != nil:
			fail(rows[i : i+1])
		case res.Status == Duplicate:
			r.count(func(s *Summary) { s.Duplicates++ })
		default:
			queued++
			r.count(func(s *Summary) { s.Enqueued++ })
		}
	}
}

// removeStaleRejects removes the rejects file an earlier run of the same input left at path, if
// there is one, and says whether there was. It removes only a regular file whose first line is a
// reject (line and reason), never whatever else an operator named with --rejects, and never the
// shared rejects file of stdin, which may be another run's.
func removeStaleRejects(input, path string) (bool, error) {
	if input == "-" {
		return false, nil
	}
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || !holdsRejects(path) {
		return false, nil
	}
	if err := os.Remove(path); err != nil {
		return false, fmt.Errorf("removing the rejects file of an earlier run: %w", err)
	}
	return true, nil
}

// holdsRejects reports whether the file's first line is a reject as ingest writes it.
func holdsRejects(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	line, err := bufio.NewReaderSize(f, 8<<10).ReadSlice('\n')
	if err != nil && len(line) == 0 {
		return false
	}
	var rej struct {
		Line   *int    `json:"line"`
		Reason *string `json:"reason"`
	}
	return json.Unmarshal(line, &rej) == nil && rej.Line != nil && rej.Reason != nil
}

// checkRejectsPath refuses, before anything is queued, a rejects path the run could not write or
// that is its own input: writing rejects over the input would lose every row not yet read.
func checkRejectsPath(input, rejects string) error {
	if fi, err := os.Stat(rejects); err == nil {
		if !fi.Mode().IsRegular() {
			return fmt.Errorf("rejects file %s is not a regular file: pass another --rejects", rejects)
		}
		if in, err := os.Stat(input); err == nil && input != "-" && os.SameFile(in, fi) {
			return fmt.Errorf("rejects file %s is the input itself: pass another --rejects", rejects)
		}
		if fi.Size() > 0 && !holdsRejects(rejects) {
			return fmt.Errorf("rejects file %s holds something other than rejects, which this run would overwrite: pass another --rejects", rejects)
		}
	}
	dir := filepath.Dir(rejects)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("rejects file %s: its directory %s does not exist: pass another --rejects", rejects, dir)
	}
	return nil
}

// openInput opens a file of activation requests, or stdin for "-", and tells its format: the one
// named, or else the path's (stdin: JSONL).
func openInput(path, format string, stdin io.Reader) (in io.Reader, f ingest.Format, closeIn func(), err error) {
	if f, err = ingest.FormatFor(path, format); err != nil {
		return nil, f, nil, err
	}
	if path == "-" {
		if stdin == nil {
			stdin = os.Stdin
		}
		return stdin, f, func() {}, nil
	}
	file, err := os.Open(path)
	if err != nil {
		return nil, f, nil, err
	}
	// A directory opens, and fails only at the first read: say so now, before anything starts.
	if fi, err := file.Stat(); err == nil && fi.IsDir() {
		file.Close()
		return nil, f, nil, fmt.Errorf("%s is a directory, not a file of activation requests", path)
	}
	return file, f, func() { file.Close() }, nil
}

// countingReader counts the bytes read through it, for progress.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
