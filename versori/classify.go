package versori

import (
	"errors"
	"regexp"
	"strings"
)

// Class is what an outcome of a call to the Embedded API means for the job that made it. Every
// outcome has exactly one class, given by Classify; the job's retry policy is keyed on it.
type Class string

// The outcome classes. Their string values are used as-is in logs, metrics labels and docs.
const (
	ClassOK                 Class = "ok"
	ClassTransient          Class = "transient"           // 5xx, 408, network errors, timeouts, dropped responses
	ClassRateLimited        Class = "rate_limited"        // 429
	ClassMissingConnections Class = "missing_connections" // a 4xx that names the request's connections
	ClassInvalidRequest     Class = "invalid_request"     // 400, 422
	ClassUnauthorized       Class = "unauthorized"        // 401, 403
	ClassNotFound           Class = "not_found"           // 404: unknown user or integration
	ClassPermanent          Class = "permanent"           // any other error response, or a bug on our side
)

// Classes lists every class, for metrics initialisation and docs.
func Classes() []Class {
	return []Class{
		ClassOK, ClassTransient, ClassRateLimited, ClassMissingConnections,
		ClassInvalidRequest, ClassUnauthorized, ClassNotFound, ClassPermanent,
	}
}

// classRule maps matching error responses to a class.
type classRule struct {
	name  string
	match func(e *Error) bool
	class Class
}

// classRules is the one table that turns an error response into a class; the first match wins.
// The API does not document which status means "missing connections", so any 4xx whose fields or
// message point at connections counts as that, ahead of the generic 4xx rules.
var classRules = []classRule{
	{"429 Too Many Requests", status(429), ClassRateLimited},
	{"408 Request Timeout", status(408), ClassTransient},
	{"401 Unauthorized", status(401), ClassUnauthorized},
	{"403 Forbidden", status(403), ClassUnauthorized},
	{"4xx naming connections", func(e *Error) bool { return is4xx(e) && mentionsConnections(e) }, ClassMissingConnections},
	{"404 Not Found", status(404), ClassNotFound},
	{"410 Gone", status(410), ClassNotFound},
	{"400 Bad Request", status(400), ClassInvalidRequest},
	{"422 Unprocessable Content", status(422), ClassInvalidRequest},
	{"501 Not Implemented", status(501), ClassPermanent},
	{"505 HTTP Version Not Supported", status(505), ClassPermanent},
	{"other 5xx", func(e *Error) bool { return e.StatusCode >= 500 && e.StatusCode <= 599 }, ClassTransient},
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

func is4xx(e *Error) bool { return e.StatusCode >= 400 && e.StatusCode <= 499 }

var connectionsWord = regexp.MustCompile(`(?i)\bconnections?\b`)

func mentionsConnections(e *Error) bool {
	for _, f := range e.Fields {
		if strings.HasPrefix(f.Field, "connections") {
			return true
		}
	}
	return connectionsWord.MatchString(e.Message)
}
