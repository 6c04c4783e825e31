package versori

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// TestMarshalJSONForms checks that each connection is written in exactly the fields of its form, and
// that connections are an array even when there are none.
func TestMarshalJSONForms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		req  ActivationRequest
		want string
	}{
		{"no connections", ActivationRequest{UserID: "u", IntegrationID: vIntegration},
			`{"userId":"u","integrationId":"` + vIntegration + `","connections":[]}`},
		{"existing connection drops the new form's fields", ActivationRequest{UserID: "u", IntegrationID: vIntegration,
			Connections: []ActivationConnection{{TemplateID: vTemplate1, ConnectionID: vConnection}}},
			`{"userId":"u","integrationId":"` + vIntegration + `","connections":[{"templateId":"` + vTemplate1 + `","connectionId":"` + vConnection + `"}]}`},
		{"new connection always has credentials and variables", ActivationRequest{UserID: "u", IntegrationID: vIntegration,
			Connections: []ActivationConnection{{TemplateID: vTemplate1, Name: "crm"}}},
			`{"userId":"u","integrationId":"` + vIntegration + `","connections":[{"templateId":"` + vTemplate1 + `","name":"crm","credentials":{},"variables":[]}]}`},
		{"dynamic variables kept as they are", ActivationRequest{UserID: "u<&>", IntegrationID: vIntegration, DynamicVariables: json.RawMessage(`{"a":[1,"x"]}`)},
			`{"userId":"u<&>","integrationId":"` + vIntegration + `","connections":[],"dynamicVariables":{"a":[1,"x"]}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.req.MarshalJSON()
			if err != nil || string(got) != tt.want {
				t.Fatalf("MarshalJSON = %s, %v\nwant %s", got, err, tt.want)
			}
		})
	}
}

// FuzzMarshalJSONRoundTrip builds requests of both connection forms from fuzzed strings and raw
// values: whatever MarshalJSON writes is valid JSON, and a valid request decodes back to itself.
func FuzzMarshalJSONRoundTrip(f *testing.F) {
	f.Add("user-1", vTemplate1, vConnection, "CRM", `{"k":"v"}`, "n", "v<&>", `{"plan":"gold"}`)
	f.Add("u\u2028\"", "t", "", "", "", "", "", "")
	f.Add("u", vTemplate1, "", "n", `{ "a" : [1, "x y"] }`, "", "", `{"a":`)
	f.Add("u", vTemplate1, "", "n", "null", "a", "b", "\"\u2028\"")
	f.Fuzz(func(t *testing.T, user, tmpl, conn, name, creds, vname, vvalue, dyn string) {
		r := ActivationRequest{UserID: user, IntegrationID: vIntegration, DynamicVariables: json.RawMessage(dyn), Connections: []ActivationConnection{
			{TemplateID: tmpl, ConnectionID: conn},
			{TemplateID: vTemplate2, Name: name, Credentials: json.RawMessage(creds), Variables: []ConnectionVariable{{vname, vvalue}}},
		}}
		b, err := r.MarshalJSON()
		if err != nil {
			if json.Valid([]byte(creds)) && json.Valid([]byte(dyn)) {
				t.Fatalf("MarshalJSON(%+v) fails on valid raw values: %v", r, err)
			}
			return
		}
		if !json.Valid(b) {
			t.Fatalf("MarshalJSON(%+v) = %s, not JSON", r, b)
		}
		want, err := r.Canonical()
		if err != nil {
			return
		}
		got, err := DecodeActivationRequest(b)
		if err != nil {
			t.Fatalf("DecodeActivationRequest(%s) of a valid request: %v", b, err)
		}
		if got.UserID != want.UserID || len(got.Connections) != 2 || !reflect.DeepEqual(got.Connections[0], want.Connections[0]) ||
			got.Connections[1].Name != name || !jsonSame(got.Connections[1].Credentials, want.Connections[1].Credentials) ||
			!jsonSame(got.DynamicVariables, want.DynamicVariables) {
			t.Fatalf("round trip of %+v through %s gave %+v", want, b, got)
		}
	})
}

// jsonSame reports whether two raw values are the same JSON, ignoring whitespace.
func jsonSame(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return strings.TrimSpace(string(a)) == strings.TrimSpace(string(b))
	}
	return reflect.DeepEqual(x, y)
}
