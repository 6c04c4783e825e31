package worker

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/activator/internal/configerr"
	"github.com/versori/activator/tasks"
)

// RetryPolicy sets the timings of retries.
type RetryPolicy struct {
	// Base and Cap bound asynq's retries: attempt n waits a uniformly random time up to
	// min(Cap, Base*2^n) ("full jitter"), and at least a second.
	Base, Cap time.Duration
	// RateLimitWait is the wait after a 429 without a Retry-After.
	RateLimitWait time.Duration
	// QuickRetries transient failures are retried inside the handler, starting QuickBase apart and
	// at most QuickCap apart, before the job goes back to the queue.
	QuickRetries int
	QuickBase    time.Duration
	QuickCap     time.Duration
	// PausedWait is how long a job waits after the queue was paused for a refused API key.
	PausedWait time.Duration
	// InterruptedWait is the wait of a job whose call was cut short by shutdown.
	InterruptedWait time.Duration
	// SettleTime is the least wait between a POST whose outcome is unknown (a 5xx, a timeout, a
	// connection lost after the request was written) and the look-up that decides whether to POST
	// again. Behind a gateway the backend may commit after the gateway has answered 504 or the client
	// has given up: a look-up made at once finds nothing and the next POST makes a duplicate. It must
	// be longer than the API's own request timeout behind its gateway.
	SettleTime time.Duration
	// MaxRetryAfter caps a 429's Retry-After: a longer one (a bogus header, a day's quota) is cut to
	// it, logged and counted, so that one answer cannot stop every worker for a year.
	MaxRetryAfter time.Duration
}

// DefaultRetryPolicy is the policy used for fields left zero.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{
		Base: time.Second, Cap: 10 * time.Minute, RateLimitWait: 5 * time.Second,
		QuickRetries: 2, QuickBase: 100 * time.Millisecond, QuickCap: time.Second,
		PausedWait: 30 * time.Second, InterruptedWait: time.Second,
		SettleTime: 2 * time.Minute, MaxRetryAfter: 15 * time.Minute,
	}
}

// WithDefaults returns p with every zero field set from DefaultRetryPolicy, except QuickRetries,
// whose zero means none. A negative field is left for Validate to refuse.
func (p RetryPolicy) WithDefaults() RetryPolicy {
	d := DefaultRetryPolicy()
	p.Base = cmp.Or(p.Base, d.Base)
	p.Cap = cmp.Or(p.Cap, d.Cap)
	p.RateLimitWait = cmp.Or(p.RateLimitWait, d.RateLimitWait)
	p.QuickBase = cmp.Or(p.QuickBase, d.QuickBase)
	p.QuickCap = cmp.Or(p.QuickCap, d.QuickCap)
	p.PausedWait = cmp.Or(p.PausedWait, d.PausedWait)
	p.InterruptedWait = cmp.Or(p.InterruptedWait, d.InterruptedWait)
	p.SettleTime = cmp.Or(p.SettleTime, d.SettleTime)
	p.MaxRetryAfter = cmp.Or(p.MaxRetryAfter, d.MaxRetryAfter)
	return p
}

// Validate reports the first problem with p as it is (New applies WithDefaults first). Its errors
// are *configerr.Error.
func (p RetryPolicy) Validate() error {
	positive := []struct {
		field string
		d     time.Duration
	}{
		{"Base", p.Base}, {"RateLimitWait", p.RateLimitWait}, {"QuickBase", p.QuickBase}, {"QuickCap", p.QuickCap},
		{"PausedWait", p.PausedWait}, {"InterruptedWait", p.InterruptedWait}, {"SettleTime", p.SettleTime},
		{"MaxRetryAfter", p.MaxRetryAfter},
	}
	for _, f := range positive {
		if f.d <= 0 {
			return configerr.New("worker", f.field, "must be positive, got %s", f.d)
		}
	}
	if p.Cap < p.Base {
		return configerr.New("worker", "Cap", "must be at least Base (%s), got %s", p.Base, p.Cap)
	}
	if p.QuickRetries < 0 {
		return configerr.New("worker", "QuickRetries", "must not be negative, got %d", p.QuickRetries)
	}
	return nil
}

// asynqRounding covers asynq storing retry times in whole seconds, which can run a retry up to a
// second before the delay it was given.
const asynqRounding = time.Second

// RetryDelay is asynq's RetryDelayFunc. The handler says how long every retry it asks for waits (a
// waitError). Any other error is asynq's own: the job's deadline passed or its worker died, perhaps
// in the middle of a POST, so the wait is at least SettleTime, lest the next attempt's look-up come
// before the API has committed what it was sent.
func (p RetryPolicy) RetryDelay(n int, err error, _ *asynq.Task) time.Duration {
	var w *waitError
	if errors.As(err, &w) {
		return w.Wait + asynqRounding
	}
	return max(p.backoff(n), p.SettleTime+asynqRounding)
}

// backoff is the wait before retry n after a failure: full jitter up to min(Cap, Base*2^n), at
// least a second.
func (p RetryPolicy) backoff(n int) time.Duration {
	ceiling := p.Cap
	// Base <= Cap>>n is Base<<n <= Cap without the overflow of Base<<n.
	if n >= 0 && n < 63 && p.Base > 0 && p.Base <= p.Cap>>n {
		ceiling = p.Base << n
	}
	if ceiling <= time.Second {
		// Also a Cap that is not positive, which rand.Int64N would panic on.
		return time.Second
	}
	return max(time.Duration(rand.Int64N(int64(ceiling))+1), time.Second)
}

// isFailure is asynq's isFailure: a wait the API asked for (429) or a paused queue is not a failure,
// so it uses up no attempt. Anything else, including lease expiry after a crash, is.
func isFailure(err error) bool {
	var w *waitError
	return !(errors.As(err, &w) && !w.Counts)
}

// waitError asks asynq to run the job again after Wait. Counts says whether it uses up an attempt.
type waitError struct {
	Wait   time.Duration
	Counts bool
	Err    error
}

func (e *waitError) Error() string { return fmt.Sprintf("retry in %s: %v", e.Wait, e.Err) }
func (e *waitError) Unwrap() error { return e.Err }

// deadLetterPrefix starts the error a dead-lettered job returns to asynq.
const deadLetterPrefix = "dead letter ("

// deadLetterError is returned for a job whose dead letter is stored; it wraps asynq.RevokeTask, so
// that asynq drops the task rather than archive it. asynq's archive is capped at 10,000 tasks per
// queue and deletes what it trims, task record included: the dead-letter store is the one place a
// dead letter lives.
func deadLetterError(reason tasks.Reason, err error) error {
	return fmt.Errorf("%s%s): %w: %w", deadLetterPrefix, reason, err, asynq.RevokeTask)
}

var deadLetterRE = regexp.MustCompile(`^dead letter \(([a-z_]+)\)`)

// reasonFromError recovers the reason from an archived task's last error, or returns false when the
// task was archived by asynq itself (a job that killed its workers CrashRetries times in a row).
// Releases before the dead-letter store held every dead letter archived their tasks with it.
func reasonFromError(lastErr string) (tasks.Reason, bool) {
	m := deadLetterRE.FindStringSubmatch(lastErr)
	if m == nil {
		return "", false
	}
	r, err := tasks.ParseReason(m[1])
	return r, err == nil
}
