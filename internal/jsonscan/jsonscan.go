// Package jsonscan reads the top-level fields of a JSON object, or the elements of an array,
// without decoding what it skips. The worker reads a few fields of two documents per job (the task
// payload and POST /activations' answer), and `enqueue file` decodes every row with it; encoding/json's
// reflection and Decoder cost more CPU there than the rest of the work. Values are skipped by matching quotes and brackets, not validated: a caller that needs valid
// JSON checks it with json.Valid first.
package jsonscan

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// ErrNotObject is the error for a document that is not a JSON object.
var ErrNotObject = errors.New("not a JSON object")

// ErrNotArray is the error for a document that is not a JSON array.
var ErrNotArray = errors.New("not a JSON array")

// Object calls fn with the name and the raw value of each top-level field of the JSON object b, in
// order, until fn returns false. A name holding escapes is decoded; otherwise it is a slice of b,
// valid only during the call. value is a slice of b holding the whole value (a string with its
// quotes).
func Object(b []byte, fn func(name, value []byte) bool) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return ErrNotObject
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return syntaxError(b, i, "a field name")
		}
		end, plain, err := stringEnd(b, i)
		if err != nil {
			return err
		}
		name := b[i+1 : end-1]
		if !plain {
			s, err := String(b[i:end])
			if err != nil {
				return err
			}
			name = []byte(s)
		}
		i = skipSpace(b, end)
		if i >= len(b) || b[i] != ':' {
			return syntaxError(b, i, "':'")
		}
		i = skipSpace(b, i+1)
		vend, err := valueEnd(b, i)
		if err != nil {
			return err
		}
		if !fn(name, b[i:vend]) {
			return nil
		}
		i = skipSpace(b, vend)
		switch {
		case i < len(b) && b[i] == ',':
			i = skipSpace(b, i+1)
		case i < len(b) && b[i] == '}':
			return nil
		default:
			return syntaxError(b, i, "',' or '}'")
		}
	}
}

// Array calls fn with each element of the JSON array b, in order, until fn returns false. elem is a
// slice of b holding the whole element.
func Array(b []byte, fn func(elem []byte) bool) error {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '[' {
		return ErrNotArray
	}
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == ']' {
		return nil
	}
	for {
		end, err := valueEnd(b, i)
		if err != nil {
			return err
		}
		if !fn(b[i:end]) {
			return nil
		}
		i = skipSpace(b, end)
		switch {
		case i < len(b) && b[i] == ',':
			i = skipSpace(b, i+1)
		case i < len(b) && b[i] == ']':
			return nil
		default:
			return syntaxError(b, i, "',' or ']'")
		}
	}
}

// String returns the value of the JSON string q (with its quotes). A plain string costs one
// allocation; one with escapes or invalid UTF-8 is decoded by encoding/json, as it would decode it.
func String(q []byte) (string, error) {
	if len(q) < 2 || q[0] != '"' {
		return "", errors.New("not a JSON string")
	}
	end, plain, err := stringEnd(q, 0)
	if err != nil {
		return "", err
	}
	if end != len(q) {
		return "", syntaxError(q, end, "the end of the string")
	}
	if plain {
		return string(q[1 : len(q)-1]), nil
	}
	var s string
	if err := json.Unmarshal(q, &s); err != nil {
		return "", err
	}
	return s, nil
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
	ascii := true
	for j := i + 1; j < len(b); j++ {
		c := b[j]
		if c >= 0x20 && c < 0x80 && c != '"' && c != '\\' {
			continue
		}
		switch {
		case c == '"':
			return j + 1, plain && (ascii || utf8.Valid(b[i+1:j])), nil
		case c == '\\':
			plain = false
			j++
		case c < 0x20:
			return 0, false, syntaxError(b, j, "no control character in a string")
		default:
			ascii = false
		}
	}
	return 0, false, syntaxError(b, len(b), "the end of a string")
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
		return fmt.Errorf("JSON ends at byte %d, where %s was expected", len(b), want)
	}
	return fmt.Errorf("JSON has %q at byte %d, where %s was expected", b[i], i, want)
}
