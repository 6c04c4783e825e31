package versori

import (
	"encoding/json"
	"testing"
)

// TestActivatedDecodeBody checks the id-only reader against encoding/json: same id wherever the
// field is, and an error for answers that are not an object or whose id is not a string.
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
			var std struct {
				ID string `json:"id"`
			}
			if err := json.Unmarshal([]byte(tt.body), &std); err != nil || std.ID != a.ID {
				t.Errorf("encoding/json reads %q (%v), decodeBody %q", std.ID, err, a.ID)
			}
		})
	}
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
