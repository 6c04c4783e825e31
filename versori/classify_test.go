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
		{"429 naming connections", &Error{StatusCode: 429, ErrorBody: ErrorBody{Message: "too many connections", Fields: connField}}, "429 Too Many Requests", ClassRateLimited},
		{"408", &Error{StatusCode: 408}, "408 Request Timeout", ClassTransient},
		{"425", &Error{StatusCode: 425}, "425 Too Early", ClassTransient},
		{"401", &Error{StatusCode: 401}, "401 Unauthorized", ClassUnauthorized},
		{"401 naming connections", &Error{StatusCode: 401, ErrorBody: ErrorBody{Message: "not allowed to use connections", Fields: connField}}, "401 Unauthorized", ClassUnauthorized},
		{"403", &Error{StatusCode: 403}, "403 Forbidden", ClassUnauthorized},
		{"409", &Error{StatusCode: 409, ErrorBody: ErrorBody{Message: "integration already activated for this user"}}, "409 Conflict", ClassConflict},
		{"409 with a connections field", &Error{StatusCode: 409, ErrorBody: ErrorBody{Fields: connField}}, "409 Conflict", ClassConflict},
		{"400 with connections field", &Error{StatusCode: 400, ErrorBody: ErrorBody{Fields: connField}}, "400 or 422 with a connections field", ClassMissingConnections},
		{"422 with indexed connections field", &Error{StatusCode: 422, ErrorBody: ErrorBody{Fields: []ErrorField{{Field: "connections[0].templateId", Message: "unknown"}}}}, "400 or 422 with a connections field", ClassMissingConnections},
		{"400 with dotted connections field", &Error{StatusCode: 400, ErrorBody: ErrorBody{Fields: []ErrorField{{Field: "userId", Message: "odd"}, {Field: "connections.0.templateId", Message: "unknown"}}}}, "400 or 422 with a connections field", ClassMissingConnections},
		// Prose never decides: a gateway's or a database's words about "connections" are not a field error.
		{"400 with message only", &Error{StatusCode: 400, ErrorBody: ErrorBody{Message: "missing connection for template 01ABC"}}, "400 Bad Request", ClassInvalidRequest},
		{"400 upstream connection reset", &Error{StatusCode: 400, ErrorBody: ErrorBody{Message: "upstream connection reset"}}, "400 Bad Request", ClassInvalidRequest},
		{"400 proxy HTML page", &Error{StatusCode: 400, ErrorBody: ErrorBody{Message: "<html><head><title>400 Bad Request</title></head><body><pre>Connection: close</pre></body></html>"}}, "400 Bad Request", ClassInvalidRequest},
		{"400 message in capitals", &Error{StatusCode: 400, ErrorBody: ErrorBody{Message: "Connections are required"}}, "400 Bad Request", ClassInvalidRequest},
		{"400 field merely starting with the word", &Error{StatusCode: 400, ErrorBody: ErrorBody{Fields: []ErrorField{{Field: "connectionsCount", Message: "too big"}}}}, "400 Bad Request", ClassInvalidRequest},
		{"400 field in another object", &Error{StatusCode: 400, ErrorBody: ErrorBody{Fields: []ErrorField{{Field: "user.connections", Message: "odd"}}}}, "400 Bad Request", ClassInvalidRequest},
		{"422 database connection", &Error{StatusCode: 422, ErrorBody: ErrorBody{Message: "could not acquire database connection"}}, "422 Unprocessable Content", ClassInvalidRequest},
		{"404 connection template", &Error{StatusCode: 404, ErrorBody: ErrorBody{Message: "connection template not found"}}, "404 Not Found", ClassNotFound},
		{"404 with a connections field", &Error{StatusCode: 404, ErrorBody: ErrorBody{Message: "connection 01ABC not found", Fields: connField}}, "404 Not Found", ClassNotFound},
		{"404", &Error{StatusCode: 404, ErrorBody: ErrorBody{Message: "end user u1 not found"}}, "404 Not Found", ClassNotFound},
		{"410", &Error{StatusCode: 410}, "410 Gone", ClassNotFound},
		{"410 with a connections field", &Error{StatusCode: 410, ErrorBody: ErrorBody{Fields: connField}}, "410 Gone", ClassNotFound},
		{"400 about userId", &Error{StatusCode: 400, ErrorBody: ErrorBody{Message: "invalid request: userId is required", Fields: []ErrorField{{Field: "userId", Message: "is required"}}}}, "400 Bad Request", ClassInvalidRequest},
		{"400 word inside another word", &Error{StatusCode: 400, ErrorBody: ErrorBody{Message: "bad interconnectionsId"}}, "400 Bad Request", ClassInvalidRequest},
		{"422", &Error{StatusCode: 422}, "422 Unprocessable Content", ClassInvalidRequest},
		{"418 with a connections field", &Error{StatusCode: 418, ErrorBody: ErrorBody{Fields: connField}}, "other status", ClassPermanent},
		{"501", &Error{StatusCode: 501}, "501 Not Implemented", ClassPermanent},
		{"505", &Error{StatusCode: 505}, "505 HTTP Version Not Supported", ClassPermanent},
		{"500", &Error{StatusCode: 500}, "other 5xx", ClassTransient},
		{"502", &Error{StatusCode: 502}, "other 5xx", ClassTransient},
		{"503 naming connections", &Error{StatusCode: 503, ErrorBody: ErrorBody{Message: "too many connections", Fields: connField}}, "other 5xx", ClassTransient},
		{"599", &Error{StatusCode: 599}, "other 5xx", ClassTransient},
		{"300", &Error{StatusCode: 300}, "3xx redirect", ClassPermanent},
		{"301", &Error{StatusCode: 301}, "3xx redirect", ClassPermanent},
		{"302", &Error{StatusCode: 302}, "3xx redirect", ClassPermanent},
		{"303", &Error{StatusCode: 303}, "3xx redirect", ClassPermanent},
		{"304", &Error{StatusCode: 304}, "3xx redirect", ClassPermanent},
		{"307", &Error{StatusCode: 307}, "3xx redirect", ClassPermanent},
		{"308", &Error{StatusCode: 308}, "3xx redirect", ClassPermanent},
		{"418", &Error{StatusCode: 418}, "other status", ClassPermanent},
		{"101", &Error{StatusCode: 101}, "other status", ClassPermanent},
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
		{"transport not sent", &TransportError{Op: OpActivate, Err: context.DeadlineExceeded, NotSent: true}, false},
		{"wrapped transport not sent", fmt.Errorf("x: %w", &TransportError{Op: OpActivate, Err: errors.New("dial"), NotSent: true}), false},
		{"500", &Error{StatusCode: 500}, true},
		{"501: nothing done", &Error{StatusCode: 501}, false},
		{"502", &Error{StatusCode: 502}, true},
		{"503 wrapped", fmt.Errorf("x: %w", &Error{StatusCode: 503}), true},
		{"504", &Error{StatusCode: 504}, true},
		{"505: nothing done", &Error{StatusCode: 505}, false},
		{"599", &Error{StatusCode: 599}, true},
		{"400", &Error{StatusCode: 400}, false},
		{"404", &Error{StatusCode: 404}, false},
		{"408", &Error{StatusCode: 408}, false},
		{"409", &Error{StatusCode: 409}, false},
		{"425", &Error{StatusCode: 425}, false},
		{"429", &Error{StatusCode: 429}, false},
		{"301", &Error{StatusCode: 301}, false},
		{"307", &Error{StatusCode: 307}, false},
		{"308 wrapped", fmt.Errorf("x: %w", &Error{StatusCode: 308}), false},
		{"600", &Error{StatusCode: 600}, false},
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
