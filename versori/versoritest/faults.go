package versoritest

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/versori/activator/versori"
)

// DefaultRetryAfter is the Retry-After sent with rate-limit faults when Faults.RetryAfter is empty.
const DefaultRetryAfter = "1"

// Faults are the misbehaviours in force. Latency applies to every call; the rates apply to POST
// /activations only, and are drawn once per POST from the seeded RNG in the order 503, 429, drop, so
// that together they must not exceed 1.
//
// In JSON (the /_standin/faults admin endpoint) durations are Go duration strings such as "250ms";
// plain numbers are read as nanoseconds.
type Faults struct {
	Latency time.Duration // every call waits this long before being handled
	// LatencyAfterCommit makes POST /activations wait after committing, before answering, so that a
	// client timeout leaves the outcome unknown while the activation exists.
	LatencyAfterCommit  time.Duration
	ServerErrorRate     float64 // fraction of POSTs answered 503, not committed
	RateLimitRate       float64 // fraction of POSTs answered 429 with Retry-After, not committed
	RetryAfter          string  // Retry-After sent with those 429s (default DefaultRetryAfter); may be an HTTP-date
	DropAfterCommitRate float64 // fraction of POSTs committed, then the connection is closed with no answer
}

// Validate reports rates outside [0, 1], rates adding up to more than 1, and negative latencies.
func (f Faults) Validate() error {
	rates := []struct {
		name string
		v    float64
	}{{"serverErrorRate", f.ServerErrorRate}, {"rateLimitRate", f.RateLimitRate}, {"dropAfterCommitRate", f.DropAfterCommitRate}}
	sum := 0.0
	for _, r := range rates {
		if !(r.v >= 0 && r.v <= 1) {
			return fmt.Errorf("%s %v is not within [0, 1]", r.name, r.v)
		}
		sum += r.v
	}
	if sum > 1+1e-9 {
		return fmt.Errorf("fault rates add up to %v, more than 1", sum)
	}
	if f.Latency < 0 || f.LatencyAfterCommit < 0 {
		return errors.New("latencies must not be negative")
	}
	if f.RetryAfter != "" {
		if _, ok := versori.ParseRetryAfter(f.RetryAfter, time.Now()); !ok {
			return fmt.Errorf("retryAfter %q is neither seconds nor an HTTP-date", f.RetryAfter)
		}
	}
	return nil
}

// faultsJSON is Faults' wire form, with durations that read as strings or nanoseconds.
type faultsJSON struct {
	Latency             jsonDuration `json:"latency"`
	LatencyAfterCommit  jsonDuration `json:"latencyAfterCommit"`
	ServerErrorRate     float64      `json:"serverErrorRate"`
	RateLimitRate       float64      `json:"rateLimitRate"`
	RetryAfter          string       `json:"retryAfter,omitempty"`
	DropAfterCommitRate float64      `json:"dropAfterCommitRate"`
}

// MarshalJSON writes durations as Go duration strings, so the admin endpoint's output can be sent back.
func (f Faults) MarshalJSON() ([]byte, error) {
	return json.Marshal(faultsJSON{
		jsonDuration(f.Latency), jsonDuration(f.LatencyAfterCommit), f.ServerErrorRate,
		f.RateLimitRate, f.RetryAfter, f.DropAfterCommitRate,
	})
}

// UnmarshalJSON reads durations as Go duration strings or as nanoseconds; absent fields are zero.
func (f *Faults) UnmarshalJSON(b []byte) error {
	var j faultsJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*f = Faults{
		Latency: time.Duration(j.Latency), LatencyAfterCommit: time.Duration(j.LatencyAfterCommit),
		ServerErrorRate: j.ServerErrorRate, RateLimitRate: j.RateLimitRate,
		RetryAfter: j.RetryAfter, DropAfterCommitRate: j.DropAfterCommitRate,
	}
	return nil
}

type jsonDuration time.Duration

func (d jsonDuration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

func (d *jsonDuration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = jsonDuration(v)
		return nil
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return fmt.Errorf("duration %s is neither a Go duration string nor nanoseconds", b)
	}
	*d = jsonDuration(n)
	return nil
}

// Fault is one scripted answer to one pair's next POST /activations. It is consumed once the call is
// authenticated and decoded, ahead of the fault rates, and it replaces LatencyAfterCommit for that call.
//
// A Fault without Commit answers without looking at the request further, as a gateway would. One with
// Commit still meets the API's own checks (unknown user or integration, missing connections) and
// answers those instead when they fail. One with neither Status nor Drop answers normally (commit,
// then 200) after Delay, which makes it a way to slow down one call; if the client goes away during
// that Delay, nothing is committed.
type Fault struct {
	Status     int                // answer this status with an error body (0: no status fault)
	RetryAfter string             // Retry-After header sent with it, when set
	Body       *versori.ErrorBody // error body sent (default: a generic one for the status)
	Commit     bool               // commit the activation before answering or dropping
	Drop       bool               // close the connection without answering
	Delay      time.Duration      // wait before answering (after committing when Commit)
}

// commits reports whether the call creates an activation, given that it passes validation.
func (f Fault) commits() bool { return f.Commit || (f.Status == 0 && !f.Drop) }

// plan is what one POST will do, decided under the lock when it arrives.
type plan struct {
	fault Fault
	// afterCommit is the wait between committing and answering.
	afterCommit time.Duration
	// beforeCommit is the wait before a plain success commits.
	beforeCommit time.Duration
}

// planLocked consumes p's next scripted fault, or else draws from the fault rates. A scripted fault
// carries its own timing; the rates' calls wait LatencyAfterCommit after committing.
func (s *Server) planLocked(p versori.Pair) plan {
	if q := s.scripts[p]; len(q) > 0 {
		f := q[0]
		if len(q) == 1 {
			delete(s.scripts, p)
		} else {
			s.scripts[p] = q[1:]
		}
		if f.Commit {
			return plan{fault: f, afterCommit: f.Delay}
		}
		return plan{fault: f, beforeCommit: f.Delay}
	}
	fs := s.faults
	pl := plan{afterCommit: fs.LatencyAfterCommit}
	if fs.ServerErrorRate <= 0 && fs.RateLimitRate <= 0 && fs.DropAfterCommitRate <= 0 {
		return pl
	}
	// One draw per POST whatever the rates, so the sequence of faults depends only on the seed and
	// the order of the calls.
	x := s.rng.Float64()
	switch {
	case x < fs.ServerErrorRate:
		pl.fault = Fault{Status: http.StatusServiceUnavailable}
	case x < fs.ServerErrorRate+fs.RateLimitRate:
		ra := fs.RetryAfter
		if ra == "" {
			ra = DefaultRetryAfter
		}
		pl.fault = Fault{Status: http.StatusTooManyRequests, RetryAfter: ra}
	case x < fs.ServerErrorRate+fs.RateLimitRate+fs.DropAfterCommitRate:
		pl.fault = Fault{Commit: true, Drop: true}
	}
	return pl
}
