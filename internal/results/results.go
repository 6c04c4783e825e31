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
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/background"
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
	rdb   redis.UniversalClient
	every time.Duration
	buf   *background.Buffer[entry]
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
	w := &Writer{rdb: rdb, every: cfg.Interval}
	w.buf = background.NewBuffer(background.BufferConfig[entry]{
		Flush: w.flush, FlushAt: cfg.FlushAt, MaxPending: cfg.MaxPending,
		OnError: func(err error) {
			cfg.Logger.Warn("could not write job results; they wait for the next flush", "error", err.Error())
		},
	})
	return w
}

// Add records result for the task taskID of queue, to be written by the next flush.
func (w *Writer) Add(queue, taskID, result string) {
	_ = w.buf.Add(entry{queue: queue, taskID: taskID, result: result}) // never fails: no Size
}

// Dropped is how many results were dropped because Redis did not answer for too long.
func (w *Writer) Dropped() int64 { return w.buf.Dropped() }

// Run flushes until ctx is done, then flushes once more and returns that flush's error.
func (w *Writer) Run(ctx context.Context) error { return w.buf.Run(ctx, w.every) }

// maxKeys bounds the keys of one script call, so that one call never blocks Redis for long.
const maxKeys = 500

// Flush writes the results gathered so far in one pipelined round trip. On failure they are kept
// for the next flush, up to MaxPending.
func (w *Writer) Flush(ctx context.Context) error { return w.buf.Flush(ctx) }

func (w *Writer) flush(ctx context.Context, batch []entry) ([]entry, error) {
	err := w.write(ctx, batch)
	if err != nil && redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Redis restarted since the script was loaded: load it and send the batch again.
		if err = writeScript.Load(ctx, w.rdb).Err(); err == nil {
			err = w.write(ctx, batch)
		}
	}
	if err != nil {
		return batch, fmt.Errorf("job results: %w", err)
	}
	return nil, nil
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
