package tasks

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/versori/activator/versori"
)

const (
	plIntegration = "01HZY8J5Q0A1B2C3D4E5F6G7H8"
	plTemplate1   = "01HZY8J5Q0TEMP1ATE00000001"
	plTemplate2   = "01HZY8J5Q0TEMP1ATE00000002"
	plConnection  = "01HZY8J5Q0C0NNECT10N000001"
)

func encodedPayload(t testing.TB, p Payload) []byte {
	t.Helper()
	task, err := NewTask(p)
	if err != nil {
		t.Fatal(err)
	}
	return task.Payload()
}

// TestReadPayloadFastPathMatchesDecode checks that payloads NewTask writes take the fast path, and
// that it reads what the full decode reads: the same pair, flags and batch, and a body that is the
// request as the client would encode it.
func TestReadPayloadFastPathMatchesDecode(t *testing.T) {
	t.Parallel()
	enq := time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)
	tests := []struct {
		name string
		p    Payload
	}{
		{"existing connection, variables", Payload{Request: versori.ActivationRequest{UserID: "alice", IntegrationID: plIntegration,
			Connections:      []versori.ActivationConnection{{TemplateID: plTemplate1, ConnectionID: plConnection}},
			DynamicVariables: json.RawMessage(`{"plan":"gold","n":[1,{"x":"}"}]}`)}}},
		{"new connection, reconcile, batch, enqueued", Payload{Request: versori.ActivationRequest{UserID: "bob@example.com", IntegrationID: plIntegration,
			Connections: []versori.ActivationConnection{{TemplateID: plTemplate1, Name: "crm", Credentials: json.RawMessage(`{"apiKey":"k\"1"}`),
				Variables: []versori.ConnectionVariable{{Name: "region", Value: "eu"}}}}},
			Reconcile: true, Batch: "01HZY8J5Q0BATCH00000000001", EnqueuedAt: enq}},
		{"no connections", Payload{Request: versori.ActivationRequest{UserID: "carol", IntegrationID: plIntegration}, Batch: "b"}},
		{"escaped user id", Payload{Request: versori.ActivationRequest{UserID: "d<&>\u00e9\"q", IntegrationID: plIntegration,
			Connections: []versori.ActivationConnection{{TemplateID: plTemplate1, ConnectionID: plConnection}, {TemplateID: plTemplate2, ConnectionID: plConnection}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := encodedPayload(t, tt.p)
			w, ok := readWire(b)
			if !ok {
				t.Fatalf("payload %s did not take the fast path", b)
			}
			if w.Pair != tt.p.Request.Pair() || w.Reconcile != tt.p.Reconcile || w.Batch != tt.p.Batch || !w.EnqueuedAt.Equal(tt.p.EnqueuedAt) {
				t.Fatalf("fast path read %+v, want pair %+v reconcile %v batch %q enqueued %v", w, tt.p.Request.Pair(), tt.p.Reconcile, tt.p.Batch, tt.p.EnqueuedAt)
			}
			want, err := tt.p.Request.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			if !jsonEqual(t, w.Body, want) {
				t.Fatalf("fast path body %s, want %s", w.Body, want)
			}
			if got := w.Request(); !reflect.DeepEqual(got, decodeRequest(t, want)) {
				t.Fatalf("request() = %+v, want %+v", got, tt.p.Request)
			}
		})
	}
}

func decodeRequest(t *testing.T, b []byte) versori.ActivationRequest {
	t.Helper()
	var r versori.ActivationRequest
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

// TestReadPayloadOtherShapes checks that payloads NewTask does not write leave the fast path: those
// the full decode accepts are sent re-encoded in the wire form, and the others fail as it fails.
func TestReadPayloadOtherShapes(t *testing.T) {
	t.Parallel()
	conn := `{"templateId":"` + plTemplate1 + `","connectionId":"` + plConnection + `"}`
	tests := []struct {
		name     string
		payload  string
		wantBody string // the request sent; empty when ReadJob must fail
		wantErr  string
	}{
		{"connections null", `{"request":{"userId":"u","integrationId":"` + plIntegration + `","connections":null}}`,
			`{"userId":"u","integrationId":"` + plIntegration + `","connections":[]}`, ""},
		{"unknown request field refused", `{"request":{"userId":"u","integrationId":"` + plIntegration + `","connections":[` + conn + `],"extra":1}}`,
			"", "extra: is not a known field"},
		{"duplicate user id refused", `{"request":{"userId":"x","userId":"u","integrationId":"` + plIntegration + `","connections":[]}}`,
			"", "userId: appears more than once"},
		{"user id in another case refused", `{"request":{"userId":"u","USERID":"x","integrationId":"` + plIntegration + `","connections":[]}}`,
			"", "USERID: is not a known field"},
		{"lower-case ULIDs made canonical", `{"request":{"userId":"u","integrationId":"` + strings.ToLower(plIntegration) + `","connections":[{"templateId":"` + strings.ToLower(plTemplate1) + `","connectionId":"` + strings.ToLower(plConnection) + `"}]}}`,
			`{"userId":"u","integrationId":"` + plIntegration + `","connections":[` + conn + `]}`, ""},
		{"field name in another case", `{"Request":{"userId":"u","integrationId":"` + plIntegration + `","connections":[]}}`,
			`{"userId":"u","integrationId":"` + plIntegration + `","connections":[]}`, ""},
		{"dynamic variables not an object", `{"request":{"userId":"u","integrationId":"` + plIntegration + `","connections":[],"dynamicVariables":[1]}}`,
			"", "dynamicVariables"},
		{"bad integration id", `{"request":{"userId":"u","integrationId":"nope","connections":[]}}`, "", "integrationId"},
		{"no user", `{"request":{"integrationId":"` + plIntegration + `","connections":[]}}`, "", "userId"},
		{"reconcile not a bool", `{"request":{"userId":"u","integrationId":"` + plIntegration + `","connections":[]},"reconcile":"yes"}`, "", "not JSON"},
		{"not JSON", `{"request":`, "", "not JSON"},
		{"not an object", `[1]`, "", "not JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if _, ok := readWire([]byte(tt.payload)); ok {
				t.Fatalf("%s took the fast path", tt.payload)
			}
			w, err := ReadJob([]byte(tt.payload))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ReadJob(%s) error %v, want one naming %q", tt.payload, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadJob(%s): %v", tt.payload, err)
			}
			if !jsonEqual(t, w.Body, []byte(tt.wantBody)) || w.Pair.UserID != "u" {
				t.Fatalf("ReadJob(%s) sends %s for %+v, want %s", tt.payload, w.Body, w.Pair, tt.wantBody)
			}
		})
	}
}

// FuzzReadPayload checks the fast path against the full decode on any input: whatever it accepts,
// the full decode reads the same way (the same pair, flags and batch, an equal request), failing at
// most on the connections or dynamic variables, which the fast path leaves to the producer's and the
// API's validation.
func FuzzReadPayload(f *testing.F) {
	f.Add(encodedPayload(f, Payload{Request: versori.ActivationRequest{UserID: "alice", IntegrationID: plIntegration,
		Connections:      []versori.ActivationConnection{{TemplateID: plTemplate1, ConnectionID: plConnection}},
		DynamicVariables: json.RawMessage(`{"plan":"gold"}`)}, Reconcile: true, Batch: "b1", EnqueuedAt: time.Unix(1e9, 5).UTC()}))
	f.Add([]byte(`{"request":{"userId":"u\u0041","integrationId":"` + plIntegration + `","connections":[]},"batch":"x","reconcile":false}`))
	f.Add([]byte(`{"request":{"userId":"u","integrationId":"` + plIntegration + `","connections":[{}],"dynamicVariables":{}},"enqueuedAt":"2026-01-02T03:04:05Z"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		w, ok := readWire(b)
		if !ok {
			return
		}
		p, err := DecodePayload(b)
		var verr *versori.ValidationError
		if errors.As(err, &verr) && (strings.HasPrefix(verr.Field, "connections") || verr.Field == "dynamicVariables") {
			return
		}
		if err != nil {
			t.Fatalf("fast path accepted %s, which the full decode refuses: %v", b, err)
		}
		if w.Pair != p.Request.Pair() || w.Reconcile != p.Reconcile || w.Batch != p.Batch || !w.EnqueuedAt.Equal(p.EnqueuedAt) {
			t.Fatalf("fast path read %+v from %s; full decode %+v", w, b, p)
		}
		if !json.Valid(w.Body) || !bytes.HasPrefix(w.Body, []byte("{")) {
			t.Fatalf("fast path body %s is not a JSON object", w.Body)
		}
		if got := w.Request(); !reflect.DeepEqual(got.Pair(), p.Request.Pair()) || len(got.Connections) != len(p.Request.Connections) {
			t.Fatalf("fast path request %+v; full decode %+v", got, p.Request)
		}
	})
}

func BenchmarkReadPayload(b *testing.B) {
	pl := encodedPayload(b, Payload{Request: versori.ActivationRequest{UserID: "user-0000001", IntegrationID: plIntegration,
		Connections:      []versori.ActivationConnection{{TemplateID: plTemplate1, ConnectionID: plConnection}},
		DynamicVariables: json.RawMessage(`{"region":"eu"}`)}, Batch: "01HZY8J5Q0BATCH00000000001", EnqueuedAt: time.Now()})
	b.Run("fast path", func(b *testing.B) {
		for b.Loop() {
			if _, err := ReadJob(pl); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode, validate, encode", func(b *testing.B) {
		for b.Loop() {
			p, err := DecodePayload(pl)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := p.Request.MarshalJSON(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestPayloadMarshalJSONMatchesEncodingJSON checks the one-pass encoding against encoding/json's
// encoding of the same struct (without the MarshalJSON method): the same bytes.
func TestPayloadMarshalJSONMatchesEncodingJSON(t *testing.T) {
	t.Parallel()
	type plain Payload // no MarshalJSON: encoded field by field
	req := versori.ActivationRequest{UserID: "u<&>\"", IntegrationID: plIntegration,
		Connections:      []versori.ActivationConnection{{TemplateID: plTemplate1, Name: "n", Credentials: json.RawMessage(`{"k": "v<"}`)}},
		DynamicVariables: json.RawMessage(`{ "a" : [1, 2] }`)}
	for _, p := range []Payload{
		{Request: req},
		{Request: req, Reconcile: true, Batch: "b\u2028<1>", EnqueuedAt: time.Date(2026, 11, 27, 1, 2, 3, 4, time.FixedZone("x", 3600))},
		{Request: versori.ActivationRequest{UserID: "v", IntegrationID: plIntegration}, Batch: "b"},
	} {
		got, err := p.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		want, err := json.Marshal(plain(p))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("MarshalJSON = %s\nencoding/json = %s", got, want)
		}
	}
}
