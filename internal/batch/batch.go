// Package batch keeps per-batch progress counters in Redis, so that `enqueue status` can say how far
// an onboarding run is without scanning its tasks. Producers count what they queue; workers count
// outcomes in memory and flush them every half second in one pipelined round trip, so that the
// happy path pays no Redis write of its own per job. A worker killed with SIGKILL loses at most its
// last half second of counts; the dead-letter store and the API's own records stay exact.
package batch

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/background"
	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/tasks"
)

// Counter fields.
const (
	FieldQueued        = "queued"
	FieldActivated     = "activated"
	FieldAlreadyActive = "already_active"
	// The results of the lifecycle's operations (docs/lifecycle.md): ends of jobs, as activated.
	FieldVariablesUpdated = "variables_updated"
	FieldDeactivated      = "deactivated"
	FieldAlreadyInactive  = "already_inactive"
	FieldSuperseded       = "superseded"
	// FieldCreatedUser counts jobs that created their end user (a 409 "already exists" counts):
	// not an end, since such a job goes on to activate.
	FieldCreatedUser = "created_user"
	// FieldQueuedPrefix + an operation's name ("activate", "update", "deactivate") counts the jobs
	// of that operation queued, beside FieldQueued, which counts them all: QueuedField.
	FieldQueuedPrefix = "queued:"
	FieldRetries      = "retries"      // failed attempts that were retried
	FieldDeadPrefix   = "dead_letter:" // + reason
	fieldStarted      = "started_ms"
	fieldUpdated      = "updated_ms"
	fieldFirstDone    = "first_done_ms" // when a flush first counted jobs ending
	fieldLastDone     = "last_done_ms"  // when a flush last counted jobs ending
)

// QueuedField is the field counting the batch's queued jobs of op.
func QueuedField(op tasks.Op) string { return FieldQueuedPrefix + op.String() }

// RateWindow is how far back Status.Rate looks while a batch runs.
const RateWindow = time.Minute

// completionsKept is how long a batch's recent completions are kept (and their key lives after the
// last).
const completionsKept = 2 * RateWindow

// minRateSpan is the shortest time a rate is measured over; shorter, the rate is not told.
const minRateSpan = time.Second

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

// Write adds counts to batches' counters in one pipelined round trip, as of now.
func Write(ctx context.Context, rdb redis.UniversalClient, queue string, counts map[string]map[string]int64) error {
	return WriteAt(ctx, rdb, queue, counts, time.Now())
}

// WriteAt is Write as of now. A batch whose counts say jobs ended (a positive count of a done field)
// also records when (its first and last such write) and how many, among its recent completions.
func WriteAt(ctx context.Context, rdb redis.UniversalClient, queue string, counts map[string]map[string]int64, now time.Time) error {
	ms := now.UnixMilli()
	pipe := rdb.Pipeline()
	for b, m := range counts {
		k := rediskeys.Batch(queue, b)
		var ended int64
		for f, n := range m {
			pipe.HIncrBy(ctx, k, f, n)
			if n > 0 && isDone(f) {
				ended += n
			}
		}
		pipe.HSetNX(ctx, k, fieldStarted, ms)
		pipe.HSet(ctx, k, fieldUpdated, ms)
		if ended > 0 {
			pipe.HSetNX(ctx, k, fieldFirstDone, ms)
			pipe.HSet(ctx, k, fieldLastDone, ms)
			ck := rediskeys.BatchCompletions(queue, b)
			// The nonce keeps two flushes of the same count in the same millisecond apart.
			pipe.ZAdd(ctx, ck, redis.Z{Score: float64(ms), Member: strconv.FormatInt(ended, 10) + ":" + strconv.FormatUint(rand.Uint64(), 36)})
			pipe.ZRemRangeByScore(ctx, ck, "-inf", "("+strconv.FormatInt(ms-completionsKept.Milliseconds(), 10))
			pipe.PExpire(ctx, ck, completionsKept)
		}
		pipe.Expire(ctx, k, ttl)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("batch counters: %w", err)
	}
	return nil
}

// isDone says whether field counts jobs that ended.
func isDone(field string) bool {
	switch field {
	case FieldActivated, FieldAlreadyActive, FieldVariablesUpdated, FieldDeactivated, FieldAlreadyInactive, FieldSuperseded:
		return true
	}
	return strings.HasPrefix(field, FieldDeadPrefix)
}

// Status is how far a batch is. Its JSON gives durations in seconds (rateWindowSeconds,
// elapsedSeconds, runningSeconds, etaSeconds).
type Status struct {
	ID            string `json:"batch"`
	Queued        int64  `json:"queued"`
	Activated     int64  `json:"activated"`
	AlreadyActive int64  `json:"alreadyActive"`
	// QueuedByOp is Queued by operation ("activate", "update", "deactivate"): what the batch does.
	// A batch counted by a release before the lifecycle has none.
	QueuedByOp map[string]int64 `json:"queuedByOp,omitempty"`
	// The results of updates and deactivations, jobs superseded by a later operation on their
	// pair, and jobs that created their end user (which also count as activated).
	VariablesUpdated int64            `json:"variablesUpdated"`
	Deactivated      int64            `json:"deactivated"`
	AlreadyInactive  int64            `json:"alreadyInactive"`
	Superseded       int64            `json:"superseded"`
	CreatedUser      int64            `json:"createdUser"`
	DeadLetters      map[string]int64 `json:"deadLetters"` // by reason
	Retries          int64            `json:"retries"`
	// Done is every job that ended: activated, already active, variables updated, deactivated,
	// already inactive, superseded and dead letters.
	Done      int64     `json:"done"`
	Remaining int64     `json:"remaining"` // queued - done
	StartedAt time.Time `json:"startedAt"` // the batch's first count, when its first job was queued
	UpdatedAt time.Time `json:"updatedAt"`
	// FirstDoneAt and LastDoneAt are when the batch's first and last job ended, to a counter flush
	// (half a second); zero until one has (or when counted by a release that did not record them).
	FirstDoneAt time.Time `json:"firstDoneAt,omitzero"`
	LastDoneAt  time.Time `json:"lastDoneAt,omitzero"`
	// Rate is jobs ended per second: while the batch runs, over the last RateWindow (shorter when the
	// first job ended more recently); once it is finished, frozen at AverageRate.
	Rate       float64       `json:"rate"`
	RateWindow time.Duration `json:"-"`
	// AverageRate is jobs ended per second over Running, the time from the first job's end to now
	// (to the last job's end once finished): the whole run's average, without the wait before a
	// worker took the first job.
	AverageRate float64       `json:"averageRate"`
	Running     time.Duration `json:"-"`
	// Elapsed is from StartedAt to now, or to the last job's end once finished.
	Elapsed time.Duration `json:"-"`
	// ETA is Remaining at Rate; 0 when it cannot be told (finished, paused, or no job ended in the
	// window).
	ETA      time.Duration `json:"-"`
	Finished bool          `json:"finished"` // something was queued and nothing remains
	// Paused says the queue is paused (package inspect fills it in), and PausedReason why when known
	// (queuestate's reasons: operator, unauthorized).
	Paused       bool   `json:"paused"`
	PausedReason string `json:"pausedReason,omitempty"`
}

// statusFields is Status without its methods, for its JSON.
type statusFields Status

// statusJSON is Status's JSON: its durations in seconds.
type statusJSON struct {
	statusFields
	RateWindowSeconds float64  `json:"rateWindowSeconds,omitempty"`
	RunningSeconds    float64  `json:"runningSeconds"`
	ElapsedSeconds    float64  `json:"elapsedSeconds"`
	ETASeconds        *float64 `json:"etaSeconds,omitempty"` // absent when it cannot be told
}

// MarshalJSON writes s with its durations in seconds.
func (s Status) MarshalJSON() ([]byte, error) {
	j := statusJSON{statusFields: statusFields(s), RateWindowSeconds: s.RateWindow.Seconds(),
		RunningSeconds: s.Running.Seconds(), ElapsedSeconds: s.Elapsed.Seconds()}
	if s.ETA > 0 {
		eta := s.ETA.Seconds()
		j.ETASeconds = &eta
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (s *Status) UnmarshalJSON(b []byte) error {
	var j statusJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*s = Status(j.statusFields)
	s.RateWindow, s.Running, s.Elapsed = seconds(j.RateWindowSeconds), seconds(j.RunningSeconds), seconds(j.ElapsedSeconds)
	if j.ETASeconds != nil {
		s.ETA = seconds(*j.ETASeconds)
	}
	return nil
}

func seconds(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }

// ErrUnknown is returned by Read for a batch with no counters.
var ErrUnknown = errors.New("no such batch")

// Read returns a batch's status as of now.
func Read(ctx context.Context, rdb redis.UniversalClient, queue, id string) (Status, error) {
	return ReadAt(ctx, rdb, queue, id, time.Now())
}

// ReadAt returns a batch's status as of now.
func ReadAt(ctx context.Context, rdb redis.UniversalClient, queue, id string, now time.Time) (Status, error) {
	pipe := rdb.Pipeline()
	hash := pipe.HGetAll(ctx, rediskeys.Batch(queue, id))
	recent := pipe.ZRangeByScoreWithScores(ctx, rediskeys.BatchCompletions(queue, id), &redis.ZRangeBy{
		Min: "(" + strconv.FormatInt(now.Add(-RateWindow).UnixMilli(), 10), Max: "+inf"})
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Status{}, fmt.Errorf("reading batch %s: %w", id, err)
	}
	vals := hash.Val()
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
		case f == FieldVariablesUpdated:
			s.VariablesUpdated = n
		case f == FieldDeactivated:
			s.Deactivated = n
		case f == FieldAlreadyInactive:
			s.AlreadyInactive = n
		case f == FieldSuperseded:
			s.Superseded = n
		case f == FieldCreatedUser:
			s.CreatedUser = n
		case strings.HasPrefix(f, FieldQueuedPrefix):
			if s.QueuedByOp == nil {
				s.QueuedByOp = map[string]int64{}
			}
			s.QueuedByOp[strings.TrimPrefix(f, FieldQueuedPrefix)] = n
		case f == FieldRetries:
			s.Retries = n
		case f == fieldStarted:
			s.StartedAt = time.UnixMilli(n).UTC()
		case f == fieldUpdated:
			s.UpdatedAt = time.UnixMilli(n).UTC()
		case f == fieldFirstDone:
			s.FirstDoneAt = time.UnixMilli(n).UTC()
		case f == fieldLastDone:
			s.LastDoneAt = time.UnixMilli(n).UTC()
		case strings.HasPrefix(f, FieldDeadPrefix):
			s.DeadLetters[strings.TrimPrefix(f, FieldDeadPrefix)] = n
		}
	}
	var samples []Completion
	for _, z := range recent.Val() {
		m, _ := z.Member.(string)
		jobs, _, _ := strings.Cut(m, ":")
		n, err := strconv.ParseInt(jobs, 10, 64)
		if err != nil {
			continue // not ours
		}
		samples = append(samples, Completion{At: time.UnixMilli(int64(z.Score)).UTC(), Jobs: n})
	}
	s.settle(now, samples)
	return s, nil
}

// Completion is one counter flush that counted jobs ending: when it was written and how many.
type Completion struct {
	At   time.Time
	Jobs int64
}

// settle works out, as of now, what follows from the counts, the times and the batch's recent
// completions: Done, Remaining, Finished, the durations, the rates and the ETA.
func (s *Status) settle(now time.Time, recent []Completion) {
	s.Done = s.Activated + s.AlreadyActive + s.VariablesUpdated + s.Deactivated + s.AlreadyInactive + s.Superseded
	for _, n := range s.DeadLetters {
		s.Done += n
	}
	s.Remaining = max(s.Queued-s.Done, 0)
	s.Finished = s.Queued > 0 && s.Remaining == 0
	for _, c := range recent {
		// The writers' clocks may differ a little: the last completion is the latest seen.
		if c.At.After(s.LastDoneAt) {
			s.LastDoneAt = c.At
		}
	}
	end := now
	if s.Finished && !s.LastDoneAt.IsZero() {
		end = s.LastDoneAt
	}
	if !s.StartedAt.IsZero() {
		s.Elapsed = max(end.Sub(s.StartedAt), 0)
	}
	if s.FirstDoneAt.IsZero() {
		// No job has ended, or the counts are a previous release's, which recorded no completion
		// times: the only rate there is the lifetime average.
		if el := s.UpdatedAt.Sub(s.StartedAt).Seconds(); el > 0 && s.Done > 0 {
			s.AverageRate = float64(s.Done) / el
			if !s.Finished {
				s.Rate = s.AverageRate
				s.ETA = time.Duration(float64(s.Remaining) / s.Rate * float64(time.Second))
			}
		}
		return
	}
	s.Running = max(end.Sub(s.FirstDoneAt), 0)
	if s.Running > 0 {
		s.AverageRate = float64(s.Done) / s.Running.Seconds()
	}
	if s.Finished {
		s.Rate = s.AverageRate
		return
	}
	// Jobs that ended after from, over the time since: the first flush's jobs ended before it was
	// written, so a window that starts at the first completion leaves them out.
	from := now.Add(-RateWindow)
	if s.FirstDoneAt.After(from) {
		from = s.FirstDoneAt
	}
	span := now.Sub(from)
	if span < minRateSpan {
		return // too early to tell
	}
	var jobs int64
	for _, c := range recent {
		if c.At.After(from) {
			jobs += c.Jobs
		}
	}
	s.RateWindow = span
	s.Rate = float64(jobs) / span.Seconds()
	if s.Rate > 0 {
		s.ETA = time.Duration(float64(s.Remaining) / s.Rate * float64(time.Second))
	}
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
