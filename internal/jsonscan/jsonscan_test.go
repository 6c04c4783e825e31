package jsonscan

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

type field struct{ Name, Value string }

func fields(b []byte) ([]field, error) {
	var fs []field
	err := Object(b, func(name, value []byte) bool {
		fs = append(fs, field{string(name), string(value)})
		return true
	})
	return fs, err
}

func TestObject(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    []field
		wantErr bool
	}{
		{"empty", `{}`, nil, false},
		{"spaces", " {\n\t\"a\" : 1 ,\r\n \"b\":\"x\" } ", []field{{"a", "1"}, {"b", `"x"`}}, false},
		{"nested values whole", `{"a":{"b":[1,{"c":"]}"}]},"d":[]}`, []field{{"a", `{"b":[1,{"c":"]}"}]}`}, {"d", "[]"}}, false},
		{"escaped name decoded", `{"\u0069d":"A","q\"":true}`, []field{{"id", `"A"`}, {`q"`, "true"}}, false},
		{"escaped quote in a value", `{"a":"x\"}","b":null}`, []field{{"a", `"x\"}"`}, {"b", "null"}}, false},
		{"not an object", `["a"]`, nil, true},
		{"empty input", ``, nil, true},
		{"truncated value", `{"a":{"b":1}`, nil, true},
		{"truncated string", `{"a":"x`, nil, true},
		{"missing colon", `{"a" 1}`, nil, true},
		{"missing comma", `{"a":1 "b":2}`, nil, true},
		{"control character", "{\"a\":\"x\ny\"}", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := fields([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("Object(%q) error %v, want error %v", tt.in, err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Object(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestObjectStopsWhenAsked(t *testing.T) {
	t.Parallel()
	var seen []string
	// Everything after the first field is malformed: Object must not read it.
	err := Object([]byte(`{"a":1,"b":`), func(name, _ []byte) bool {
		seen = append(seen, string(name))
		return false
	})
	if err != nil || !reflect.DeepEqual(seen, []string{"a"}) {
		t.Fatalf("Object = %v, saw %q; want no error after the first field", err, seen)
	}
}

func TestString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{`"plain"`, "plain", false},
		{`""`, "", false},
		{`"a\u00e9\n"`, "a\u00e9\n", false},
		{"\"a\xffb\"", "a\ufffdb", false},
		{`"a"b"`, "", true},
		{`plain`, "", true},
		{`"`, "", true},
		{`5`, "", true},
	}
	for _, tt := range tests {
		got, err := String([]byte(tt.in))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("String(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// decoderFields is Object's reference: encoding/json's Decoder reading the top-level fields.
func decoderFields(b []byte) ([]field, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("not an object")
	}
	var fs []field
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return nil, err
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		fs = append(fs, field{k.(string), string(v)})
	}
	return fs, nil
}

// FuzzObject checks Object and String against encoding/json on valid JSON: the same fields, names
// and values. Object does not validate what it skips, so on invalid input it is only run.
func FuzzObject(f *testing.F) {
	for _, s := range []string{`{"a":1,"b":"x","c":{"d":[true,null]}}`, `{"\u0061":"\\\""}`, `{}`, `[]`, `"s"`,
		` { "a" : -1.5e3 } `, `{"a":"\ud83d\ude00"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := fields(b)
		if !json.Valid(b) {
			return
		}
		want, werr := decoderFields(b)
		if (err != nil) != (werr != nil) {
			t.Fatalf("Object(%q) error %v; encoding/json error %v", b, err, werr)
		}
		if err == nil && !(len(got) == 0 && len(want) == 0) && !reflect.DeepEqual(got, want) {
			t.Fatalf("Object(%q) = %q; encoding/json reads %q", b, got, want)
		}
		for _, fl := range got {
			if v := []byte(fl.Value); v[0] == '"' {
				s, err := String(v)
				var ws string
				if werr := json.Unmarshal(v, &ws); err != nil || werr != nil || s != ws {
					t.Fatalf("String(%s) = %q, %v; encoding/json reads %q, %v", v, s, err, ws, werr)
				}
			}
		}
	})
}

func elems(b []byte) ([]string, error) {
	var es []string
	err := Array(b, func(e []byte) bool {
		es = append(es, string(e))
		return true
	})
	return es, err
}

func TestArray(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		want    []string
		wantErr bool
	}{
		{"empty", `[]`, nil, false},
		{"spaces", " [ 1 ,\n\"a\" ,{\"b\":[2]} ,null ] ", []string{"1", `"a"`, `{"b":[2]}`, "null"}, false},
		{"brackets inside strings", `["]",{"a":"}]"}]`, []string{`"]"`, `{"a":"}]"}`}, false},
		{"not an array", `{"a":1}`, nil, true},
		{"empty input", ``, nil, true},
		{"truncated", `[1,{"a":2}`, nil, true},
		{"missing comma", `[1 2]`, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := elems([]byte(tt.in))
			if (err != nil) != tt.wantErr {
				t.Fatalf("Array(%q) error %v, want error %v", tt.in, err, tt.wantErr)
			}
			if !tt.wantErr && !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Array(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// FuzzArray checks Array against encoding/json on valid JSON: the same elements, byte for byte.
func FuzzArray(f *testing.F) {
	for _, s := range []string{`[1,"x",{"d":[true,null]}]`, `[]`, `{}`, ` [ "]" , [ ] ] `, `[-1.5e3]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := elems(b)
		if !json.Valid(b) {
			return
		}
		if v := bytes.TrimLeft(b, " \t\r\n"); v[0] != '[' {
			if err == nil {
				t.Fatalf("Array(%q) = %q; want an error for a value that is not an array", b, got)
			}
			return
		}
		var want []json.RawMessage
		werr := json.Unmarshal(b, &want)
		if (err != nil) != (werr != nil) {
			t.Fatalf("Array(%q) error %v; encoding/json error %v", b, err, werr)
		}
		if err != nil {
			return
		}
		if len(got) != len(want) {
			t.Fatalf("Array(%q) = %q; encoding/json reads %q", b, got, want)
		}
		for i := range got {
			if got[i] != string(want[i]) {
				t.Fatalf("Array(%q) element %d = %q; encoding/json reads %q", b, i, got[i], want[i])
			}
		}
	})
}
