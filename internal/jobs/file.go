package jobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/batch"
	"github.com/versori/activator/internal/flushloop"
	"github.com/versori/activator/internal/ingest"
	"github.com/versori/activator/internal/pairs"
	"github.com/versori/activator/tasks"
)

// FileOptions configures one EnqueueFile run.
type FileOptions struct {
	// Path is the input: .jsonl/.ndjson, .csv, or "-" for JSONL on Stdin.
	Path  string
	Stdin io.Reader
	// RejectsPath receives malformed rows (default ingest.RejectsPath(Path)).
	RejectsPath string
	Batch       string
	// Concurrency is how many enqueues are in flight at once (default DefaultFileConcurrency).
	Concurrency int
	DryRun      bool // validate only
	// NoAutopipeline enqueues command by command, as before go-redis's autopipeliner (experimental
	// in go-redis v9.23) was used: an escape hatch, at about two thirds of the speed.
	NoAutopipeline bool
	Reconcile      bool // every job looks up its pair before activating
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
}

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
// flight at once, so that Redis runs one batch while this process encodes the next. With a single
// batch in flight (go-redis's default), every enqueue waited for the same round trip and Redis and
// this process took turns: 1M rows ran at 36-43k rows/s instead of 48-51k (BENCHMARKS.md). Order
// between batches does not matter: each enqueue waits for its own reply before its next command.
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
// could not start, the input could not be read, or ctx ended; per-row failures are counted in the
// Summary. When ctx ends, rows not yet sent to Redis are counted as failed at once, and enqueues
// already sent get interruptGrace to finish: those still waiting then (Redis hangs) are counted as
// failed too, and finish or fail in the background, bounded by the client's timeouts and retries.
func (q *Queue) EnqueueFile(ctx context.Context, o FileOptions) (Summary, error) {
	start := time.Now()
	sum := Summary{Batch: o.Batch}
	in, format, closeIn, err := openInput(o.Path, o.Stdin)
	if err != nil {
		return sum, err
	}
	defer closeIn()
	if !o.DryRun {
		if err := q.backfill(ctx); err != nil {
			return sum, err
		}
	}
	counted := &countingReader{r: in}
	rd, err := ingest.NewReader(counted, format)
	if err != nil {
		return sum, err
	}
	if o.RejectsPath == "" {
		o.RejectsPath = ingest.RejectsPath(o.Path)
	}
	rejects := ingest.NewRejectsWriter(o.RejectsPath)
	if o.Concurrency < 1 {
		o.Concurrency = DefaultFileConcurrency
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = time.Second
	}

	// asynq sends one command per enqueue. Through go-redis's autopipeliner, the commands of the
	// enqueues in flight go to Redis batched, many per write and read, which halves Redis's CPU per
	// row and most of ours. A client without one (a Ring) enqueues command by command. The
	// autopipeliner runs commands on its own context, not ctx, so enqueueChunk checks ctx itself.
	bulk := q
	if !o.NoAutopipeline {
		if ap, err := q.rdb.AutoPipelineWithOptions(bulkPipeline()); err == nil {
			bulk = New(ap, q.cfg)
		}
	}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		work = make(chan []ingest.Row, o.Concurrency)
	)
	// abandoned is set under mu when the run stops counting: workers still waiting on Redis after an
	// interrupt's grace no longer change the summary.
	abandoned := false
	count := func(f func(*Summary)) {
		mu.Lock()
		if !abandoned {
			f(&sum)
		}
		mu.Unlock()
	}
	// The batch's queued counter is written behind, as the workers write theirs: one write per
	// flush interval rather than one per chunk. The loop's last flush, after the run, says whether
	// the counter is complete. It goes through p's own client, which, unlike the autopipeliner,
	// gives up when its context ends.
	counter := batch.NewCounter(q.rdb, q.cfg.Queue, counterInterval)
	counting, stopCounting := context.WithCancel(context.WithoutCancel(ctx))
	counterDone := make(chan struct{})
	var counterErr error // written by the loop; read once it is done
	go func() {
		defer close(counterDone)
		flushloop.Run(counting, counterInterval, nil, func(ctx context.Context) {
			// Bounded, so that a hung Redis holds up the end of an interrupted run by seconds.
			ctx, cancel := context.WithTimeout(ctx, counterTimeout)
			defer cancel()
			counterErr = counter.Flush(ctx)
		})
	}()
	for range o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for rows := range work {
				bulk.enqueueChunk(ctx, rows, o, counter, count)
			}
		}()
	}
	stopProgress := q.progress(o, &mu, &sum, start, counted.n.Load)

	// send hands a chunk to the workers; one left unsent when ctx ends is counted as failed below.
	send := func(chunk []ingest.Row) {
		select {
		case work <- chunk:
		case <-ctx.Done():
		}
	}
	var readErr error
	chunk := make([]ingest.Row, 0, chunkSize)
	for ctx.Err() == nil {
		row, rej, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			readErr = fmt.Errorf("reading %s: %w", o.Path, err)
			break
		}
		count(func(s *Summary) { s.Rows++ })
		if rej != nil {
			if err := rejects.Write(*rej); err != nil {
				readErr = fmt.Errorf("writing rejects: %w", err)
				break
			}
			count(func(s *Summary) { s.Rejected++ })
			continue
		}
		chunk = append(chunk, *row)
		if len(chunk) == chunkSize {
			send(chunk)
			chunk = make([]ingest.Row, 0, chunkSize)
		}
	}
	if len(chunk) > 0 {
		send(chunk)
	}
	close(work)
	workersDone := make(chan struct{})
	go func() { wg.Wait(); close(workersDone) }()
	finished := true
	select {
	case <-workersDone:
	case <-ctx.Done():
		// The autopipeliner does not see ctx: an enqueue already sent to a hung Redis waits for the
		// client's read timeout, retried, which was 40 s in all.
		t := time.NewTimer(interruptGrace)
		select {
		case <-workersDone:
		case <-t.C:
			finished = false
		}
		t.Stop()
	}
	mu.Lock()
	abandoned = true
	// Rows read but neither enqueued nor settled otherwise: left unsent, or still in flight.
	sum.Failed = sum.Rows - sum.Enqueued - sum.Duplicates - sum.DeadLettered - sum.Rejected
	mu.Unlock()
	stopCounting()
	stopProgress()
	if finished {
		<-counterDone
		if counterErr != nil {
			sum.CountErrors++
		}
	} else {
		// Redis hangs: the counter's last write would wait for it too, and misses the rows in flight.
		sum.CountErrors++
	}
	if err := rejects.Close(); err != nil && readErr == nil {
		readErr = fmt.Errorf("writing rejects: %w", err)
	}
	sum.Elapsed = time.Since(start)
	sum.BytesRead = counted.n.Load()
	if rejects.Count() > 0 {
		sum.RejectsPath = rejects.Path()
	}
	if readErr == nil && ctx.Err() != nil {
		readErr = fmt.Errorf("interrupted after %d rows: re-run the same file to add the rest: %w", sum.Rows, context.Cause(ctx))
	}
	return sum, readErr
}

func (q *Queue) enqueueChunk(ctx context.Context, rows []ingest.Row, o FileOptions, counter *batch.Counter, count func(func(*Summary))) {
	fail := func(rows []ingest.Row) {
		count(func(s *Summary) {
			s.Failed += len(rows)
			for _, r := range rows {
				if len(s.FailedLines) < maxFailedLines {
					s.FailedLines = append(s.FailedLines, r.Line)
				}
			}
		})
	}
	var queued int64
	defer func() {
		if queued > 0 {
			counter.Add(o.Batch, batch.FieldQueued, queued)
		}
	}()
	if ctx.Err() != nil {
		fail(rows)
		return
	}
	ids := make([]string, len(rows))
	for i, r := range rows {
		ids[i] = tasks.TaskID(r.Request.Pair())
	}
	dead, err := q.store.Has(ctx, ids)
	if err != nil {
		fail(rows)
		return
	}
	// One claim for the chunk's live pairs; a dry run claims nothing.
	var live []string
	for i, id := range ids {
		if !dead[i] {
			live = append(live, id)
		}
	}
	var claims []pairs.Claim
	if !o.DryRun && len(live) > 0 {
		if claims, err = q.pairs.Claim(ctx, q.cfg.Queue, live); err != nil {
			fail(rows)
			return
		}
	}
	next := 0
	for i, r := range rows {
		if ctx.Err() != nil {
			fail(rows[i:])
			return
		}
		if dead[i] {
			count(func(s *Summary) { s.DeadLettered++ })
			continue
		}
		if o.DryRun {
			count(func(s *Summary) { s.Enqueued++ })
			continue
		}
		c := claims[next]
		next++
		res, err := q.enqueueClaimed(ctx, tasks.Payload{Request: r.Request, Batch: o.Batch, Reconcile: o.Reconcile}, c)
		switch {
		case err != nil:
			fail(rows[i : i+1])
		case res.Status == Duplicate:
			count(func(s *Summary) {
				s.Duplicates++
				if res.Owner != "" {
					s.OtherQueue++
				}
			})
		default:
			queued++
			count(func(s *Summary) { s.Enqueued++ })
		}
	}
}

func (q *Queue) progress(o FileOptions, mu *sync.Mutex, sum *Summary, start time.Time, bytesRead func() int64) (stop func()) {
	if o.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(o.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				mu.Lock()
				s := *sum
				mu.Unlock()
				s.Elapsed = time.Since(start)
				s.BytesRead = bytesRead()
				o.Progress(s)
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// openInput opens a file of activation requests, or stdin for "-" (JSONL), and tells its format.
func openInput(path string, stdin io.Reader) (in io.Reader, f ingest.Format, closeIn func(), err error) {
	if f, err = ingest.FormatOf(path); err != nil {
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
