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
	for i, c := range r.Connections {
		if field, reason := c.problem(); reason != "" {
			return &ValidationError{Field: connectionField(i, field), Reason: reason}
		}
		// A request binds a handful of connections, so a scan is cheaper than a map. ULIDs are
		// case-insensitive, so the same template spelt twice in two cases is bound twice.
		for j, prev := range r.Connections[:i] {
			if strings.EqualFold(prev.TemplateID, c.TemplateID) {
				return invalid(connectionField(i, "templateId"), "template %s is already bound by connections[%d]", c.TemplateID, j)
			}
		}
	}
	if len(r.DynamicVariables) > 0 && !isJSONObject(r.DynamicVariables) {
		return invalid("dynamicVariables", "must be a JSON object")
	}
	return nil
}

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
	if len(c.Credentials) == 0 || !isJSONObject(c.Credentials) {
		return "credentials", "must be a JSON object"
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

func isJSONObject(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 1 && raw[0] == '{' && json.Valid(raw)
}
