package versori

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// TestActivatedDecodeBody checks the id-only reader against encoding/json's Decoder: same id wherever
// the field is, and an error for answers that are not an object or whose id is not a string.
func TestActivatedDecodeBody(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body, want string
		wantErr          bool
	}{
		{"id first", `{"id":"A1","hubId":"h","user":{"id":"U"}}`, "A1", false},
		{"id after nested values", `{"user":{"id":"U","x":[1,{"id":"no"}]},"name":"a\"id\"","id":"A2"}`, "A2", false},
		{"escaped id", `{"id":"A\u0033"}`, "A3", false},
		{"whitespace", " {\n \"id\" : \"A4\" }\n", "A4", false},
		{"no id", `{"hubId":"h"}`, "", false},
		{"not an object", `["id","A"]`, "", true},
		{"id not a string", `{"id":5}`, "", true},
		{"truncated before id", `{"user":{"id":"U"`, "", true},
		{"empty", ``, "", true},
		{"empty object", `{}`, "", false},
		{"escaped key", `{"\u0069d":"A5"}`, "A5", false},
		{"first of two ids", `{"id":"A6","id":"A7"}`, "A6", false},
		{"braces and quotes in skipped strings", `{"d":"}{\"id\":\"no\"]","n":-1.5e3,"t":true,"id":"A8"}`, "A8", false},
		{"invalid UTF-8 in id", "{\"id\":\"A\xff9\"}", "A\ufffd9", false},
		{"id null", `{"id":null}`, "", true},
		{"missing colon", `{"user" {"id":"U"},"id":"A"}`, "", true},
		{"control character in a string", "{\"x\":\"a\nb\",\"id\":\"A\"}", "", true},
		{"garbage between fields", `{"x":1 2,"id":"A"}`, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var a Activated
			err := a.decodeBody([]byte(tt.body))
			if (err != nil) != tt.wantErr || a.ID != tt.want {
				t.Fatalf("decodeBody(%s) = %q, %v; want %q, error %v", tt.body, a.ID, err, tt.want, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if ref, _, err := tokenID([]byte(tt.body)); err != nil || ref != a.ID {
				t.Errorf("encoding/json's Decoder reads %q (%v), decodeBody %q", ref, err, a.ID)
			}
		})
	}
}

// tokenID is the id reader decodeBody replaced (encoding/json's Decoder, first "id" at the top
// level), kept as the reference for FuzzActivatedDecodeBody. raw is the id's value as it appears.
func tokenID(body []byte) (id string, raw json.RawMessage, err error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return "", nil, errors.New("not an object")
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return "", nil, err
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return "", nil, err
		}
		if key == "id" {
			err := json.Unmarshal(v, &id)
			return id, v, err
		}
	}
	return "", nil, nil
}

// FuzzActivatedDecodeBody checks decodeBody against encoding/json on every valid JSON input: the same
// id, or an error where encoding/json finds none only for a null id (which Activate refuses anyway).
// decodeBody skips values without validating them, so invalid input is only checked not to panic.
func FuzzActivatedDecodeBody(f *testing.F) {
	for _, s := range []string{`{"id":"A1","x":[1,{"y":"}"}]}`, `{"a":{"id":"no"},"id":"A\u00e9"}`, `[]`, `{"id":null}`,
		`{"x":"\\","id":"A"}`, ` { "id" : "A" } `, `{"x":tru,"id":"A"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var a Activated
		err := a.decodeBody(body)
		if !json.Valid(body) {
			return
		}
		want, raw, werr := tokenID(body)
		switch {
		case err == nil && werr == nil && a.ID != want:
			t.Fatalf("decodeBody(%q) = %q; encoding/json reads %q", body, a.ID, want)
		case err == nil && werr != nil:
			t.Fatalf("decodeBody(%q) = %q; encoding/json fails: %v", body, a.ID, werr)
		case err != nil && werr == nil && string(raw) != "null":
			t.Fatalf("decodeBody(%q) fails (%v); encoding/json reads %q", body, err, want)
		}
	})
}

func BenchmarkActivatedDecodeBody(b *testing.B) {
	body := []byte(`{"id":"01M8F7NXC3DBK7GFTFQXESPAGQ","hubId":"01J5TANDXN0000000000000HVB","user":{"id":"01M8F7NXC3DBK7GFTFQQMHPVNR","externalId":"u1","displayName":"u1","hubId":"01J5TANDXN0000000000000HVB","primaryConnection":{"id":"01M8F7NXC3DBK7GFTFQSVVZRJ4","name":"primary","credentials":{"action":[]},"variables":[],"createdAt":"2026-11-27T19:28:24.451383946Z","updatedAt":"2026-11-27T19:28:24.451383946Z"},"createdAt":"2026-11-27T19:28:24.451383946Z","updatedAt":"2026-11-27T19:28:24.451383946Z"},"integration":{"id":"01J5TESTA00000000000000001","name":"Integration 01J5TESTA00000000000000001","imageUrl":"https://example.com/versoritest/integrations/01J5TESTA00000000000000001.png","description":"An integration served by the versoritest stand-in.","isDeployed":true,"isActivated":true}}`)
	b.Run("decodeBody", func(b *testing.B) {
		for b.Loop() {
			var a Activated
			if err := a.decodeBody(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("json.Unmarshal into Activation", func(b *testing.B) {
		for b.Loop() {
			var a Activation
			if err := json.Unmarshal(body, &a); err != nil {
				b.Fatal(err)
			}
		}
	})
}
