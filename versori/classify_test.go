package versori

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
)

// firstRule returns the name of the first rule of classRules that matches e.
func firstRule(e *Error) string {
	for _, r := range classRules {
		if r.match(e) {
			return r.name
		}
	}
	return ""
}

func TestClassifyRules(t *testing.T) {
	t.Parallel()
	connField := []ErrorField{{Field: "connections", Message: "missing connection for template X"}}
	tests := []struct {
		name string
		err  *Error
		rule string // the rule of classRules expected to match first
		want Class
	}{
		{"429", &Error{StatusCode: 429}, "429 Too Many Requests", ClassRateLimited},
		{"429 naming connections", &Error{StatusCode: 429, ErrorBody: ErrorBody{Message: "too many connections"}}, "429 Too Many Requests", ClassRateLimited},
		{"408", &Error{StatusCode: 408}, "408 Request Timeout", ClassTransient},
		{"401", &Error{StatusCode: 401}, "401 Unauthorized", ClassUnauthorized},
		{"401 naming connections", &Error{StatusCode: 401, ErrorBody: ErrorBody{Message: "not allowed to use connections", Fields: connField}}, "401 Unauthorized", ClassUnauthorized},
		{"403", &Error{StatusCode: 403}, "403 Forbidden", ClassUnauthorized},
		{"400 with connections field", &Error{StatusCode: 400, ErrorBody: ErrorBody{Fields: connField}}, "4xx naming connections", ClassMissingConnections},
		{"422 with indexed connections field", &Error{StatusCode: 422, ErrorBody: ErrorBody{Fields: []ErrorField{{Field: "connections[0].templateId", Message: "unknown"}}}}, "4xx naming connections", ClassMissingConnections},
		{"400 with message only", &Error{StatusCode: 400, ErrorBody: ErrorBody{Message: "missing connection for template 01ABC"}}, "4xx naming connections", ClassMissingConnections},
		{"400 with message in capitals", &Error{StatusCode: 400, ErrorBody: ErrorBody{Message: "Connections are required"}}, "4xx naming connections", ClassMissingConnections},
		{"404 about a connection", &Error{StatusCode: 404, ErrorBody: ErrorBody{Message: "connection 01ABC not found"}}, "4xx naming connections", ClassMissingConnections},
		{"404", &Error{StatusCode: 404, ErrorBody: ErrorBody{Message: "end user u1 not found"}}, "404 Not Found", ClassNotFound},
		{"410", &Error{StatusCode: 410}, "410 Gone", ClassNotFound},
		{"400 about userId", &Error{StatusCode: 400, ErrorBody: ErrorBody{Message: "invalid request: userId is required", Fields: []ErrorField{{Field: "userId", Message: "is required"}}}}, "400 Bad Request", ClassInvalidRequest},
		{"400 word inside another word", &Error{StatusCode: 400, ErrorBody: ErrorBody{Message: "bad interconnectionsId"}}, "400 Bad Request", ClassInvalidRequest},
		{"422", &Error{StatusCode: 422}, "422 Unprocessable Content", ClassInvalidRequest},
		{"501", &Error{StatusCode: 501}, "501 Not Implemented", ClassPermanent},
		{"505", &Error{StatusCode: 505}, "505 HTTP Version Not Supported", ClassPermanent},
		{"500", &Error{StatusCode: 500}, "other 5xx", ClassTransient},
		{"502", &Error{StatusCode: 502}, "other 5xx", ClassTransient},
		{"503 naming connections", &Error{StatusCode: 503, ErrorBody: ErrorBody{Message: "too many connections"}}, "other 5xx", ClassTransient},
		{"599", &Error{StatusCode: 599}, "other 5xx", ClassTransient},
		{"418", &Error{StatusCode: 418}, "other status", ClassPermanent},
		{"304", &Error{StatusCode: 304}, "other status", ClassPermanent},
		{"600", &Error{StatusCode: 600}, "other status", ClassPermanent},
	}
	covered := make(map[string]bool)
	for _, tt := range tests {
		covered[tt.rule] = true
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := firstRule(tt.err); got != tt.rule {
				t.Errorf("first matching rule = %q, want %q", got, tt.rule)
			}
			if got := Classify(tt.err); got != tt.want {
				t.Errorf("Classify = %q, want %q", got, tt.want)
			}
			if got := Classify(fmt.Errorf("x: %w", tt.err)); got != tt.want {
				t.Errorf("Classify(wrapped) = %q, want %q", got, tt.want)
			}
			if got := Classify(fmt.Errorf("y: %w", fmt.Errorf("x: %w", tt.err))); got != tt.want {
				t.Errorf("Classify(wrapped twice) = %q, want %q", got, tt.want)
			}
		})
	}
	for _, r := range classRules {
		if !covered[r.name] {
			t.Errorf("rule %q has no test row", r.name)
		}
	}
}

func TestClassifyOtherErrors(t *testing.T) {
	t.Parallel()
	opErr := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	tests := []struct {
		name string
		err  error
		want Class
	}{
		{"nil", nil, ClassOK},
		{"transport EOF", &TransportError{Op: OpActivate, Err: io.EOF}, ClassTransient},
		{"transport deadline", &TransportError{Op: OpActivate, Err: context.DeadlineExceeded}, ClassTransient},
		{"transport canceled", &TransportError{Op: OpActivate, Err: context.Canceled}, ClassTransient},
		{"transport net.OpError", &TransportError{Op: OpListActivations, Err: opErr}, ClassTransient},
		{"transport ECONNRESET", &TransportError{Op: OpActivate, Err: syscall.ECONNRESET}, ClassTransient},
		{"wrapped transport", fmt.Errorf("job: %w", &TransportError{Op: OpActivate, Err: io.ErrUnexpectedEOF}), ClassTransient},
		{"plain error", errors.New("boom"), ClassPermanent},
		{"bare context error", context.DeadlineExceeded, ClassPermanent},
		{"bare net error", opErr, ClassPermanent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Classify(tt.err); got != tt.want {
				t.Errorf("Classify(%v) = %q, want %q", tt.err, got, tt.want)
			}
		})
	}
}

func TestClassesListsEveryClass(t *testing.T) {
	t.Parallel()
	seen := make(map[Class]bool)
	for _, c := range Classes() {
		if seen[c] {
			t.Errorf("class %q listed twice", c)
		}
		seen[c] = true
	}
	for _, r := range classRules {
		if !seen[r.class] {
			t.Errorf("rule %q yields class %q, which Classes does not list", r.name, r.class)
		}
	}
	for _, c := range []Class{ClassOK, ClassTransient, ClassPermanent} {
		if !seen[c] {
			t.Errorf("Classes does not list %q", c)
		}
	}
}

func TestIsOutcomeUnknown(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"transport", &TransportError{Op: OpActivate, Err: io.EOF}, true},
		{"wrapped transport", fmt.Errorf("x: %w", &TransportError{Op: OpActivate, Err: context.DeadlineExceeded}), true},
		{"500", &Error{StatusCode: 500}, true},
		{"502", &Error{StatusCode: 502}, true},
		{"503 wrapped", fmt.Errorf("x: %w", &Error{StatusCode: 503}), true},
		{"504", &Error{StatusCode: 504}, true},
		{"400", &Error{StatusCode: 400}, false},
		{"404", &Error{StatusCode: 404}, false},
		{"409", &Error{StatusCode: 409}, false},
		{"429", &Error{StatusCode: 429}, false},
		{"plain", errors.New("boom"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := IsOutcomeUnknown(tt.err); got != tt.want {
				t.Errorf("IsOutcomeUnknown(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}
