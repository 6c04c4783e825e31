// Package breaker stops calls to the Versori API while most recent calls fail transiently, so that
// an outage is not met with a storm of retries: it opens for a cool-down, lets a few probe calls
// through (half-open), and closes when they succeed. Jobs that meet an open breaker wait without
// using up an attempt.
package breaker

import (
	"cmp"
	"context"
	"errors"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/versori/activator/internal/configerr"
	"github.com/versori/activator/versori"
)

// ErrOpen is returned, without calling, while the breaker is open or its probes are all out.
var ErrOpen = errors.New("circuit breaker open: the API is failing; not calling")

// Config configures a Breaker. Zero fields take DefaultConfig's.
type Config struct {
	Window       time.Duration // how far back calls are counted
	MinCalls     uint32        // calls in the window before the breaker may open
	FailureRatio float64       // share of transient failures that opens it, in (0, 1]
	Cooldown     time.Duration // how long it stays open before probing
	Probes       uint32        // calls let through while half-open
	// OnStateChange, if set, is told of every change (for metrics and logs).
	OnStateChange func(from, to gobreaker.State)
}

// Breaker is a circuit breaker over calls to the API. It is safe for concurrent use.
type Breaker struct {
	cb       *gobreaker.CircuitBreaker[struct{}]
	cooldown time.Duration
}

// DefaultConfig is the configuration used for fields left zero.
func DefaultConfig() Config {
	return Config{Window: 30 * time.Second, MinCalls: 20, FailureRatio: 0.5, Cooldown: 30 * time.Second, Probes: 3}
}

// WithDefaults returns cfg with its zero fields set from DefaultConfig.
func (cfg Config) WithDefaults() Config {
	d := DefaultConfig()
	cfg.Window = cmp.Or(cfg.Window, d.Window)
	cfg.MinCalls = cmp.Or(cfg.MinCalls, d.MinCalls)
	cfg.FailureRatio = cmp.Or(cfg.FailureRatio, d.FailureRatio)
	cfg.Cooldown = cmp.Or(cfg.Cooldown, d.Cooldown)
	cfg.Probes = cmp.Or(cfg.Probes, d.Probes)
	return cfg
}

// Validate reports the first problem with cfg as it is. Its errors are *configerr.Error.
func (cfg Config) Validate() error {
	switch {
	case cfg.Window <= 0:
		return configerr.New("breaker", "Window", "must be positive, got %s", cfg.Window)
	case cfg.MinCalls < 1:
		return configerr.New("breaker", "MinCalls", "must be at least 1, got %d", cfg.MinCalls)
	case !(cfg.FailureRatio > 0 && cfg.FailureRatio <= 1):
		return configerr.New("breaker", "FailureRatio", "must be in (0, 1], got %g", cfg.FailureRatio)
	case cfg.Cooldown <= 0:
		return configerr.New("breaker", "Cooldown", "must be positive, got %s", cfg.Cooldown)
	case cfg.Probes < 1:
		return configerr.New("breaker", "Probes", "must be at least 1, got %d", cfg.Probes)
	}
	return nil
}

// New returns a closed Breaker. Zero fields of cfg take DefaultConfig's; the caller has validated
// the rest (a worker's Config.Validate does).
func New(cfg Config) *Breaker {
	cfg = cfg.WithDefaults()
	st := gobreaker.Settings{
		Name:         "versori",
		MaxRequests:  cfg.Probes,
		Interval:     cfg.Window,
		BucketPeriod: max(cfg.Window/10, time.Second),
		Timeout:      cfg.Cooldown,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			// Calls with an outcome that counts: c.Requests also holds excluded calls and calls still
			// in flight, which would dilute the ratio as if they had succeeded.
			n := c.TotalSuccesses + c.TotalFailures
			return n >= cfg.MinCalls && float64(c.TotalFailures) >= cfg.FailureRatio*float64(n)
		},
		// Only transient failures say the API is unwell: a 4xx or a 429 is an answer.
		IsSuccessful: func(err error) bool { return versori.Classify(err) != versori.ClassTransient },
		// A call cut short by our own shutdown, or never sent, says nothing about the API.
		IsExcluded: func(err error) bool {
			var te *versori.TransportError
			return errors.Is(err, context.Canceled) || (errors.As(err, &te) && te.NotSent)
		},
	}
	if cfg.OnStateChange != nil {
		st.OnStateChange = func(_ string, from, to gobreaker.State) { cfg.OnStateChange(from, to) }
	}
	return &Breaker{cb: gobreaker.NewCircuitBreaker[struct{}](st), cooldown: cfg.Cooldown}
}

// Do calls fn unless the breaker is open, and counts its outcome. It returns ErrOpen without calling
// fn when open.
func (b *Breaker) Do(fn func() error) error {
	_, err := b.cb.Execute(func() (struct{}, error) { return struct{}{}, fn() })
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return ErrOpen
	}
	return err
}

// State is the breaker's state.
func (b *Breaker) State() gobreaker.State { return b.cb.State() }

// Cooldown is how long the breaker stays open before probing.
func (b *Breaker) Cooldown() time.Duration { return b.cooldown }
