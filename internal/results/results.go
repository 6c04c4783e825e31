// Package results records each finished job's activation id as its asynq task result (what
// `asynq.Inspector.GetTaskInfo` and the queue UI show), written behind the job: results are buffered
// and flushed every interval, or sooner once many are waiting, in one pipelined round trip. A job
// then costs Redis nothing beyond asynq's own commands but a share of a flush, where asynq's
// ResultWriter costs one round trip inside the job, while it holds its slot.
//
// The result is informational: the activation is in Versori and the job is complete either way. A
// worker killed with SIGKILL loses the results of its last interval; while Redis is unreachable up
// to MaxPending results wait, and beyond that the oldest are dropped and counted.
package results

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/flushloop"
	"github.com/versori/activator/internal/rediskeys"
)

// Config configures a Writer.
type Config struct {
	// Interval is how often results are flushed (default 100 ms).
	Interval time.Duration
	// FlushAt flushes early once this many results wait (default 512).
	FlushAt int
	// MaxPending bounds the results kept while Redis does not answer (default 100,000).
	MaxPending int
	Logger     *slog.Logger
}

// Writer buffers job results and writes them to their asynq tasks. It is safe for concurrent use.
type Writer struct {
	rdb  redis.UniversalClient
	cfg  Config
	kick chan struct{}

	mu      sync.Mutex
	pending []entry

	dropped atomic.Int64
}

type entry struct{ queue, taskID, result string }

// New returns a Writer on rdb; Run must be running for results to be written.
func New(rdb redis.UniversalClient, cfg Config) *Writer {
	if cfg.Interval <= 0 {
		cfg.Interval = 100 * time.Millisecond
	}
	if cfg.FlushAt <= 0 {
		cfg.FlushAt = 512
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = 100_000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Writer{rdb: rdb, cfg: cfg, kick: make(chan struct{}, 1)}
}

// Add records result for the task taskID of queue, to be written by the next flush.
func (w *Writer) Add(queue, taskID, result string) {
	w.mu.Lock()
	w.pending = append(w.pending, entry{queue: queue, taskID: taskID, result: result})
	n := len(w.pending)
	w.mu.Unlock()
	if n == w.cfg.FlushAt {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

// Dropped is how many results were dropped because Redis did not answer for too long.
func (w *Writer) Dropped() int64 { return w.dropped.Load() }

// Run flushes until ctx is done, then flushes once more.
func (w *Writer) Run(ctx context.Context) {
	flushloop.Run(ctx, w.cfg.Interval, w.kick, func(ctx context.Context) {
		if err := w.Flush(ctx); err != nil && ctx.Err() == nil {
			w.cfg.Logger.Warn("could not write job results; they wait for the next flush", "error", err.Error())
		}
	})
}

// maxKeys bounds the keys of one script call, so that one call never blocks Redis for long.
const maxKeys = 500

// Flush writes the results gathered so far in one pipelined round trip. On failure they are kept
// for the next flush, up to MaxPending.
func (w *Writer) Flush(ctx context.Context) error {
	w.mu.Lock()
	batch := w.pending
	w.pending = nil
	w.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	err := w.write(ctx, batch)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Redis restarted since the script was loaded: load it and send the batch again.
		if err = writeScript.Load(ctx, w.rdb).Err(); err == nil {
			err = w.write(ctx, batch)
		}
	}
	if err != nil {
		w.requeue(batch)
		return fmt.Errorf("job results: %w", err)
	}
	return nil
}

// write sends batch in one pipelined round trip.
func (w *Writer) write(ctx context.Context, batch []entry) error {
	// A script's keys must share a hash slot on Redis Cluster: asynq's task keys share their queue's.
	byQueue := map[string][]entry{}
	for _, e := range batch {
		byQueue[e.queue] = append(byQueue[e.queue], e)
	}
	pipe := w.rdb.Pipeline()
	for q, es := range byQueue {
		for len(es) > 0 {
			n := min(len(es), maxKeys)
			keys, args := make([]string, n), make([]any, n)
			for i, e := range es[:n] {
				keys[i], args[i] = rediskeys.AsynqTask(q, e.taskID), e.result
			}
			writeScript.EvalSha(ctx, pipe, keys, args...)
			es = es[n:]
		}
	}
	_, err := pipe.Exec(ctx)
	return err
}

// requeue puts a failed flush's results back in front of the newer ones, dropping the oldest beyond
// MaxPending.
func (w *Writer) requeue(batch []entry) {
	w.mu.Lock()
	defer w.mu.Unlock()
	all := append(batch, w.pending...)
	if over := len(all) - w.cfg.MaxPending; over > 0 {
		all = all[over:]
		w.dropped.Add(int64(over))
	}
	w.pending = all
}

// writeScript sets the result of each task that still exists: a task deleted in the meantime (no
// retention, or purged) must not come back as a stray hash holding only a result. KEYS: task
// hashes (rediskeys.AsynqTask). ARGV: their results, in the same order.
var writeScript = redis.NewScript(`
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('HSET', key, '` + rediskeys.AsynqResultField + `', ARGV[i])
  end
end
return 0
`)
