package versori

import (
	"errors"
	"strings"
)

// Class is what an outcome of a call to the Embedded API means for the job that made it. Every
// outcome has exactly one class, given by Classify; the job's retry policy is keyed on it.
type Class string

// The outcome classes. Their string values are used as-is in logs, metrics labels and docs.
const (
	ClassOK                 Class = "ok"
	ClassTransient          Class = "transient"           // 5xx (not 501/505), 408, 425, network errors, timeouts, dropped responses
	ClassRateLimited        Class = "rate_limited"        // 429
	ClassMissingConnections Class = "missing_connections" // a 400 or 422 whose fields name the request's connections
	ClassInvalidRequest     Class = "invalid_request"     // 400, 422
	ClassUnauthorized       Class = "unauthorized"        // 401, 403
	ClassNotFound           Class = "not_found"           // 404, 410: unknown user or integration
	// ClassConflict is 409: the API refused because of existing state; the pair may already be active,
	// so the job looks it up.
	ClassConflict  Class = "conflict"
	ClassPermanent Class = "permanent" // 3xx, any other error response, or a bug on our side
)

// Classes lists every class, for metrics initialisation and docs.
func Classes() []Class {
	return []Class{
		ClassOK, ClassTransient, ClassRateLimited, ClassMissingConnections,
		ClassInvalidRequest, ClassUnauthorized, ClassNotFound, ClassConflict, ClassPermanent,
	}
}

// classRule maps matching error responses to a class.
type classRule struct {
	name  string
	match func(e *Error) bool
	class Class
}

// classRules is the one table that turns an error response into a class; the first match wins.
//
// Rules read only the status and the structured fields, never the message: a gateway or proxy in
// front of the API writes its own prose ("upstream connection reset", an HTML page with
// "Connection: close"), and a word in it must not turn a retryable or fixable answer into another
// class. The API does not document which status means "missing connections"; it answers 400 or 422
// with a field error on the request's connections, so only that counts, ahead of the generic 400 and
// 422 rules.
var classRules = []classRule{
	// The client never follows a redirect (a POST re-sent elsewhere, or turned into a GET, is not the
	// call we meant); a redirect means the base URL points at the wrong place, which retrying won't fix.
	{"3xx redirect", statusIn(300, 399), ClassPermanent},
	{"429 Too Many Requests", status(429), ClassRateLimited},
	{"408 Request Timeout", status(408), ClassTransient},
	{"425 Too Early", status(425), ClassTransient},
	{"401 Unauthorized", status(401), ClassUnauthorized},
	{"403 Forbidden", status(403), ClassUnauthorized},
	{"404 Not Found", status(404), ClassNotFound},
	{"410 Gone", status(410), ClassNotFound},
	{"409 Conflict", status(409), ClassConflict},
	{"400 or 422 with a connections field", func(e *Error) bool {
		return (e.StatusCode == 400 || e.StatusCode == 422) && namesConnections(e.Fields)
	}, ClassMissingConnections},
	{"400 Bad Request", status(400), ClassInvalidRequest},
	{"422 Unprocessable Content", status(422), ClassInvalidRequest},
	{"501 Not Implemented", status(501), ClassPermanent},
	{"505 HTTP Version Not Supported", status(505), ClassPermanent},
	{"other 5xx", statusIn(500, 599), ClassTransient},
	{"other status", func(*Error) bool { return true }, ClassPermanent},
}

// Classify maps the outcome of a client call to its class: nil is ClassOK, an *Error is classified by
// classRules, a *TransportError (connection failures, timeouts, cancellations, dropped or undecodable
// responses) is ClassTransient, and anything else is ClassPermanent.
func Classify(err error) Class {
	if err == nil {
		return ClassOK
	}
	var ae *Error
	if errors.As(err, &ae) {
		for _, r := range classRules {
			if r.match(ae) {
				return r.class
			}
		}
	}
	var te *TransportError
	if errors.As(err, &te) {
		return ClassTransient
	}
	return ClassPermanent
}

func status(code int) func(*Error) bool {
	return func(e *Error) bool { return e.StatusCode == code }
}

func statusIn(lo, hi int) func(*Error) bool {
	return func(e *Error) bool { return e.StatusCode >= lo && e.StatusCode <= hi }
}

// namesConnections reports whether a field error points into the request's "connections": the
// array itself, an element ("connections[0]...") or a member path ("connections.0..."). A field
// that merely starts with the word ("connectionsCount") does not.
func namesConnections(fields []ErrorField) bool {
	for _, f := range fields {
		rest, ok := strings.CutPrefix(f.Field, "connections")
		if ok && (rest == "" || rest[0] == '[' || rest[0] == '.') {
			return true
		}
	}
	return false
}
