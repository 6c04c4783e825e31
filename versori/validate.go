package versori

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"
)

// MaxUserIDLength bounds an end user's external id, which becomes part of a task id and a Redis key.
const MaxUserIDLength = 256

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
		// A request binds a handful of connections, so a scan is cheaper than a map.
		for j, prev := range r.Connections[:i] {
			if prev.TemplateID == c.TemplateID {
				return invalid(connectionField(i, "templateId"), "template %s is already bound by connections[%d]", c.TemplateID, j)
			}
		}
	}
	if len(r.DynamicVariables) > 0 && !isJSONObject(r.DynamicVariables) {
		return invalid("dynamicVariables", "must be a JSON object")
	}
	return nil
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
	case len(id) > MaxUserIDLength:
		return invalid("userId", "is longer than %d bytes", MaxUserIDLength)
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
