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
	seen := make(map[string]int, len(r.Connections))
	for i, c := range r.Connections {
		prefix := "connections[" + strconv.Itoa(i) + "]"
		if err := c.validate(prefix); err != nil {
			return err
		}
		if j, dup := seen[c.TemplateID]; dup {
			return invalid(prefix+".templateId", "template %s is already bound by connections[%d]", c.TemplateID, j)
		}
		seen[c.TemplateID] = i
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
	return validateULID("integrationId", p.IntegrationID)
}

func (c ActivationConnection) validate(prefix string) error {
	if err := validateULID(prefix+".templateId", c.TemplateID); err != nil {
		return err
	}
	if c.IsExisting() {
		if err := validateULID(prefix+".connectionId", c.ConnectionID); err != nil {
			return err
		}
		if c.Name != "" || len(c.Credentials) > 0 || c.Variables != nil {
			return invalid(prefix, "has connectionId and also name/credentials/variables: use one form")
		}
		return nil
	}
	if c.Name == "" {
		return invalid(prefix, "needs either connectionId (existing connection) or name and credentials (new connection)")
	}
	if len(c.Credentials) == 0 || !isJSONObject(c.Credentials) {
		return invalid(prefix+".credentials", "must be a JSON object")
	}
	for j, v := range c.Variables {
		if v.Name == "" {
			return invalid(prefix+".variables["+strconv.Itoa(j)+"].name", "is required")
		}
	}
	return nil
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

func validateULID(field, id string) error {
	if id == "" {
		return invalid(field, "is required")
	}
	if _, err := ulid.ParseStrict(id); err != nil {
		return invalid(field, "is not a ULID (26 Crockford base32 characters)")
	}
	return nil
}

func isJSONObject(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 1 && raw[0] == '{' && json.Valid(raw)
}
