package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/versori/activator/internal/breaker"
	"github.com/versori/activator/versori"
)

// The outcomes the tests feed the breaker.
var (
	errUnavailable = &versori.Error{Op: versori.OpActivate, StatusCode: 503}
	errBadRequest  = &versori.Error{Op: versori.OpActivate, StatusCode: 400}
	errRateLimited = &versori.Error{Op: versori.OpActivate, StatusCode: 429, RetryAfter: time.Second, HasRetryAfter: true}
	errTimeout     = &versori.TransportError{Op: versori.OpActivate, Err: context.DeadlineExceeded}
	errCanceled    = &versori.TransportError{Op: versori.OpActivate, Err: fmt.Errorf("post: %w", context.Canceled)}
	errNotSent     = &versori.TransportError{Op: versori.OpActivate, Err: errors.New("waiting for the rate limit: shutting down"), NotSent: true}
)

// transitions records OnStateChange calls.
type transitions struct {
	mu  sync.Mutex
	got []string
}

func (r *transitions) record(from, to gobreaker.State) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, from.String()+"->"+to.String())
}

func (r *transitions) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.got)
}

func newBreaker(t *testing.T, cfg breaker.Config) (*breaker.Breaker, *transitions) {
	t.Helper()
	rec := &transitions{}
	cfg.OnStateChange = rec.record
	return breaker.New(cfg), rec
}

// do runs one call through b that returns err, and checks that b passed err through unchanged.
func do(t *testing.T, b *breaker.Breaker, err error) {
	t.Helper()
	called := false
	got := b.Do(func() error { called = true; return err })
	if !called {
		t.Fatalf("Do(%v) did not call fn (state %s)", err, b.State())
	}
	if got != err { // the very error fn returned must come back
		t.Fatalf("Do returned %v, want fn's error %v", got, err)
	}
}

func TestBreakerOpensOnTransientFailuresOnly(t *testing.T) {
	t.Parallel()
	cfg := breaker.Config{Window: 30 * time.Second, MinCalls: 5, FailureRatio: 0.5, Cooldown: time.Minute, Probes: 1}
	tests := []struct {
		name  string
		calls []error
		want  gobreaker.State
	}{
		{"fewer calls than MinCalls stay closed", []error{errUnavailable, errUnavailable, errUnavailable, errUnavailable}, gobreaker.StateClosed},
		{"MinCalls transient failures open", []error{errUnavailable, errUnavailable, errUnavailable, errUnavailable, errUnavailable}, gobreaker.StateOpen},
		{"timeouts are transient failures", []error{errTimeout, errTimeout, errTimeout, errTimeout, errTimeout}, gobreaker.StateOpen},
		{"ratio reached opens", []error{nil, nil, errUnavailable, errUnavailable, errUnavailable}, gobreaker.StateOpen},
		{"ratio exactly reached opens", []error{nil, nil, nil, errUnavailable, errUnavailable, errUnavailable}, gobreaker.StateOpen},
		{"ratio not reached stays closed", []error{nil, nil, nil, errUnavailable, errUnavailable}, gobreaker.StateClosed},
		{"400s are answers, not failures", slices.Repeat([]error{errBadRequest}, 20), gobreaker.StateClosed},
		{"429s are answers, not failures", slices.Repeat([]error{errRateLimited}, 20), gobreaker.StateClosed},
		{"4xx dilute the failure ratio", append(slices.Repeat([]error{errBadRequest}, 6), errUnavailable, errUnavailable, errUnavailable, errUnavailable, errUnavailable), gobreaker.StateClosed},
		// Exclusions must count neither as failures nor as calls: four failures, ten exclusions and
		// one more failure are five failures out of five calls.
		{"cancelled calls do not count", append(append(slices.Repeat([]error{errUnavailable}, 4), slices.Repeat([]error{errCanceled}, 10)...), errUnavailable), gobreaker.StateOpen},
		{"context.Canceled itself does not count", append(append(slices.Repeat([]error{errUnavailable}, 4), slices.Repeat([]error{context.Canceled}, 10)...), errUnavailable), gobreaker.StateOpen},
		{"calls never sent do not count", append(append(slices.Repeat([]error{errUnavailable}, 4), slices.Repeat([]error{errNotSent}, 10)...), errUnavailable), gobreaker.StateOpen},
		{"excluded calls alone never open", slices.Repeat([]error{errCanceled, errNotSent}, 20), gobreaker.StateClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, rec := newBreaker(t, cfg)
			for _, err := range tc.calls {
				do(t, b, err)
			}
			if got := b.State(); got != tc.want {
				t.Errorf("after %d calls the breaker is %s, want %s", len(tc.calls), got, tc.want)
			}
			var want []string
			if tc.want == gobreaker.StateOpen {
				want = []string{"closed->open"}
			}
			if got := rec.list(); !slices.Equal(got, want) {
				t.Errorf("OnStateChange calls = %v, want %v", got, want)
			}
		})
	}
}

// open returns a breaker that opened after MinCalls failures, with the given cool-down and probes.
func open(t *testing.T, cooldown time.Duration, probes uint32) (*breaker.Breaker, *transitions) {
	t.Helper()
	b, rec := newBreaker(t, breaker.Config{MinCalls: 3, FailureRatio: 0.5, Cooldown: cooldown, Probes: probes})
	for range 3 {
		do(t, b, errUnavailable)
	}
	if b.State() != gobreaker.StateOpen {
		t.Fatalf("breaker is %s after 3 failures, want open", b.State())
	}
	return b, rec
}

func TestBreakerOpenRefusesWithoutCalling(t *testing.T) {
	t.Parallel()
	b, _ := open(t, time.Minute, 1)
	if b.Cooldown() != time.Minute {
		t.Errorf("Cooldown() = %s, want 1m", b.Cooldown())
	}
	for range 10 {
		err := b.Do(func() error {
			t.Error("fn called while the breaker is open")
			return nil
		})
		if !errors.Is(err, breaker.ErrOpen) {
			t.Fatalf("Do while open = %v, want ErrOpen", err)
		}
	}
	// Refusals are not outcomes: the breaker is still open, with the same cool-down.
	if b.State() != gobreaker.StateOpen {
		t.Errorf("breaker is %s after refusals, want open", b.State())
	}
}

func waitState(t *testing.T, b *breaker.Breaker, want gobreaker.State) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for b.State() != want {
		if time.Now().After(deadline) {
			t.Fatalf("breaker still %s, want %s", b.State(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestBreakerHalfOpen(t *testing.T) {
	t.Parallel()
	const cooldown = 100 * time.Millisecond
	tests := []struct {
		name      string
		probes    uint32
		outcomes  []error // of the probes, in order
		wantState gobreaker.State
		wantTrans []string
	}{
		{"one probe succeeds: closed", 1, []error{nil}, gobreaker.StateClosed,
			[]string{"closed->open", "open->half-open", "half-open->closed"}},
		{"one probe fails: open again", 1, []error{errUnavailable}, gobreaker.StateOpen,
			[]string{"closed->open", "open->half-open", "half-open->open"}},
		{"all probes succeed: closed", 3, []error{nil, nil, nil}, gobreaker.StateClosed,
			[]string{"closed->open", "open->half-open", "half-open->closed"}},
		{"a 4xx probe is an answer: closed", 1, []error{errBadRequest}, gobreaker.StateClosed,
			[]string{"closed->open", "open->half-open", "half-open->closed"}},
		{"the last probe fails: open again", 3, []error{nil, nil, errTimeout}, gobreaker.StateOpen,
			[]string{"closed->open", "open->half-open", "half-open->open"}},
		{"some probes succeed: still half-open", 3, []error{nil, nil}, gobreaker.StateHalfOpen,
			[]string{"closed->open", "open->half-open"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b, rec := open(t, cooldown, tc.probes)
			opened := time.Now()
			waitState(t, b, gobreaker.StateHalfOpen)
			if since := time.Since(opened); since <= 0 {
				t.Fatalf("half-open after %s", since)
			}
			for _, err := range tc.outcomes {
				do(t, b, err)
			}
			if got := b.State(); got != tc.wantState {
				t.Errorf("breaker is %s after the probes, want %s", got, tc.wantState)
			}
			if got := rec.list(); !slices.Equal(got, tc.wantTrans) {
				t.Errorf("OnStateChange calls = %v, want %v", got, tc.wantTrans)
			}
		})
	}
}

// TestBreakerHalfOpenLetsProbesThrough checks that the half-open breaker lets exactly Probes calls be
// in flight, refusing the rest without calling them.
func TestBreakerHalfOpenLetsProbesThrough(t *testing.T) {
	t.Parallel()
	const probes = 3
	b, rec := open(t, 50*time.Millisecond, probes)
	waitState(t, b, gobreaker.StateHalfOpen)

	release := make(chan struct{})
	started := make(chan struct{}, probes)
	var wg sync.WaitGroup
	for range probes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := b.Do(func() error {
				started <- struct{}{}
				<-release
				return nil
			})
			if err != nil {
				t.Errorf("probe Do = %v", err)
			}
		}()
	}
	for range probes {
		<-started
	}
	// Every probe is out: a further call is refused without being made.
	for range 5 {
		if err := b.Do(func() error { t.Error("fn called beyond the probes"); return nil }); !errors.Is(err, breaker.ErrOpen) {
			t.Fatalf("Do beyond the probes = %v, want ErrOpen", err)
		}
	}
	if b.State() != gobreaker.StateHalfOpen {
		t.Errorf("breaker is %s with probes out, want half-open", b.State())
	}
	close(release)
	wg.Wait()
	if b.State() != gobreaker.StateClosed {
		t.Errorf("breaker is %s after %d successful probes, want closed", b.State(), probes)
	}
	want := []string{"closed->open", "open->half-open", "half-open->closed"}
	if got := rec.list(); !slices.Equal(got, want) {
		t.Errorf("OnStateChange calls = %v, want %v", got, want)
	}
	// Closed again: calls go through, and counting starts afresh.
	do(t, b, nil)
	do(t, b, errUnavailable)
	if b.State() != gobreaker.StateClosed {
		t.Errorf("one failure after closing opened the breaker")
	}
}

// TestBreakerExcludedProbeFreesItsSlot: a probe cut short by our own shutdown says nothing about the
// API, so the breaker stays half-open and lets another probe through.
func TestBreakerExcludedProbeFreesItsSlot(t *testing.T) {
	t.Parallel()
	b, rec := open(t, 50*time.Millisecond, 1)
	waitState(t, b, gobreaker.StateHalfOpen)
	do(t, b, errCanceled)
	if b.State() != gobreaker.StateHalfOpen {
		t.Fatalf("breaker is %s after a cancelled probe, want half-open", b.State())
	}
	do(t, b, nil)
	if b.State() != gobreaker.StateClosed {
		t.Errorf("breaker is %s after a successful probe, want closed", b.State())
	}
	want := []string{"closed->open", "open->half-open", "half-open->closed"}
	if got := rec.list(); !slices.Equal(got, want) {
		t.Errorf("OnStateChange calls = %v, want %v", got, want)
	}
}

func TestBreakerDefaults(t *testing.T) {
	t.Parallel()
	b := breaker.New(breaker.Config{})
	if b.Cooldown() != 30*time.Second {
		t.Errorf("default Cooldown = %s, want 30s", b.Cooldown())
	}
	// Default MinCalls is 20: 19 failures leave it closed, the 20th opens it.
	for range 19 {
		do(t, b, errUnavailable)
	}
	if b.State() != gobreaker.StateClosed {
		t.Fatalf("breaker opened after 19 failures with MinCalls defaulting to 20")
	}
	do(t, b, errUnavailable)
	if b.State() != gobreaker.StateOpen {
		t.Errorf("breaker is %s after 20 failures, want open", b.State())
	}
	// No OnStateChange set: nothing to call, nothing panics.
}
