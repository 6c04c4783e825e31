package versori

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Error is an error response from the Embedded API: the HTTP status, the documented error body and any
// Retry-After the server sent.
type Error struct {
	Op         string // the client operation, e.g. "activate"
	StatusCode int
	ErrorBody
	// RetryAfter is how long the server asked us to wait; valid when HasRetryAfter.
	RetryAfter    time.Duration
	HasRetryAfter bool
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "versori %s: HTTP %d", e.Op, e.StatusCode)
	if e.Code != "" {
		b.WriteString(" code " + e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	for i, f := range e.Fields {
		if i == 0 {
			b.WriteString(" (")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(f.Field + ": " + f.Message)
		if i == len(e.Fields)-1 {
			b.WriteString(")")
		}
	}
	if e.HasRetryAfter {
		fmt.Fprintf(&b, " [retry after %s]", e.RetryAfter)
	}
	return b.String()
}

// TransportError is a call whose outcome the client could not read: the connection failed or was
// dropped, the call timed out or was cancelled, or a success response could not be decoded. The
// server may or may not have acted on the request.
type TransportError struct {
	Op  string
	Err error
	// NotSent is true when the request never left the client (it was still waiting for the rate
	// limiter when its context ended), so the outcome is known: nothing happened.
	NotSent bool
}

func (e *TransportError) Error() string { return "versori " + e.Op + ": " + e.Err.Error() }
func (e *TransportError) Unwrap() error { return e.Err }

// IsOutcomeUnknown reports whether err leaves it unknown if the API acted on the request: a transport
// failure, or a server error that a gateway may have returned after the backend committed.
func IsOutcomeUnknown(err error) bool {
	if err == nil {
		return false
	}
	var te *TransportError
	if errors.As(err, &te) {
		return !te.NotSent
	}
	var ae *Error
	return errors.As(err, &ae) && ae.StatusCode >= 500
}

// RetryAfterOf returns the wait the server asked for with err, if it asked.
func RetryAfterOf(err error) (time.Duration, bool) {
	var ae *Error
	if errors.As(err, &ae) && ae.HasRetryAfter {
		return ae.RetryAfter, true
	}
	return 0, false
}

// ParseRetryAfter reads a Retry-After header value in either of its forms (RFC 9110 §10.2.3): a
// number of seconds, or an HTTP-date, which is measured from now. A date in the past means no wait.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		const maxSecs = int64(365 * 24 * time.Hour / time.Second)
		return time.Duration(min(secs, maxSecs)) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}
