// Package jsonappend appends JSON values to a byte slice exactly as encoding/json's Marshal would
// write them, without its reflection. `enqueue file` encodes one payload per row; through
// json.Marshal that was a tenth of a row's CPU.
package jsonappend

import (
	"encoding/json"
	"unicode/utf8"
)

// String appends s as a JSON string. A string of printable ASCII that needs no escape is copied;
// any other is encoded by encoding/json (which escapes <, > and &, and replaces invalid UTF-8).
func String(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if !safe(s[i]) {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// Raw appends the JSON value raw as encoding/json writes a json.RawMessage: compacted, with <, >, &,
// U+2028 and U+2029 escaped inside strings. Raw that already is so (no space between tokens, ASCII
// only, none of those characters) is checked with json.Valid and copied. Invalid JSON is an error.
func Raw(b []byte, raw []byte) ([]byte, error) {
	if len(raw) > 0 && compactASCII(raw) && json.Valid(raw) {
		return append(b, raw...), nil
	}
	enc, err := json.Marshal(json.RawMessage(raw))
	if err != nil {
		return b, err
	}
	return append(b, enc...), nil
}

// safe reports whether c is written as itself inside a JSON string by encoding/json.
func safe(c byte) bool {
	return c >= 0x20 && c < utf8.RuneSelf && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
}

// compactASCII reports whether raw has no whitespace outside strings and no byte that encoding/json
// would escape when it compacts raw: <, >, &, or any non-ASCII byte (U+2028 and U+2029 among them).
func compactASCII(raw []byte) bool {
	inString := false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c >= utf8.RuneSelf || c == '<' || c == '>' || c == '&':
			return false
		case inString && c == '\\':
			i++ // the escaped byte cannot end the string
		case c == '"':
			inString = !inString
		case !inString && (c == ' ' || c == '\t' || c == '\n' || c == '\r'):
			return false
		}
	}
	return true
}
