package versori

import (
	"encoding/json"
	"testing"
)

// referenceJSON is the encoding AppendJSON must match: encoding/json on plain structs of each
// connection's form.
func referenceJSON(r ActivationRequest) ([]byte, error) {
	type existing struct {
		TemplateID   string `json:"templateId"`
		ConnectionID string `json:"connectionId"`
	}
	type fresh struct {
		TemplateID  string               `json:"templateId"`
		Name        string               `json:"name"`
		Credentials json.RawMessage      `json:"credentials"`
		Variables   []ConnectionVariable `json:"variables"`
	}
	conns := make([]any, len(r.Connections))
	for i, c := range r.Connections {
		if c.IsExisting() {
			conns[i] = existing{c.TemplateID, c.ConnectionID}
			continue
		}
		f := fresh{c.TemplateID, c.Name, c.Credentials, c.Variables}
		if f.Variables == nil {
			f.Variables = []ConnectionVariable{}
		}
		if len(f.Credentials) == 0 {
			f.Credentials = json.RawMessage(`{}`)
		}
		conns[i] = f
	}
	return json.Marshal(struct {
		UserID           string          `json:"userId"`
		IntegrationID    string          `json:"integrationId"`
		Connections      []any           `json:"connections"`
		DynamicVariables json.RawMessage `json:"dynamicVariables,omitempty"`
	}{r.UserID, r.IntegrationID, conns, r.DynamicVariables})
}

// FuzzAppendJSONMatchesEncodingJSON builds requests of both connection forms from fuzzed strings
// and raw values: AppendJSON writes referenceJSON's bytes, or both fail.
func FuzzAppendJSONMatchesEncodingJSON(f *testing.F) {
	f.Add("user-1", vIntegration, vTemplate1, vConnection, "CRM", `{"k":"v"}`, "n", "v<&>", `{"plan":"gold"}`)
	f.Add("u\u2028\"", "i", "t", "", "", "", "", "", "")
	f.Add("u", "i", "t", "", "n", `{ "a" : [1, "x y"] }`, "", "", `{"a":`)
	f.Add("u", "i", "t", "", "n", "null", "a", "b", "\"\u2028\"")
	f.Fuzz(func(t *testing.T, user, integration, tmpl, conn, name, creds, vname, vvalue, dyn string) {
		reqs := []ActivationRequest{
			{UserID: user, IntegrationID: integration},
			{UserID: user, IntegrationID: integration, DynamicVariables: json.RawMessage(dyn), Connections: []ActivationConnection{
				{TemplateID: tmpl, ConnectionID: conn, Name: name},
				{TemplateID: tmpl, Name: name, Credentials: json.RawMessage(creds), Variables: []ConnectionVariable{{vname, vvalue}, {vvalue, vname}}},
				{TemplateID: conn, Name: name, Credentials: json.RawMessage(dyn)},
			}},
		}
		for _, r := range reqs {
			got, err := r.AppendJSON([]byte("x"))
			want, werr := referenceJSON(r)
			if (err != nil) != (werr != nil) || (err == nil && string(got) != "x"+string(want)) {
				t.Fatalf("AppendJSON(%+v) = %s, %v\nencoding/json: %s, %v", r, got, err, want, werr)
			}
		}
	})
}
