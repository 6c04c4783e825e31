package jsonappend

import (
	"encoding/json"
	"testing"
)

func TestString(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "plain", `q"uote`, `back\slash`, "<a&b>", "tab\there", "\x00\x1f", "é", "\u2028\u2029", "bad\xffutf8"} {
		want, _ := json.Marshal(s)
		if got := String([]byte("x"), s); string(got) != "x"+string(want) {
			t.Errorf("String(%q) = %s, want x%s", s, got, want)
		}
	}
}

func TestRaw(t *testing.T) {
	t.Parallel()
	tests := []struct {
		raw     string
		wantErr bool
	}{
		{`{"a":1}`, false},
		{`{ "a" : [1, 2] }`, false},
		{`{"a":"x y","b":"\"}"}`, false},
		{`{"a":"<&>"}`, false},
		{"{\"a\":\"\u2028\"}", false},
		{`"s"`, false},
		{`null`, false},
		{`{"a":`, true},
		{``, true},
		{`{"a":1} x`, true},
	}
	for _, tt := range tests {
		got, err := Raw([]byte("x"), []byte(tt.raw))
		want, werr := json.Marshal(json.RawMessage(tt.raw))
		if (err != nil) != tt.wantErr || (werr != nil) != tt.wantErr {
			t.Errorf("Raw(%q) error %v, encoding/json error %v; want error %v", tt.raw, err, werr, tt.wantErr)
			continue
		}
		if err == nil && string(got) != "x"+string(want) {
			t.Errorf("Raw(%q) = %s, want x%s", tt.raw, got, want)
		}
	}
}

// FuzzEncodingJSON checks String and Raw against encoding/json on any input: the same bytes, or
// both an error.
func FuzzEncodingJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,{"b":"c d"}]}`, `"x\"y"`, `{"<":"&"}`, " [ 1 ] ", "\"\u2028\"", "plain"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		want, _ := json.Marshal(string(in))
		if got := String(nil, string(in)); string(got) != string(want) {
			t.Fatalf("String(%q) = %s, encoding/json %s", in, got, want)
		}
		got, err := Raw(nil, in)
		wantRaw, werr := json.Marshal(json.RawMessage(in))
		if (err != nil) != (werr != nil) || (err == nil && string(got) != string(wantRaw)) {
			t.Fatalf("Raw(%q) = %s, %v; encoding/json %s, %v", in, got, err, wantRaw, werr)
		}
	})
}
