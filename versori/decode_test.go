package versori

import (
	"errors"
	"strings"
	"testing"
)

// TestDecodeActivationRequest pins the one set of words every way in uses for a bad request: the
// field to blame, as a path, and why.
func TestDecodeActivationRequest(t *testing.T) {
	t.Parallel()
	I, T := vIntegration, vTemplate1
	head := `{"userId":"u","integrationId":"` + I + `",`
	tests := []struct {
		name, in, field, reason string
	}{
		{"valid", head + `"connections":[]}`, "", ""},
		{"blank lines around", "\n\t" + head + `"connections":[]}` + "\r\n", "", ""},
		{"nulls", head + `"connections":null,"dynamicVariables":null}`, "", ""},
		{"lower-case ULIDs", `{"userId":"u","integrationId":"` + strings.ToLower(I) + `","connections":[{"templateId":"` + strings.ToLower(T) + `","connectionId":"` + strings.ToLower(I) + `"}]}`, "", ""},
		{"syntax", `{"userId":"u",,}`, "", "invalid JSON at byte 15: invalid character ','"},
		{"cut short", `{"userId":"u"`, "", "invalid JSON: unexpected end of input"},
		{"empty", ``, "", "invalid JSON: unexpected end of input"},
		{"two values", head + `"connections":[]} {}`, "", "unexpected data after the JSON value at byte 78"},
		{"unknown field", `{"userId":"u","colour":1}`, "colour", "is not a known field (known: userId, integrationId, connections, dynamicVariables)"},
		{"name in another case", `{"userId":"u","USERID":"v"}`, "USERID", "is not a known field: names are case-sensitive (did you mean userId?)"},
		{"duplicate", `{"userId":"u","userId":"v"}`, "userId", "appears more than once"},
		{"duplicate in a connection", head + `"connections":[{"connectionId":"a","connectionId":"b"}]}`, "connections[0].connectionId", "appears more than once"},
		{"wrong type deep", head + `"connections":[{"templateId":"` + T + `"},{"templateId":5}]}`, "connections[1].templateId", "must be a string, not a number"},
		{"unknown variable field", head + `"connections":[{},{"variables":[{"secret":1}]}]}`, "connections[1].variables[0].secret", "is not a known field (known: name, value)"},
		{"connections an object", head + `"connections":{}}`, "connections", "must be an array, not an object"},
		{"an array", `[]`, "", "must be an object, not an array"},
		{"null", "\nnull", "", "must be a JSON object, not null"},
		{"not UTF-8", "{\"userId\":\"u\xff\"}", "", "invalid UTF-8"},
		{"validation", head + `"connections":[null]}`, "connections[0].templateId", "is required"},
		// The library quotes up to 12 bytes of a bad escape: in a credential, part of the secret.
		{"lone surrogate in credentials", head + `"connections":[{"templateId":"` + T + `","name":"n","credentials":{"k":"\ud800SECRET"}}]}`, "", "invalid surrogate pair in string"},
		{"bad escape in credentials", head + `"connections":[{"templateId":"` + T + `","name":"n","credentials":{"k":"\uSECRET"}}]}`, "", "invalid escape sequence in string"},
		{"bad escape in a variable", head + `"connections":[{"templateId":"` + T + `","name":"n","credentials":{},"variables":[{"name":"a","value":"\xSECRET"}]}]}`, "", "invalid escape sequence in string"},
		{"credentials null", head + `"connections":[{"templateId":"` + T + `","name":"n","credentials":null}]}`, "connections[0].credentials", "must be a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := DecodeActivationRequest([]byte(tt.in))
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("DecodeActivationRequest(%s): %v", tt.in, err)
				}
				if r.IntegrationID != I || r.DynamicVariables != nil || (len(r.Connections) > 0 && r.Connections[0].TemplateID != T) {
					t.Fatalf("DecodeActivationRequest(%s) = %+v, want canonical ULIDs and no dynamic variables", tt.in, r)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field != tt.field || !strings.Contains(ve.Reason, tt.reason) {
				t.Fatalf("DecodeActivationRequest(%s) = %v, want field %q reason %q", tt.in, err, tt.field, tt.reason)
			}
			if strings.Contains(ve.Reason, "SECR") {
				t.Fatalf("DecodeActivationRequest(%s) = %v, which quotes the credential", tt.in, err)
			}
		})
	}
}

func TestDecodeConnections(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, field, reason string }{
		{`[{"templateId":"` + vTemplate1 + `","connectionId":"` + vConnection + `"}]`, "", ""},
		{`{}`, "connections", "must be an array, not an object"},
		{`[{"id":1}]`, "connections[0].id", "is not a known field"},
		{`[`, "connections", "invalid JSON: unexpected end of input"},
	}
	for _, tt := range tests {
		cs, err := DecodeConnections([]byte(tt.in))
		var ve *ValidationError
		switch {
		case tt.reason == "" && (err != nil || len(cs) != 1):
			t.Errorf("DecodeConnections(%s) = %+v, %v", tt.in, cs, err)
		case tt.reason != "" && (!errors.As(err, &ve) || ve.Field != tt.field || !strings.Contains(ve.Reason, tt.reason)):
			t.Errorf("DecodeConnections(%s) = %v, want field %q reason %q", tt.in, err, tt.field, tt.reason)
		}
	}
}

// FuzzDecodeActivationRequest checks that whatever the decoder accepts is valid, canonical and
// encodes to a request that decodes to the same.
func FuzzDecodeActivationRequest(f *testing.F) {
	f.Add([]byte(`{"userId":"u","integrationId":"` + vIntegration + `","connections":[{"templateId":"` + vTemplate1 + `","connectionId":"` + vConnection + `"}],"dynamicVariables":{"a":1}}`))
	f.Add([]byte(`{"userId":"u","integrationId":"` + vIntegration + `","connections":[{"templateId":"` + vTemplate1 + `","name":"n","credentials":{"k":"v"},"variables":[{"name":"a","value":"b"}]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeActivationRequest(b)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v is not a *ValidationError", err)
			}
			return
		}
		if c, err := r.Canonical(); err != nil || c.IntegrationID != r.IntegrationID {
			t.Fatalf("accepted %s as %+v, which is not valid and canonical: %v", b, r, err)
		}
		enc, err := r.MarshalJSON()
		if err != nil {
			t.Fatalf("accepted %s, cannot encode it: %v", b, err)
		}
		again, err := DecodeActivationRequest(enc)
		if err != nil || again.Pair() != r.Pair() || len(again.Connections) != len(r.Connections) {
			t.Fatalf("%s re-encoded as %s decodes to %+v, %v", b, enc, again, err)
		}
	})
}
