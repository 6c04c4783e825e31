package versori

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// Valid ULIDs for the tests.
const (
	vIntegration = "01HZY8J5Q0A1B2C3D4E5F6G7H8"
	vTemplate1   = "01HZY8J5Q0TEMP1ATE00000001"
	vTemplate2   = "01HZY8J5Q0TEMP1ATE00000002"
	vConnection  = "01HZY8J5Q0C0NNECT10N000001"
)

func existingConn(template string) ActivationConnection {
	return ActivationConnection{TemplateID: template, ConnectionID: vConnection}
}

func newConn(template string) ActivationConnection {
	return ActivationConnection{TemplateID: template, Name: "CRM", Credentials: json.RawMessage(`{"apiKey":"k"}`),
		Variables: []ConnectionVariable{{Name: "region", Value: "eu"}}}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	req := func(mod func(*ActivationRequest)) ActivationRequest {
		r := ActivationRequest{UserID: "user-1", IntegrationID: vIntegration}
		if mod != nil {
			mod(&r)
		}
		return r
	}
	conns := func(cs ...ActivationConnection) func(*ActivationRequest) {
		return func(r *ActivationRequest) { r.Connections = cs }
	}
	withConn := func(mod func(*ActivationConnection)) func(*ActivationRequest) {
		return func(r *ActivationRequest) {
			c := newConn(vTemplate1)
			mod(&c)
			r.Connections = []ActivationConnection{c}
		}
	}
	tests := []struct {
		name      string
		req       ActivationRequest
		wantField string // "" means valid
	}{
		// Good requests.
		{"no connections", req(nil), ""},
		{"existing connection", req(conns(existingConn(vTemplate1))), ""},
		{"new connection", req(conns(newConn(vTemplate1))), ""},
		{"new connection without variables", req(withConn(func(c *ActivationConnection) { c.Variables = nil })), ""},
		{"both forms in two connections", req(conns(existingConn(vTemplate1), newConn(vTemplate2))), ""},
		{"credentials with spaces", req(withConn(func(c *ActivationConnection) { c.Credentials = json.RawMessage(" \n{\"a\": 1} ") })), ""},
		{"dynamic variables object", req(func(r *ActivationRequest) { r.DynamicVariables = json.RawMessage(`{"plan":"gold"}`) }), ""},
		{"unicode user id", req(func(r *ActivationRequest) { r.UserID = "josé@example.com" }), ""},
		{"user id of max length", req(func(r *ActivationRequest) { r.UserID = strings.Repeat("u", maxUserIDLength) }), ""},
		{"user id with colons", req(func(r *ActivationRequest) { r.UserID = "tenant:1:user:2" }), ""},

		// userId.
		{"user id missing", req(func(r *ActivationRequest) { r.UserID = "" }), "userId"},
		{"user id too long", req(func(r *ActivationRequest) { r.UserID = strings.Repeat("u", maxUserIDLength+1) }), "userId"},
		{"user id with space", req(func(r *ActivationRequest) { r.UserID = "user 1" }), "userId"},
		{"user id with tab", req(func(r *ActivationRequest) { r.UserID = "user\t1" }), "userId"},
		{"user id with newline", req(func(r *ActivationRequest) { r.UserID = "user-1\n" }), "userId"},
		{"user id with NBSP", req(func(r *ActivationRequest) { r.UserID = "user\u00a01" }), "userId"},
		{"user id with NUL", req(func(r *ActivationRequest) { r.UserID = "user\x001" }), "userId"},
		{"user id not UTF-8", req(func(r *ActivationRequest) { r.UserID = "user-\xff" }), "userId"},

		// integrationId.
		{"integration id missing", req(func(r *ActivationRequest) { r.IntegrationID = "" }), "integrationId"},
		{"integration id not a ULID", req(func(r *ActivationRequest) { r.IntegrationID = "crm" }), "integrationId"},
		{"integration id too short", req(func(r *ActivationRequest) { r.IntegrationID = vIntegration[:25] }), "integrationId"},
		{"integration id with U", req(func(r *ActivationRequest) { r.IntegrationID = "01HZY8J5Q0A1B2C3D4E5F6G7HU" }), "integrationId"},
		{"integration id overflows", req(func(r *ActivationRequest) { r.IntegrationID = "8ZZZZZZZZZZZZZZZZZZZZZZZZZ" }), "integrationId"},

		// Connections.
		{"connection of neither form", req(conns(ActivationConnection{TemplateID: vTemplate1})), "connections[0]"},
		{"connection with id and name", req(withConn(func(c *ActivationConnection) { c.ConnectionID = vConnection })), "connections[0]"},
		{"connection with id and credentials", req(conns(ActivationConnection{TemplateID: vTemplate1, ConnectionID: vConnection,
			Credentials: json.RawMessage(`{}`)})), "connections[0]"},
		{"connection with id and variables", req(conns(ActivationConnection{TemplateID: vTemplate1, ConnectionID: vConnection,
			Variables: []ConnectionVariable{}})), "connections[0]"},
		{"template id missing", req(conns(existingConn(""))), "connections[0].templateId"},
		{"template id bad", req(conns(existingConn(vTemplate1), existingConn("tmpl-2"))), "connections[1].templateId"},
		{"connection id bad", req(conns(ActivationConnection{TemplateID: vTemplate1, ConnectionID: "conn-1"})), "connections[0].connectionId"},
		{"credentials missing", req(withConn(func(c *ActivationConnection) { c.Credentials = nil })), "connections[0].credentials"},
		{"credentials array", req(withConn(func(c *ActivationConnection) { c.Credentials = json.RawMessage(`[]`) })), "connections[0].credentials"},
		{"credentials string", req(withConn(func(c *ActivationConnection) { c.Credentials = json.RawMessage(`"secret"`) })), "connections[0].credentials"},
		{"credentials null", req(withConn(func(c *ActivationConnection) { c.Credentials = json.RawMessage(`null`) })), "connections[0].credentials"},
		{"credentials broken", req(withConn(func(c *ActivationConnection) { c.Credentials = json.RawMessage(`{"a":`) })), "connections[0].credentials"},
		{"variable without name", req(withConn(func(c *ActivationConnection) {
			c.Variables = []ConnectionVariable{{Name: "a", Value: "1"}, {Value: "2"}}
		})), "connections[0].variables[1].name"},
		{"duplicate template", req(conns(existingConn(vTemplate1), newConn(vTemplate2), newConn(vTemplate1))), "connections[2].templateId"},

		// dynamicVariables.
		{"dynamic variables array", req(func(r *ActivationRequest) { r.DynamicVariables = json.RawMessage(`[1]`) }), "dynamicVariables"},
		{"dynamic variables string", req(func(r *ActivationRequest) { r.DynamicVariables = json.RawMessage(`"x"`) }), "dynamicVariables"},
		{"dynamic variables broken", req(func(r *ActivationRequest) { r.DynamicVariables = json.RawMessage(`{"x"}`) }), "dynamicVariables"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.req.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("Validate() = %v (%T), want a *ValidationError", err, err)
			}
			if ve.Field != tt.wantField {
				t.Errorf("Field = %q, want %q (reason %q)", ve.Field, tt.wantField, ve.Reason)
			}
			if ve.Reason == "" {
				t.Error("empty Reason")
			}
			if want := ve.Field + ": " + ve.Reason; err.Error() != want {
				t.Errorf("Error() = %q, want %q", err.Error(), want)
			}
		})
	}
}

// TestValidateUserIDNotEchoed checks that an overlong user id is not repeated in the error.
func TestValidateUserIDNotEchoed(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 10_000)
	err := ActivationRequest{UserID: long, IntegrationID: vIntegration}.Validate()
	if err == nil || len(err.Error()) > 200 {
		t.Errorf("Validate() = %.300v", err)
	}
}

func TestActivationRequestMarshalJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		req  ActivationRequest
		want string
	}{
		{"nil connections", ActivationRequest{UserID: "u", IntegrationID: vIntegration},
			`{"userId":"u","integrationId":"` + vIntegration + `","connections":[]}`},
		{"empty connections", ActivationRequest{UserID: "u", IntegrationID: vIntegration, Connections: []ActivationConnection{}},
			`{"userId":"u","integrationId":"` + vIntegration + `","connections":[]}`},
		{"dynamic variables", ActivationRequest{UserID: "u", IntegrationID: vIntegration, DynamicVariables: json.RawMessage(`{"a":1}`)},
			`{"userId":"u","integrationId":"` + vIntegration + `","connections":[],"dynamicVariables":{"a":1}}`},
		{"existing form", ActivationRequest{UserID: "u", IntegrationID: vIntegration, Connections: []ActivationConnection{
			{TemplateID: vTemplate1, ConnectionID: vConnection, Name: "ignored", Credentials: json.RawMessage(`{"x":1}`),
				Variables: []ConnectionVariable{{Name: "n", Value: "v"}}}}},
			`{"userId":"u","integrationId":"` + vIntegration + `","connections":[{"templateId":"` + vTemplate1 + `","connectionId":"` + vConnection + `"}]}`},
		{"new form without variables", ActivationRequest{UserID: "u", IntegrationID: vIntegration, Connections: []ActivationConnection{
			{TemplateID: vTemplate1, Name: "CRM", Credentials: json.RawMessage(`{"k":"v"}`)}}},
			`{"userId":"u","integrationId":"` + vIntegration + `","connections":[{"templateId":"` + vTemplate1 + `","name":"CRM","credentials":{"k":"v"},"variables":[]}]}`},
		{"new form without credentials", ActivationRequest{UserID: "u", IntegrationID: vIntegration, Connections: []ActivationConnection{
			{TemplateID: vTemplate1, Name: "CRM"}}},
			`{"userId":"u","integrationId":"` + vIntegration + `","connections":[{"templateId":"` + vTemplate1 + `","name":"CRM","credentials":{},"variables":[]}]}`},
		{"new form with variables", ActivationRequest{UserID: "u", IntegrationID: vIntegration, Connections: []ActivationConnection{
			{TemplateID: vTemplate1, Name: "CRM", Credentials: json.RawMessage(`{}`), Variables: []ConnectionVariable{{Name: "n", Value: ""}}}}},
			`{"userId":"u","integrationId":"` + vIntegration + `","connections":[{"templateId":"` + vTemplate1 + `","name":"CRM","credentials":{},"variables":[{"name":"n","value":""}]}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, err := json.Marshal(tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Errorf("Marshal =\n  %s\nwant\n  %s", b, tt.want)
			}
			// A pointer marshals the same way.
			pb, err := json.Marshal(&tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if string(pb) != tt.want {
				t.Errorf("Marshal(&req) = %s", pb)
			}
		})
	}
}

func TestActivationRequestRoundTrip(t *testing.T) {
	t.Parallel()
	in := ActivationRequest{UserID: "user-1", IntegrationID: vIntegration,
		Connections:      []ActivationConnection{existingConn(vTemplate1), newConn(vTemplate2)},
		DynamicVariables: json.RawMessage(`{"plan":"gold"}`)}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out ActivationRequest
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip:\n  in  %+v\n  out %+v", in, out)
	}
	if err := out.Validate(); err != nil {
		t.Errorf("Validate after round trip: %v", err)
	}
	if got, want := out.Pair(), (Pair{UserID: "user-1", IntegrationID: vIntegration}); got != want {
		t.Errorf("Pair() = %+v, want %+v", got, want)
	}
	if !in.Connections[0].IsExisting() || in.Connections[1].IsExisting() {
		t.Error("IsExisting is wrong")
	}
}

func TestCanonical(t *testing.T) {
	t.Parallel()
	lower := strings.ToLower
	tests := []struct {
		name      string
		req       ActivationRequest
		want      ActivationRequest
		wantField string
	}{
		{
			name: "already canonical",
			req:  ActivationRequest{UserID: "u", IntegrationID: vIntegration, Connections: []ActivationConnection{existingConn(vTemplate1)}},
			want: ActivationRequest{UserID: "u", IntegrationID: vIntegration, Connections: []ActivationConnection{existingConn(vTemplate1)}},
		},
		{
			name: "every ULID in lower case",
			req: ActivationRequest{UserID: "u", IntegrationID: lower(vIntegration), Connections: []ActivationConnection{
				{TemplateID: lower(vTemplate1), ConnectionID: lower(vConnection)}, newConn(lower(vTemplate2))}},
			want: ActivationRequest{UserID: "u", IntegrationID: vIntegration, Connections: []ActivationConnection{
				existingConn(vTemplate1), newConn(vTemplate2)}},
		},
		{
			name: "user ids keep their case",
			req:  ActivationRequest{UserID: "User-A", IntegrationID: "01hzy8j5q0a1B2C3D4E5F6G7H8"},
			want: ActivationRequest{UserID: "User-A", IntegrationID: vIntegration},
		},
		{
			name: "one template in two cases is bound twice",
			req: ActivationRequest{UserID: "u", IntegrationID: vIntegration, Connections: []ActivationConnection{
				existingConn(vTemplate1), existingConn(lower(vTemplate1))}},
			wantField: "connections[1].templateId",
		},
		{
			name:      "invalid stays invalid",
			req:       ActivationRequest{UserID: "u", IntegrationID: "not-a-ulid"},
			wantField: "integrationId",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := slices.Clone(tt.req.Connections)
			got, err := tt.req.Canonical()
			if tt.wantField != "" {
				var ve *ValidationError
				if !errors.As(err, &ve) || ve.Field != tt.wantField {
					t.Fatalf("Canonical() error = %v, want a ValidationError for %s", err, tt.wantField)
				}
				return
			}
			if err != nil {
				t.Fatalf("Canonical() = %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Canonical() = %+v, want %+v", got, tt.want)
			}
			if !reflect.DeepEqual(tt.req.Connections, before) {
				t.Errorf("Canonical changed the caller's connections: %+v", tt.req.Connections)
			}
			if got.Pair() != got.Pair().Canonical() || tt.req.Pair().Canonical() != got.Pair() {
				t.Errorf("Pair.Canonical disagrees with Canonical: %+v", tt.req.Pair().Canonical())
			}
		})
	}
}

// TestValidateRawValuesEncodable checks that Validate refuses the raw values (credentials,
// dynamicVariables) that MarshalJSON, and so NewTask, cannot write: before, a request built in Go or
// from a CSV cell passed Validate with them, and its enqueue then failed as if Redis had (a file run
// counted it failed, the intake answered 503), after its pair had been claimed.
func TestValidateRawValuesEncodable(t *testing.T) {
	t.Parallel()
	deep := `{"a":` + strings.Repeat("[", maxValueDepth) + strings.Repeat("]", maxValueDepth) + `}`
	tests := []struct{ name, raw, reason string }{
		{"duplicate name", `{"a":1,"a":2}`, "no name twice"},
		{"duplicate name nested", `{"o":{"b":1,"b":2}}`, "no name twice"},
		{"lone surrogate", `{"a":"\ud800"}`, "lone surrogate"},
		{"invalid UTF-8", "{\"a\":\"\xff\"}", "invalid UTF-8"},
		{"deeper than the payload can hold", deep, "nested at most"},
		{"not JSON", `{"a":"\usecret"}`, "must be a JSON object"},
		{"fine", ` {"a":[1,{"b":"\ud83d\ude00"}]} `, ""},
		{"as deep as allowed", `{"a":` + strings.Repeat("[", maxValueDepth-1) + strings.Repeat("]", maxValueDepth-1) + `}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, r := range []ActivationRequest{
				{UserID: "u", IntegrationID: vIntegration, DynamicVariables: json.RawMessage(tt.raw)},
				{UserID: "u", IntegrationID: vIntegration, Connections: []ActivationConnection{{TemplateID: vTemplate1, Name: "n", Credentials: json.RawMessage(tt.raw)}}},
			} {
				err := r.Validate()
				var ve *ValidationError
				switch {
				case tt.reason == "" && err != nil:
					t.Fatalf("Validate: %v", err)
				case tt.reason == "":
				case !errors.As(err, &ve) || !strings.Contains(ve.Reason, tt.reason) || strings.Contains(ve.Reason, "secret"):
					t.Fatalf("Validate = %v, want a reason with %q", err, tt.reason)
				}
				if _, merr := r.MarshalJSON(); err == nil && merr != nil {
					t.Fatalf("Validate accepts %s, MarshalJSON refuses it: %v", tt.raw, merr)
				}
			}
		})
	}
}

// TestValidateManyConnections checks that a template bound twice is found in a request with many
// connections (checked with a map) as in one with a few (checked with a scan), in either case.
func TestValidateManyConnections(t *testing.T) {
	t.Parallel()
	for _, n := range []int{3, maxScanConnections, maxScanConnections + 1, 5000} {
		cs := make([]ActivationConnection, n)
		for i := range cs {
			id := []byte(vTemplate1)
			copy(id[len(id)-4:], fmt.Sprintf("%04d", i))
			cs[i] = ActivationConnection{TemplateID: string(id), ConnectionID: vConnection}
		}
		r := ActivationRequest{UserID: "u", IntegrationID: vIntegration, Connections: cs}
		if err := r.Validate(); err != nil {
			t.Fatalf("n=%d: Validate: %v", n, err)
		}
		cs[n-1].TemplateID = strings.ToLower(cs[1].TemplateID)
		err := r.Validate()
		var ve *ValidationError
		want := fmt.Sprintf("connections[%d].templateId", n-1)
		if !errors.As(err, &ve) || ve.Field != want || !strings.HasSuffix(ve.Reason, "is already bound by connections[1]") {
			t.Fatalf("n=%d: Validate = %v, want %s already bound by connections[1]", n, err, want)
		}
	}
}
