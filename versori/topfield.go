package versori

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// errNotObject is topLevelString's error for a body that is not a JSON object.
var errNotObject = errors.New("answer is not a JSON object")

// topLevelString returns the string value of the top-level field key of the JSON object body, and
// whether the field is there. It reads only as far as the field, the first one named key: values
// before it are skipped by matching quotes and brackets, neither decoded nor fully validated. It
// allocates nothing but the value. A value that holds escapes or invalid UTF-8 is decoded by
// encoding/json. Reading the id of POST /activations' answer with encoding/json's Decoder cost
// several allocations and a syntax error per call, which showed in the worker's profile.
func topLevelString(body []byte, key string) (string, bool, error) {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return "", false, errNotObject
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == '}' {
		return "", false, nil
	}
	for {
		if i >= len(body) || body[i] != '"' {
			return "", false, syntaxError(body, i, "a field name")
		}
		end, plain, err := stringEnd(body, i)
		if err != nil {
			return "", false, err
		}
		name, err := stringValue(body[i:end], plain)
		if err != nil {
			return "", false, err
		}
		i = skipSpace(body, end)
		if i >= len(body) || body[i] != ':' {
			return "", false, syntaxError(body, i, "':'")
		}
		i = skipSpace(body, i+1)
		if name == key {
			if i >= len(body) || body[i] != '"' {
				return "", false, fmt.Errorf("field %q is not a string", key)
			}
			end, plain, err := stringEnd(body, i)
			if err != nil {
				return "", false, err
			}
			v, err := stringValue(body[i:end], plain)
			return v, err == nil, err
		}
		if i, err = valueEnd(body, i); err != nil {
			return "", false, err
		}
		i = skipSpace(body, i)
		switch {
		case i < len(body) && body[i] == ',':
			i = skipSpace(body, i+1)
		case i < len(body) && body[i] == '}':
			return "", false, nil
		default:
			return "", false, syntaxError(body, i, "',' or '}'")
		}
	}
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index just past the JSON string starting at b[i] (a '"'), and whether the
// string is plain: no escapes and valid UTF-8, so that its bytes are its value.
func stringEnd(b []byte, i int) (end int, plain bool, err error) {
	plain = true
	for j := i + 1; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			return j + 1, plain && utf8.Valid(b[i+1:j]), nil
		case c == '\\':
			plain = false
			j++
		case c < 0x20:
			return 0, false, syntaxError(b, j, "no control character in a string")
		}
	}
	return 0, false, syntaxError(b, len(b), "the end of a string")
}

// stringValue is the value of the quoted JSON string q.
func stringValue(q []byte, plain bool) (string, error) {
	if plain {
		return string(q[1 : len(q)-1]), nil
	}
	var s string
	if err := json.Unmarshal(q, &s); err != nil {
		return "", err
	}
	return s, nil
}

// valueEnd returns the index just past the JSON value starting at b[i]: a string, an object or
// array (brackets counted, strings inside skipped whole), or a number or literal.
func valueEnd(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, syntaxError(b, i, "a value")
	}
	switch b[i] {
	case '"':
		end, _, err := stringEnd(b, i)
		return end, err
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			switch b[j] {
			case '"':
				end, _, err := stringEnd(b, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, syntaxError(b, len(b), "the end of an object or array")
	}
	j := i
	for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' && b[j] != ' ' && b[j] != '\t' && b[j] != '\n' && b[j] != '\r' {
		j++
	}
	if j == i {
		return 0, syntaxError(b, i, "a value")
	}
	return j, nil
}

func syntaxError(b []byte, i int, want string) error {
	if i >= len(b) {
		return fmt.Errorf("answer ends at byte %d, where %s was expected", len(b), want)
	}
	return fmt.Errorf("answer has %q at byte %d, where %s was expected", b[i], i, want)
}
