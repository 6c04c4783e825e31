package versori

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
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
// dropped, the call timed out or was cancelled, or a success response could not be decoded or did
// not have the documented shape. Unless NotSent, the server may or may not have acted on the request.
type TransportError struct {
	Op  string
	Err error
	// NotSent is true when the request provably never left the client, so the outcome is known:
	// nothing happened. That is so when the call was still waiting for a slot or the rate limiter
	// when its context ended, and when the connection could not be set up (refused, DNS lookup,
	// dial timeout, proxy, TLS handshake refused by a certificate check or not TLS at all).
	NotSent bool
}

func (e *TransportError) Error() string { return "versori " + e.Op + ": " + e.Err.Error() }
func (e *TransportError) Unwrap() error { return e.Err }

// IsOutcomeUnknown reports whether err leaves it unknown if the API acted on the request: a transport
// failure after the request may have been written, or a 5xx that a gateway may have returned after
// the backend committed. A 3xx or 4xx answer, or a request that never left, is a known outcome.
func IsOutcomeUnknown(err error) bool {
	if err == nil {
		return false
	}
	var te *TransportError
	if errors.As(err, &te) {
		return !te.NotSent
	}
	var ae *Error
	// 501 and 505 say the server does not do what was asked at all, so nothing was done.
	return errors.As(err, &ae) && ae.StatusCode >= 500 && ae.StatusCode <= 599 &&
		ae.StatusCode != http.StatusNotImplemented && ae.StatusCode != http.StatusHTTPVersionNotSupported
}

// IsNotSent reports whether err is a *TransportError for a request that provably never left the client.
func IsNotSent(err error) bool {
	var te *TransportError
	return errors.As(err, &te) && te.NotSent
}

// neverSent reports whether an error from http.Client.Do proves that no byte of the request was
// written: it failed while the connection was being set up, before net/http writes anything.
//
// It inspects the error rather than tracing the call with net/http/httptrace (WroteHeaders), because
// a trace costs every call an allocation and a context, while this runs only on the error path.
// It errs towards "maybe sent": an error it does not recognise (a context that ended while dialling,
// net/http's TLS handshake timeout, a TLS alert from the server) leaves the outcome unknown, which
// costs a look-up; calling a failure "not sent" wrongly could activate a pair twice.
func neverSent(err error) bool {
	var oe *net.OpError
	// net.Dialer reports every failure (refused, unreachable, DNS, dial timeout) as Op "dial", and
	// net/http wraps any failure of a proxied connection's set-up (dial, CONNECT, TLS) as
	// "proxyconnect"; both happen before the request is written.
	if errors.As(err, &oe) && (oe.Op == "dial" || oe.Op == "proxyconnect") {
		return true
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return true
	}
	// A server that answers the TLS hello in plain HTTP, or with something that is not TLS: its
	// RecordHeaderError carries the connection only when no handshake had happened yet.
	if errors.Is(err, http.ErrSchemeMismatch) {
		return true
	}
	var rhe tls.RecordHeaderError
	if errors.As(err, &rhe) && rhe.Conn != nil {
		return true
	}
	// Certificate checks fail during the handshake, before any request byte is encrypted.
	var cve *tls.CertificateVerificationError
	var uae x509.UnknownAuthorityError
	var he x509.HostnameError
	var cie x509.CertificateInvalidError
	return errors.As(err, &cve) || errors.As(err, &uae) || errors.As(err, &he) || errors.As(err, &cie)
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
