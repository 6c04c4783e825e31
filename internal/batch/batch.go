// Package batch keeps per-batch progress counters in Redis, so that `enqueue status` can say how far
// an onboarding run is without scanning its tasks. Producers count what they queue; workers count
// outcomes in memory and flush them every half second in one pipelined round trip, so that the
// happy path pays no Redis write of its own per job. A worker killed with SIGKILL loses at most its
// last half second of counts; the dead-letter store and the API's own records stay exact.
package batch

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/flushloop"
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

// Counter accumulates outcome counts in memory and flushes them to Redis. It is safe for concurrent
// use.
type Counter struct {
	rdb   redis.UniversalClient
	queue string
	every time.Duration

	mu      sync.Mutex
	pending map[string]map[string]int64 // batch -> field -> delta
}

// NewCounter returns a Counter for queue's batches that flushes every interval (default 500 ms).
func NewCounter(rdb redis.UniversalClient, queue string, every time.Duration) *Counter {
	if every <= 0 {
		every = 500 * time.Millisecond
	}
	return &Counter{rdb: rdb, queue: queue, every: every, pending: map[string]map[string]int64{}}
}

// Add counts n of field for batch; jobs without a batch are not counted.
func (c *Counter) Add(batch, field string, n int64) {
	if batch == "" || c == nil {
		return
	}
	c.mu.Lock()
	m := c.pending[batch]
	if m == nil {
		m = map[string]int64{}
		c.pending[batch] = m
	}
	m[field] += n
	c.mu.Unlock()
}

// Flush writes the counts gathered so far in one pipelined round trip. On failure they are kept for
// the next flush.
func (c *Counter) Flush(ctx context.Context) error {
	c.mu.Lock()
	batch := c.pending
	c.pending = map[string]map[string]int64{}
	c.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	if err := Write(ctx, c.rdb, c.queue, batch); err != nil {
		c.mu.Lock()
		for b, m := range batch {
			for f, n := range m {
				if c.pending[b] == nil {
					c.pending[b] = map[string]int64{}
				}
				c.pending[b][f] += n
			}
		}
		c.mu.Unlock()
		return err
	}
	return nil
}

// Run flushes every interval until ctx ends, then flushes once more.
func (c *Counter) Run(ctx context.Context) {
	flushloop.Run(ctx, c.every, nil, func(ctx context.Context) { _ = c.Flush(ctx) })
}

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
