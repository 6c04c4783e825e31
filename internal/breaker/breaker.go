// Package breaker stops calls to the Versori API while most recent calls fail transiently, so that
// an outage is not met with a storm of retries: it opens for a cool-down, lets a few probe calls
// through (half-open), and closes when they succeed. Jobs that meet an open breaker wait without
// using up an attempt.
package breaker

import (
	"context"
	"errors"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/versori/activator/versori"
)

// ErrOpen is returned, without calling, while the breaker is open or its probes are all out.
var ErrOpen = errors.New("circuit breaker open: the API is failing; not calling")

// Config configures a Breaker. Zero fields take the defaults in brackets.
type Config struct {
	Window       time.Duration // how far back calls are counted [30s]
	MinCalls     uint32        // calls in the window before the breaker may open [20]
	FailureRatio float64       // share of transient failures that opens it [0.5]
	Cooldown     time.Duration // how long it stays open before probing [30s]
	Probes       uint32        // calls let through while half-open [3]
	// OnStateChange, if set, is told of every change (for metrics and logs).
	OnStateChange func(from, to gobreaker.State)
}

// Breaker is a circuit breaker over calls to the API. It is safe for concurrent use.
type Breaker struct {
	cb       *gobreaker.CircuitBreaker[struct{}]
	cooldown time.Duration
}

// New returns a closed Breaker.
func New(cfg Config) *Breaker {
	if cfg.Window <= 0 {
		cfg.Window = 30 * time.Second
	}
	if cfg.MinCalls == 0 {
		cfg.MinCalls = 20
	}
	if cfg.FailureRatio <= 0 || cfg.FailureRatio > 1 {
		cfg.FailureRatio = 0.5
	}
	if cfg.Cooldown <= 0 {
		cfg.Cooldown = 30 * time.Second
	}
	if cfg.Probes == 0 {
		cfg.Probes = 3
	}
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
