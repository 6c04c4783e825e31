package versori

import (
	"errors"
	"io"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// DecodeActivationRequest decodes and validates the one activation request data holds: a JSONL row,
// the body of an HTTP request, or a job's request. It is the one reader every way into the queue
// shares, so that a request means one thing wherever it comes from. data must be a JSON object with
// exact field names (the API's names are case-sensitive), none unknown, none twice (which of two
// values counts would be a guess), values of the right types and nothing after it. The request comes
// back validated, with its ULIDs in canonical form (Canonical); "dynamicVariables": null is the same as
// leaving the field out. A bad request is a *ValidationError naming the field to blame ("" for the
// whole value).
func DecodeActivationRequest(data []byte) (ActivationRequest, error) {
	var r ActivationRequest
	if err := decodeStrict(data, &r, ""); err != nil {
		return r, err
	}
	if string(jsontext.Value(data).Kind()) != "{" {
		// Only null decodes into a struct without being an object.
		return r, invalid("", "must be a JSON object, not null")
	}
	if isNull(r.DynamicVariables) {
		r.DynamicVariables = nil
	}
	return r.Canonical()
}

// DecodeConnections decodes the JSON array of connections data holds, by DecodeActivationRequest's
// rules, as the "connections" field of a request: field paths in its errors start with
// "connections". It does not validate the connections; Validate does, with the rest of the request.
func DecodeConnections(data []byte) ([]ActivationConnection, error) {
	var cs []ActivationConnection
	err := decodeStrict(data, &cs, "connections")
	return cs, err
}

// strict refuses what encoding/json would guess at; exact-case names and no duplicates are the
// package's defaults.
var strict = json.RejectUnknownMembers(true)

// decodeStrict decodes data into v and turns a failure into a *ValidationError whose field is a path
// from root (v's own path in a request).
func decodeStrict(data []byte, v any, root string) error {
	return decodeStrictIn(data, v, root, requestFields)
}

// decodeStrictIn is decodeStrict for a value whose top-level members are top: an unknown member
// there is told these.
func decodeStrictIn(data []byte, v any, root string, top []string) error {
	err := json.Unmarshal(data, v, strict)
	if err == nil {
		return nil
	}
	var syn *jsontext.SyntacticError
	var sem *json.SemanticError
	switch {
	case errors.As(err, &syn) && errors.Is(syn.Err, jsontext.ErrDuplicateName):
		return invalid(fieldPath(root, syn.JSONPointer), "appears more than once")
	case errors.As(err, &syn) && syn.JSONPointer == "" && strings.Contains(syn.Err.Error(), "after top-level value"):
		return invalid(root, "unexpected data after the JSON value at byte %d", syn.ByteOffset+1)
	case errors.As(err, &syn) && errors.Is(syn.Err, io.ErrUnexpectedEOF):
		return invalid(root, "invalid JSON: unexpected end of input")
	case errors.As(err, &syn):
		return invalid(root, "invalid JSON at byte %d: %s", syn.ByteOffset+1, redactedText(syn.Err))
	case errors.As(err, &sem) && errors.Is(sem.Err, json.ErrUnknownName):
		field := fieldPath(root, sem.JSONPointer)
		return invalid(field, "%s", unknownField(root, sem.JSONPointer, top))
	case errors.As(err, &sem) && sem.GoType != nil && sem.JSONKind != 0:
		return invalid(fieldPath(root, sem.JSONPointer), "must be %s, not %s", goKind(sem.GoType.Kind().String()), jsonKind(sem.JSONKind))
	case errors.As(err, &sem):
		return invalid(fieldPath(root, sem.JSONPointer), "%s", strings.TrimPrefix(sem.Error(), "json: "))
	}
	return invalid(root, "%s", strings.TrimPrefix(err.Error(), "json: "))
}

// redactedText is the text of the cause of a syntactic error, without the input it quotes.
func redactedText(err error) string {
	s := err.Error()
	for _, what := range []string{"invalid escape sequence ", "invalid surrogate pair "} {
		if strings.HasPrefix(s, what) {
			return strings.TrimSpace(what) + " in string"
		}
	}
	return s
}

// The fields of each object of a request, in the order they are documented.
var (
	requestFields    = []string{"userId", "integrationId", "connections", "dynamicVariables"}
	connectionFields = []string{"templateId", "connectionId", "name", "credentials", "variables"}
	variableFields   = []string{"name", "value"}
	// A row of a producer: a request and endUser beside it (DecodeRow).
	rowFields               = []string{"userId", "integrationId", "connections", "dynamicVariables", "endUser"}
	endUserFields           = []string{"externalId", "displayName", "primaryConnection"}
	primaryConnectionFields = []string{"name", "credentials", "variables"}
)

// unknownField is why the member at ptr is not a field of its object.
func unknownField(root string, ptr jsontext.Pointer, top []string) string {
	names := top
	switch parent := lastName(root, ptr.Parent()); parent {
	case "connections":
		names = connectionFields
	case "variables":
		names = variableFields
	case "endUser":
		names = endUserFields
	case "primaryConnection":
		names = primaryConnectionFields
	}
	key := ptr.LastToken()
	for _, n := range names {
		if strings.EqualFold(n, key) {
			return "is not a known field: names are case-sensitive (did you mean " + n + "?)"
		}
	}
	return "is not a known field (known: " + strings.Join(names, ", ") + ")"
}

// lastName is the last member name on the path root+ptr, skipping array indices.
func lastName(root string, ptr jsontext.Pointer) string {
	last := root
	for tok := range ptr.Tokens() {
		if !isIndex(tok) {
			last = tok
		}
	}
	return last
}

// fieldPath writes root+ptr as ValidationError.Field does: "connections[1].templateId".
func fieldPath(root string, ptr jsontext.Pointer) string {
	var b strings.Builder
	b.WriteString(root)
	for tok := range ptr.Tokens() {
		switch {
		case isIndex(tok):
			b.WriteString("[" + tok + "]")
		case b.Len() > 0:
			b.WriteString("." + tok)
		default:
			b.WriteString(tok)
		}
	}
	return b.String()
}

// isIndex reports whether a pointer token is an array index: no member of a request's objects has a
// numeric name, and dynamicVariables' members are never looked into.
func isIndex(tok string) bool {
	_, err := strconv.ParseUint(tok, 10, 0)
	return err == nil && tok != ""
}

func goKind(k string) string {
	switch k {
	case "string":
		return "a string"
	case "slice", "array":
		return "an array"
	case "struct", "map":
		return "an object"
	}
	return "a " + k
}

func jsonKind(k jsontext.Kind) string {
	switch k {
	case '"':
		return "a string"
	case '0':
		return "a number"
	case 't', 'f':
		return "a boolean"
	case '{':
		return "an object"
	case '[':
		return "an array"
	}
	return "null"
}

func isNull(raw []byte) bool { return strings.TrimSpace(string(raw)) == "null" }
