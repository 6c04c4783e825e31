package versori

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"
)

func TestErrorText(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{"status only", &Error{Op: OpGetActivation, StatusCode: 404}, "versori get_activation: HTTP 404"},
		{"code and message", &Error{Op: OpActivate, StatusCode: 400, ErrorBody: ErrorBody{Code: "400000", Message: "bad"}},
			"versori activate: HTTP 400 code 400000: bad"},
		{"one field", &Error{Op: OpActivate, StatusCode: 422, ErrorBody: ErrorBody{Code: "422000", Message: "invalid",
			Fields: []ErrorField{{Field: "userId", Message: "is required"}}}},
			"versori activate: HTTP 422 code 422000: invalid (userId: is required)"},
		{"two fields and retry after", &Error{Op: OpActivate, StatusCode: 429, ErrorBody: ErrorBody{Code: "429000", Message: "slow down",
			Fields: []ErrorField{{Field: "a", Message: "m1"}, {Field: "connections[0].templateId", Message: "m2"}}},
			RetryAfter: 3 * time.Second, HasRetryAfter: true},
			"versori activate: HTTP 429 code 429000: slow down (a: m1; connections[0].templateId: m2) [retry after 3s]"},
		{"retry after zero", &Error{Op: OpListActivations, StatusCode: 503, HasRetryAfter: true},
			"versori list_activations: HTTP 503 [retry after 0s]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() =\n  %q\nwant\n  %q", got, tt.want)
			}
		})
	}
}

func TestTransportErrorText(t *testing.T) {
	t.Parallel()
	err := &TransportError{Op: OpActivate, Err: io.ErrUnexpectedEOF}
	if got, want := err.Error(), "versori activate: unexpected EOF"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Error("TransportError does not unwrap to its cause")
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 3, 14, 15, 9, 26, 0, time.UTC)
	date := func(d time.Duration) string { return now.Add(d).Format(http.TimeFormat) }
	tests := []struct {
		in     string
		want   time.Duration
		wantOK bool
	}{
		{"0", 0, true},
		{"3", 3 * time.Second, true},
		{"120", 120 * time.Second, true},
		{"  7 ", 7 * time.Second, true},
		{"99999999999", 365 * 24 * time.Hour, true}, // capped at a year, no overflow
		{date(90 * time.Second), 90 * time.Second, true},
		{date(time.Hour), time.Hour, true},
		{now.Add(30 * time.Second).Format(time.RFC850), 30 * time.Second, true}, // obsolete form, still valid
		{date(0), 0, true},
		{date(-time.Hour), 0, true}, // past: no wait
		{"", 0, false},
		{"   ", 0, false},
		{"-1", 0, false},
		{"-120", 0, false},
		{"1.5", 0, false},
		{"soon", 0, false},
		{"Fri, 32 Foo 2025 99:99:99 GMT", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, ok := ParseRetryAfter(tt.in, now)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("ParseRetryAfter(%q) = %s, %v; want %s, %v", tt.in, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestRetryAfterOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		err    error
		want   time.Duration
		wantOK bool
	}{
		{"nil", nil, 0, false},
		{"plain", errors.New("boom"), 0, false},
		{"no retry after", &Error{StatusCode: 429}, 0, false},
		{"direct", &Error{StatusCode: 429, RetryAfter: 3 * time.Second, HasRetryAfter: true}, 3 * time.Second, true},
		{"wrapped", fmt.Errorf("job: %w", &Error{StatusCode: 503, RetryAfter: time.Minute, HasRetryAfter: true}), time.Minute, true},
		{"wrapped zero", fmt.Errorf("job: %w", &Error{StatusCode: 429, HasRetryAfter: true}), 0, true},
		{"transport", &TransportError{Op: OpActivate, Err: io.EOF}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := RetryAfterOf(tt.err)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("RetryAfterOf = %s, %v; want %s, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestStatusLabel(t *testing.T) {
	t.Parallel()
	for status, want := range map[int]string{0: "error", 200: "200", 429: "429", 503: "503"} {
		if got := StatusLabel(status); got != want {
			t.Errorf("StatusLabel(%d) = %q, want %q", status, got, want)
		}
	}
}

func TestIsNotSent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"not sent", &TransportError{Op: OpActivate, Err: context.Canceled, NotSent: true}, true},
		{"wrapped not sent", fmt.Errorf("job: %w", &TransportError{Op: OpActivate, Err: context.Canceled, NotSent: true}), true},
		{"maybe sent", &TransportError{Op: OpActivate, Err: io.EOF}, false},
		{"error response", &Error{StatusCode: 400}, false},
		{"plain", errors.New("boom"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := IsNotSent(tt.err); got != tt.want {
				t.Errorf("IsNotSent(%v) = %v, want %v", tt.err, got, tt.want)
			}
			if tt.want && IsOutcomeUnknown(tt.err) {
				t.Errorf("IsOutcomeUnknown(%v) = true for a request never sent", tt.err)
			}
		})
	}
}

// TestNeverSent checks which errors of http.Client.Do prove that the request never left: only those
// of setting up the connection. Anything else must read as "maybe sent".
func TestNeverSent(t *testing.T) {
	t.Parallel()
	urlErr := func(err error) error { return &url.Error{Op: "Post", URL: "https://api.example/activations", Err: err} }
	dial := func(err error) error { return &net.OpError{Op: "dial", Net: "tcp", Err: err} }
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", urlErr(dial(syscall.ECONNREFUSED)), true},
		{"network unreachable", urlErr(dial(syscall.ENETUNREACH)), true},
		{"dial timeout", urlErr(dial(os.ErrDeadlineExceeded)), true},
		{"DNS in dial", urlErr(dial(&net.DNSError{Err: "no such host", Name: "api.example", IsNotFound: true})), true},
		{"DNS alone", urlErr(&net.DNSError{Err: "server misbehaving", Name: "api.example", IsTemporary: true}), true},
		{"proxy", urlErr(&net.OpError{Op: "proxyconnect", Net: "tcp", Err: dial(syscall.ECONNREFUSED)}), true},
		{"scheme mismatch", urlErr(http.ErrSchemeMismatch), true},
		{"not TLS before the handshake", urlErr(tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake", Conn: &net.TCPConn{}}), true},
		{"bad record after the handshake", urlErr(tls.RecordHeaderError{Msg: "oversized record received"}), false},
		{"certificate verification", urlErr(&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), true},
		{"unknown authority", urlErr(x509.UnknownAuthorityError{}), true},
		{"hostname", urlErr(x509.HostnameError{Host: "api.example"}), true},
		{"expired", urlErr(x509.CertificateInvalidError{Reason: x509.Expired}), true},
		{"EOF", urlErr(io.EOF), false},
		{"unexpected EOF", urlErr(io.ErrUnexpectedEOF), false},
		{"reset while reading", urlErr(&net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}), false},
		{"broken pipe while writing", urlErr(&net.OpError{Op: "write", Net: "tcp", Err: syscall.EPIPE}), false},
		{"TLS alert", urlErr(&net.OpError{Op: "remote error", Err: errors.New("tls: handshake failure")}), false},
		{"deadline", urlErr(context.DeadlineExceeded), false},
		{"canceled", urlErr(context.Canceled), false},
		{"plain", errors.New("boom"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := neverSent(tt.err); got != tt.want {
				t.Errorf("neverSent(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
