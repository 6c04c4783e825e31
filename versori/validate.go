package versori

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/oklog/ulid/v2"
)

// maxUserIDLength bounds an end user's external id, which becomes part of a task id and a Redis key.
const maxUserIDLength = 256

// ValidationError says which field of an activation request is malformed and why.
type ValidationError struct {
	Field  string // JSON path of the field, e.g. "connections[1].templateId"
	Reason string
}

func (e *ValidationError) Error() string { return e.Field + ": " + e.Reason }

func invalid(field, format string, args ...any) *ValidationError {
	return &ValidationError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Validate checks r before it is enqueued, so that a malformed request is refused at the door
// instead of being dead-lettered later. It returns a *ValidationError for the first bad field.
func (r ActivationRequest) Validate() error {
	if err := r.Pair().Validate(); err != nil {
		return err
	}
	// Field paths are built only for an error: Validate runs once per row of a bulk enqueue.
	// A request binds a handful of connections, for which a scan is cheaper than a map; a request
	// that binds many (a 1 MiB row holds some 13,000) gets a map, so that checking it is not
	// quadratic. ULIDs are case-insensitive, so the same template spelt twice in two cases is bound
	// twice: the map is keyed by the canonical form, which problem has checked is a ULID (ASCII).
	var seen map[string]int
	if len(r.Connections) > maxScanConnections {
		seen = make(map[string]int, len(r.Connections))
	}
	for i, c := range r.Connections {
		if field, reason := c.problem(); reason != "" {
			return &ValidationError{Field: connectionField(i, field), Reason: reason}
		}
		j := -1
		if seen != nil {
			key := CanonicalULID(c.TemplateID)
			if prev, ok := seen[key]; ok {
				j = prev
			} else {
				seen[key] = i
			}
		} else {
			for k, prev := range r.Connections[:i] {
				if strings.EqualFold(prev.TemplateID, c.TemplateID) {
					j = k
					break
				}
			}
		}
		if j >= 0 {
			return invalid(connectionField(i, "templateId"), "template %s is already bound by connections[%d]", c.TemplateID, j)
		}
	}
	if len(r.DynamicVariables) > 0 {
		if reason := objectProblem(r.DynamicVariables); reason != "" {
			return invalid("dynamicVariables", "%s", reason)
		}
	}
	return nil
}

// maxScanConnections is the most connections Validate checks for a template bound twice by a scan.
const maxScanConnections = 16

// Canonical validates r, as Validate does, and returns it with every ULID it holds (the
// integration's, each connection's template and connection) in canonical form (CanonicalULID). Every
// way into the queue canonicalizes, so that one pair has one task id and one dead-letter entry
// whatever case its rows spell it in. r's connections are not modified: a changed request gets its
// own copy.
func (r ActivationRequest) Canonical() (ActivationRequest, error) {
	if err := r.Validate(); err != nil {
		return r, err
	}
	r.IntegrationID = CanonicalULID(r.IntegrationID)
	copied := false
	for i, c := range r.Connections {
		t, id := CanonicalULID(c.TemplateID), CanonicalULID(c.ConnectionID)
		if t == c.TemplateID && id == c.ConnectionID {
			continue
		}
		if !copied {
			r.Connections, copied = slices.Clone(r.Connections), true
		}
		r.Connections[i].TemplateID, r.Connections[i].ConnectionID = t, id
	}
	return r, nil
}

// Canonical returns p with its integration id in canonical form (CanonicalULID). It does not
// validate p.
func (p Pair) Canonical() Pair {
	p.IntegrationID = CanonicalULID(p.IntegrationID)
	return p
}

// CanonicalULID returns id with its ASCII letters in upper case, the form the API answers with, and
// id itself when it has none in lower case. ULIDs are Crockford base32, which is case-insensitive:
// the API reads "01hzy…" and "01HZY…" as one id, so activator must too, or one pair would get two
// task ids and a look-up would miss the activation it made.
func CanonicalULID(id string) string {
	for i := 0; i < len(id); i++ {
		if c := id[i]; 'a' <= c && c <= 'z' {
			return strings.ToUpper(id)
		}
	}
	return id
}

// Validate checks p's user id and integration id as ActivationRequest.Validate does. It returns a
// *ValidationError for the first bad field.
func (p Pair) Validate() error {
	if err := validateUserID(p.UserID); err != nil {
		return err
	}
	if reason := ulidProblem(p.IntegrationID); reason != "" {
		return &ValidationError{Field: "integrationId", Reason: reason}
	}
	return nil
}

// connectionField is the JSON path of field (a path within the connection; "" for the connection
// itself) of connections[i].
func connectionField(i int, field string) string {
	p := "connections[" + strconv.Itoa(i) + "]"
	if field == "" {
		return p
	}
	return p + "." + field
}

// problem returns the first bad field of c, as a path within c ("" for c itself), and why; reason
// is "" when c is valid.
func (c ActivationConnection) problem() (field, reason string) {
	if reason := ulidProblem(c.TemplateID); reason != "" {
		return "templateId", reason
	}
	if c.IsExisting() {
		if reason := ulidProblem(c.ConnectionID); reason != "" {
			return "connectionId", reason
		}
		if c.Name != "" || len(c.Credentials) > 0 || c.Variables != nil {
			return "", "has connectionId and also name/credentials/variables: use one form"
		}
		return "", ""
	}
	if c.Name == "" {
		return "", "needs either connectionId (existing connection) or name and credentials (new connection)"
	}
	if len(c.Credentials) == 0 {
		return "credentials", "must be a JSON object"
	}
	if reason := objectProblem(c.Credentials); reason != "" {
		return "credentials", reason
	}
	for j, v := range c.Variables {
		if v.Name == "" {
			return "variables[" + strconv.Itoa(j) + "].name", "is required"
		}
	}
	return "", ""
}

func validateUserID(id string) error {
	switch {
	case id == "":
		return invalid("userId", "is required")
	case len(id) > maxUserIDLength:
		return invalid("userId", "is longer than %d bytes", maxUserIDLength)
	case !utf8.ValidString(id):
		return invalid("userId", "is not valid UTF-8")
	}
	for _, r := range id {
		if unicode.IsControl(r) || unicode.IsSpace(r) {
			return invalid("userId", "contains whitespace or a control character")
		}
	}
	return nil
}

// ulidProblem says why id is not a ULID; "" when it is one.
func ulidProblem(id string) string {
	if id == "" {
		return "is required"
	}
	if _, err := ulid.ParseStrict(id); err != nil {
		return "is not a ULID (26 Crockford base32 characters)"
	}
	return ""
}

// maxValueDepth is how deeply the raw values of a request (credentials, dynamicVariables) may nest,
// counting the value's own object as 1. The JSON library refuses to write a value nested more than
// 10,000 deep, and a job's payload holds the value a few levels down: a value just under that limit
// would pass here and then fail when its job is encoded, as a failure rather than a bad request.
const maxValueDepth = 1000

// objectProblem says why raw is not a JSON object that MarshalJSON writes as it is; "" when it is
// one. Such an object is what DecodeActivationRequest accepts: valid UTF-8 without lone surrogates
// and no name twice in any of its objects (I-JSON, RFC 7493), so that a request built in Go, or from
// a CSV cell, is held to the rules of a JSON row, and the encoder never refuses a valid request. The
// reason never quotes raw, which may hold credentials.
func objectProblem(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	v := jsontext.Value(raw)
	switch {
	case v.Kind() != '{' || !v.IsValid(jsontext.AllowDuplicateNames(true), jsontext.AllowInvalidUTF8(true)):
		return "must be a JSON object"
	case !v.IsValid():
		return "must be a JSON object with no name twice in any object and no invalid UTF-8 or lone surrogate (RFC 7493)"
	case deeperThan(raw, maxValueDepth):
		return fmt.Sprintf("must be a JSON object nested at most %d deep", maxValueDepth)
	}
	return ""
}

// deeperThan reports whether the valid JSON value raw nests objects and arrays more than n deep. A
// value of n bytes or fewer cannot, so the usual value is not read again.
func deeperThan(raw []byte, n int) bool {
	if len(raw) <= n {
		return false
	}
	dec := jsontext.NewDecoder(bytes.NewReader(raw))
	for {
		if _, err := dec.ReadToken(); err != nil {
			return false
		}
		if dec.StackDepth() > n {
			return true
		}
	}
}
