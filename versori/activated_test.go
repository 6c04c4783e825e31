package versori

import "testing"

// TestActivatedDecodeBody checks that the id is read wherever it is, and that an answer that is not a
// JSON object, or whose id is not a string, is an error rather than an activation without an id.
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
		{"empty object", `{}`, "", false},
		{"not an object", `["id","A"]`, "", true},
		{"id not a string", `{"id":5}`, "", true},
		{"truncated before id", `{"user":{"id":"U"`, "", true},
		{"empty", ``, "", true},
		{"two ids", `{"id":"A6","id":"A7"}`, "", true},
		{"missing colon", `{"user" {"id":"U"},"id":"A"}`, "", true},
		{"garbage between fields", `{"x":1 2,"id":"A"}`, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var a Activated
			err := a.decodeBody([]byte(tt.body))
			if (err != nil) != tt.wantErr || (err == nil && a.ID != tt.want) {
				t.Fatalf("decodeBody(%s) = %q, %v; want %q, error %v", tt.body, a.ID, err, tt.want, tt.wantErr)
			}
		})
	}
}
