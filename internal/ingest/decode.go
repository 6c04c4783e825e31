package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// problem is why a piece of input is not a valid request: Field is a JSON path as in
// versori.ValidationError, "" for the whole row.
type problem struct {
	Field  string
	Reason string
}

// decodeStrict decodes the single JSON value in data into v, refusing unknown fields and trailing
// data. root describes v, so that an error can name the exact path of the bad field: encoding/json's
// own errors leave out array indices, and name an unknown field without its path. prefix is the
// path of v itself within the request.
func decodeStrict(data []byte, v any, root shape, prefix string) *problem {
	// A Decoder per row, which DisallowUnknownFields needs, cost more than the rest of enqueueing
	// the row. decodeFast decodes the usual row by scanning it, and declines anything unusual, which
	// the Decoder then decodes or explains. FuzzDecodeStrict holds the two to the same answer.
	if decodeFast(data, v) {
		return nil
	}
	reflect.ValueOf(v).Elem().SetZero()
	return decodeWithDecoder(data, v, root, prefix)
}

// decodeWithDecoder is decodeStrict by encoding/json's Decoder alone. encoding/json matches field
// names case-insensitively and lets a repeated name overwrite the first, so {"userId":"a",
// "USERID":"b"} would queue user b; a walk of the tokens refuses such rows before they are decoded.
func decodeWithDecoder(data []byte, v any, root shape, prefix string) *problem {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var syn *json.SyntaxError
	switch {
	case errors.As(err, &syn):
		return &problem{prefix, fmt.Sprintf("invalid JSON at byte %d: %s", syn.Offset, syn.Error())}
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return &problem{prefix, fmt.Sprintf("invalid JSON at byte %d: unexpected end of input", len(data))}
	}
	// The value is well-formed JSON (the decoder checks that before it decodes), so a walk over its
	// tokens finds the first field, in document order, that is unknown, misspelt in case, repeated
	// or of the wrong type: the same that encoding/json stopped at, if it stopped.
	if p := findProblem(data, root, prefix); p != nil {
		return p
	}
	if err != nil {
		return &problem{prefix, strings.TrimPrefix(err.Error(), "json: ")}
	}
	if off := int(dec.InputOffset()); !isBlank(data[off:]) {
		return &problem{prefix, fmt.Sprintf("unexpected data after the JSON value at byte %d", off+1)}
	}
	return nil
}

// shape is the expected JSON structure of a part of a request.
type shape int

const (
	shapeAny shape = iota
	shapeString
	shapeRequest
	shapeConnections
	shapeConnection
	shapeVariables
	shapeVariable
)

// The object shapes' field names and shapes, in the order they are documented. They are read only;
// arrays, so that fields slices them without allocating for every row.
var (
	requestNames     = [...]string{"userId", "integrationId", "connections", "dynamicVariables"}
	requestShapes    = [...]shape{shapeString, shapeString, shapeConnections, shapeAny}
	connectionNames  = [...]string{"templateId", "connectionId", "name", "credentials", "variables"}
	connectionShapes = [...]shape{shapeString, shapeString, shapeString, shapeAny, shapeVariables}
	variableNames    = [...]string{"name", "value"}
	variableShapes   = [...]shape{shapeString, shapeString}
)

// fields lists an object shape's field names and shapes, in the order they are documented. The
// slices must not be modified.
func (s shape) fields() ([]string, []shape) {
	switch s {
	case shapeRequest:
		return requestNames[:], requestShapes[:]
	case shapeConnection:
		return connectionNames[:], connectionShapes[:]
	case shapeVariable:
		return variableNames[:], variableShapes[:]
	}
	return nil, nil
}

// field returns the shape of the field key of object shape s. Names match exactly: the API's
// field names are case-sensitive, and reading "USERID" as userId could take another value than the
// one the API would see.
func (s shape) field(key string) (shape, bool) {
	names, shapes := s.fields()
	for i, n := range names {
		if n == key {
			return shapes[i], true
		}
	}
	return 0, false
}

// unknownField is why key is not a field of object shape s.
func (s shape) unknownField(key string) string {
	names, _ := s.fields()
	for _, n := range names {
		if strings.EqualFold(n, key) {
			return "is not a known field: names are case-sensitive (did you mean " + n + "?)"
		}
	}
	return "is not a known field (known: " + strings.Join(names, ", ") + ")"
}

// findProblem walks the well-formed JSON value in data against root and returns the first field, in
// document order, with an unknown name, a name seen before in its object, or a value of the wrong
// type; nil if there is none.
func findProblem(data []byte, root shape, prefix string) *problem {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	p, err := walk(dec, root, prefix)
	if err != nil {
		return nil
	}
	return p
}

func walk(dec *json.Decoder, s shape, path string) (*problem, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if tok == nil || s == shapeAny {
		return nil, skip(dec, tok)
	}
	delim, _ := tok.(json.Delim)
	switch s {
	case shapeString:
		if _, ok := tok.(string); !ok {
			return &problem{path, "must be a string, not " + kindOf(tok)}, nil
		}
		return nil, nil
	case shapeConnections, shapeVariables:
		if delim != '[' {
			return &problem{path, "must be an array, not " + kindOf(tok)}, nil
		}
		elem := shapeConnection
		if s == shapeVariables {
			elem = shapeVariable
		}
		for i := 0; dec.More(); i++ {
			if p, err := walk(dec, elem, path+"["+strconv.Itoa(i)+"]"); p != nil || err != nil {
				return p, err
			}
		}
	default:
		if delim != '{' {
			return &problem{path, "must be an object, not " + kindOf(tok)}, nil
		}
		var seen []string // an object of a request has five fields at most
		for dec.More() {
			tok, err := dec.Token()
			if err != nil {
				return nil, err
			}
			key, _ := tok.(string)
			sub := key
			if path != "" {
				sub = path + "." + key
			}
			child, ok := s.field(key)
			if !ok {
				return &problem{sub, s.unknownField(key)}, nil
			}
			if slices.Contains(seen, key) {
				return &problem{sub, "appears more than once"}, nil
			}
			seen = append(seen, key)
			if p, err := walk(dec, child, sub); p != nil || err != nil {
				return p, err
			}
		}
	}
	_, err = dec.Token() // the closing delimiter
	return nil, err
}

// skip consumes the rest of the value that starts with tok.
func skip(dec *json.Decoder, tok json.Token) error {
	if d, ok := tok.(json.Delim); !ok || (d != '{' && d != '[') {
		return nil
	}
	for depth := 1; depth > 0; {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
	return nil
}

func kindOf(tok json.Token) string {
	switch tok := tok.(type) {
	case json.Delim:
		if tok == '{' {
			return "an object"
		}
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	}
	return "null"
}
