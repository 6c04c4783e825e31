package jobs

import (
	"strings"
	"time"

	"github.com/versori/activator/internal/configerr"
)

// Validate reports the first problem with c as it is, defaults not applied: it is for a
// configuration whose every field was given, as the enqueue command's is (it starts from
// DefaultConfig), and refuses what New would quietly replace with the default: an empty Queue, a
// MaxRetry under 1, a Retention that is not positive, a Timeout under a second or not in whole
// seconds (asynq keeps it in seconds). Its errors are *configerr.Error naming the field
// ("producer: MaxRetry must be at least 1, got 0"). New does not call it: a Config built in code may
// leave fields zero to take DefaultConfig's.
func (c Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return configerr.New("producer", field, format, args...)
	}
	switch {
	case strings.TrimSpace(c.Queue) == "":
		return bad("Queue", "must not be empty")
	case c.MaxRetry < 1:
		return bad("MaxRetry", "must be at least 1, got %d", c.MaxRetry)
	case c.Retention <= 0:
		return bad("Retention", "must be positive, got %s", c.Retention)
	case c.Timeout < time.Second:
		return bad("Timeout", "must be at least 1s, got %s", c.Timeout)
	case c.Timeout%time.Second != 0:
		return bad("Timeout", "must be whole seconds (a job's timeout is kept in seconds), got %s", c.Timeout)
	}
	return nil
}

// Validate reports the first problem with o's settings as they are, for options whose every field
// was given (the enqueue command's): a Concurrency under 1, which EnqueueFile would quietly replace
// with DefaultFileConcurrency. Its errors are *configerr.Error naming the field. The input itself
// (Path, Format) is checked when the run opens it.
func (o FileOptions) Validate() error {
	if o.Concurrency < 1 {
		return configerr.New("producer", "Concurrency", "must be at least 1, got %d", o.Concurrency)
	}
	return nil
}
