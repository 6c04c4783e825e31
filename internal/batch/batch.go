// Package batch keeps per-batch progress counters in Redis, so that `enqueue status` can say how far
// an onboarding run is without scanning its tasks. Producers count what they queue; workers count
// outcomes in memory and flush them every half second in one pipelined round trip, so that the
// happy path pays no Redis write of its own per job. A worker killed with SIGKILL loses at most its
// last half second of counts; the dead-letter store and the API's own records stay exact.
package batch

import (
	"cmp"
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/background"
	"github.com/versori/activator/internal/rediskeys"
)

// Counter fields.
const (
	FieldQueued        = "queued"
	FieldActivated     = "activated"
	FieldAlreadyActive = "already_active"
	FieldRetries       = "retries"      // failed attempts that were retried
	FieldDeadPrefix    = "dead_letter:" // + reason
	fieldStarted       = "started_ms"
	fieldUpdated       = "updated_ms"
)

// ttl keeps a batch's counters for a month after its last change.
const ttl = 30 * 24 * time.Hour

// Config configures a Counter.
type Config struct {
	// Interval is how often Run flushes (default 500 ms).
	Interval time.Duration
	// Timeout, if positive, bounds each of Run's flushes; Run's last flush is bounded by it, or
	// else by 5 s.
	Timeout time.Duration
}

// Counter accumulates outcome counts in memory and flushes them to Redis. It is safe for concurrent
// use.
type Counter struct {
	buf   *background.Buffer[count]
	every time.Duration
}

// count is one Add; a flush adds them up by batch and field.
type count struct {
	batch, field string
	n            int64
}

// NewCounter returns a Counter for queue's batches.
func NewCounter(rdb redis.UniversalClient, queue string, cfg Config) *Counter {
	flush := func(ctx context.Context, counts []count) ([]count, error) {
		type key struct{ batch, field string }
		sums := map[key]int64{}
		for _, c := range counts {
			sums[key{c.batch, c.field}] += c.n
		}
		byBatch := map[string]map[string]int64{}
		for k, n := range sums {
			m := byBatch[k.batch]
			if m == nil {
				m = map[string]int64{}
				byBatch[k.batch] = m
			}
			m[k.field] = n
		}
		if err := Write(ctx, rdb, queue, byBatch); err != nil {
			// Kept as sums, so that an outage costs one count per batch and field, not one per job.
			keep := make([]count, 0, len(sums))
			for k, n := range sums {
				keep = append(keep, count{batch: k.batch, field: k.field, n: n})
			}
			return keep, err
		}
		return nil, nil
	}
	return &Counter{buf: background.NewBuffer(background.BufferConfig[count]{Flush: flush, Timeout: cfg.Timeout}),
		every: cmp.Or(cfg.Interval, 500*time.Millisecond)}
}

// Add counts n of field for batch; jobs without a batch are not counted.
func (c *Counter) Add(batch, field string, n int64) {
	if batch == "" || c == nil {
		return
	}
	_ = c.buf.Add(count{batch: batch, field: field, n: n}) // never fails: no Size
}

// Flush writes the counts gathered so far in one pipelined round trip. On failure they are kept for
// the next flush.
func (c *Counter) Flush(ctx context.Context) error { return c.buf.Flush(ctx) }

// Run flushes every interval until ctx ends, then flushes once more and returns that flush's error.
func (c *Counter) Run(ctx context.Context) error { return c.buf.Run(ctx, c.every) }

// Write adds counts to batches' counters in one pipelined round trip.
func Write(ctx context.Context, rdb redis.UniversalClient, queue string, counts map[string]map[string]int64) error {
	now := time.Now().UnixMilli()
	pipe := rdb.Pipeline()
	for b, m := range counts {
		k := rediskeys.Batch(queue, b)
		for f, n := range m {
			pipe.HIncrBy(ctx, k, f, n)
		}
		pipe.HSetNX(ctx, k, fieldStarted, now)
		pipe.HSet(ctx, k, fieldUpdated, now)
		pipe.Expire(ctx, k, ttl)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("batch counters: %w", err)
	}
	return nil
}

// Status is how far a batch is.
type Status struct {
	ID            string           `json:"batch"`
	Queued        int64            `json:"queued"`
	Activated     int64            `json:"activated"`
	AlreadyActive int64            `json:"alreadyActive"`
	DeadLetters   map[string]int64 `json:"deadLetters"` // by reason
	Retries       int64            `json:"retries"`
	Done          int64            `json:"done"`      // activated + already active + dead letters
	Remaining     int64            `json:"remaining"` // queued - done
	StartedAt     time.Time        `json:"startedAt"`
	UpdatedAt     time.Time        `json:"updatedAt"`
	// Rate is outcomes per second since the batch started; ETA is Remaining at that rate.
	Rate     float64       `json:"rate"`
	ETA      time.Duration `json:"etaNanos"`
	Finished bool          `json:"finished"`
}

// ErrUnknown is returned by Read for a batch with no counters.
var ErrUnknown = fmt.Errorf("batch: no such batch (or its counters expired after %s)", ttl)

// Read returns a batch's status.
func Read(ctx context.Context, rdb redis.UniversalClient, queue, id string) (Status, error) {
	vals, err := rdb.HGetAll(ctx, rediskeys.Batch(queue, id)).Result()
	if err != nil {
		return Status{}, fmt.Errorf("batch: reading %s: %w", id, err)
	}
	if len(vals) == 0 {
		return Status{}, ErrUnknown
	}
	s := Status{ID: id, DeadLetters: map[string]int64{}}
	for f, v := range vals {
		n, _ := strconv.ParseInt(v, 10, 64)
		switch {
		case f == FieldQueued:
			s.Queued = n
		case f == FieldActivated:
			s.Activated = n
		case f == FieldAlreadyActive:
			s.AlreadyActive = n
		case f == FieldRetries:
			s.Retries = n
		case f == fieldStarted:
			s.StartedAt = time.UnixMilli(n).UTC()
		case f == fieldUpdated:
			s.UpdatedAt = time.UnixMilli(n).UTC()
		case strings.HasPrefix(f, FieldDeadPrefix):
			s.DeadLetters[strings.TrimPrefix(f, FieldDeadPrefix)] = n
		}
	}
	s.Done = s.Activated + s.AlreadyActive
	for _, n := range s.DeadLetters {
		s.Done += n
	}
	s.Remaining = max(s.Queued-s.Done, 0)
	s.Finished = s.Queued > 0 && s.Remaining == 0
	if el := s.UpdatedAt.Sub(s.StartedAt).Seconds(); el > 0 && s.Done > 0 {
		s.Rate = float64(s.Done) / el
		s.ETA = time.Duration(float64(s.Remaining) / s.Rate * float64(time.Second))
	}
	return s, nil
}

// Reasons returns the dead-letter reasons of s in a stable order.
func (s Status) Reasons() []string {
	out := make([]string, 0, len(s.DeadLetters))
	for r := range s.DeadLetters {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}
