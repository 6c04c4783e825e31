package tasks

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/versori"
)

func encodedPayload(t testing.TB, p Payload) []byte {
	t.Helper()
	task, err := NewTask(p)
	if err != nil {
		t.Fatal(err)
	}
	return task.Payload()
}

// TestPayloadRoundTrip checks that DecodePayload reads back what NewTask wrote.
func TestPayloadRoundTrip(t *testing.T) {
	t.Parallel()
	enq := time.Date(2026, 11, 27, 10, 0, 0, 123456789, time.UTC)
	tests := []struct {
		name string
		p    Payload
	}{
		{"existing connection, variables", Payload{Request: versori.ActivationRequest{UserID: "alice", IntegrationID: testutil.IntegrationID,
			Connections:      []versori.ActivationConnection{{TemplateID: testutil.TemplateID, ConnectionID: testutil.ConnectionID}},
			DynamicVariables: json.RawMessage(`{"plan":"gold","n":[1,{"x":"}"}]}`)}}},
		{"new connection, reconcile, batch, enqueued, max retry", Payload{Request: versori.ActivationRequest{UserID: "bob@example.com", IntegrationID: testutil.IntegrationID,
			Connections: []versori.ActivationConnection{{TemplateID: testutil.TemplateID, Name: "crm", Credentials: json.RawMessage(`{"apiKey":"k\"1"}`),
				Variables: []versori.ConnectionVariable{{Name: "region", Value: "eu"}}}}},
			Reconcile: true, Batch: "01HZY8J5Q0BATCH00000000001", EnqueuedAt: enq, MaxRetry: 7}},
		{"no connections", Payload{Request: versori.ActivationRequest{UserID: "carol", IntegrationID: testutil.IntegrationID}, Batch: "b"}},
		{"escaped user id", Payload{Request: versori.ActivationRequest{UserID: "d<&>\u00e9\"q", IntegrationID: testutil.IntegrationID,
			Connections: []versori.ActivationConnection{{TemplateID: testutil.TemplateID, ConnectionID: testutil.ConnectionID}, {TemplateID: testutil.OtherTemplateID, ConnectionID: testutil.ConnectionID}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := encodedPayload(t, tt.p)
			got, err := DecodePayload(b)
			if err != nil {
				t.Fatalf("DecodePayload(%s): %v", b, err)
			}
			want := tt.p
			if want.Request.Connections == nil {
				want.Request.Connections = []versori.ActivationConnection{}
			}
			for i, c := range got.Request.Connections {
				if !c.IsExisting() && c.Variables != nil && len(c.Variables) == 0 {
					got.Request.Connections[i].Variables = nil
				}
			}
			if !got.EnqueuedAt.Equal(want.EnqueuedAt) {
				t.Fatalf("enqueuedAt %v, want %v", got.EnqueuedAt, want.EnqueuedAt)
			}
			got.EnqueuedAt, want.EnqueuedAt = time.Time{}, time.Time{}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("DecodePayload(%s) = %+v, want %+v", b, got, want)
			}
		})
	}
}

// TestDecodePayloadShapes checks payloads NewTask does not write: those the strict request decoder
// accepts are read as it reads them, the others fail as it fails.
func TestDecodePayloadShapes(t *testing.T) {
	t.Parallel()
	conn := `{"templateId":"` + testutil.TemplateID + `","connectionId":"` + testutil.ConnectionID + `"}`
	tests := []struct {
		name      string
		payload   string
		wantConns int    // connections read, when the payload is accepted
		wantErr   string // part of the error; "" when it is accepted
	}{
		{"connections null", `{"request":{"userId":"u","integrationId":"` + testutil.IntegrationID + `","connections":null}}`, 0, ""},
		{"unknown payload field skipped", `{"request":{"userId":"u","integrationId":"` + testutil.IntegrationID + `","connections":[` + conn + `]},"op":"activate"}`, 1, ""},
		{"lower-case ULIDs made canonical", `{"request":{"userId":"u","integrationId":"` + strings.ToLower(testutil.IntegrationID) + `","connections":[{"templateId":"` + strings.ToLower(testutil.TemplateID) + `","connectionId":"` + strings.ToLower(testutil.ConnectionID) + `"}]}}`, 1, ""},
		{"unknown request field refused", `{"request":{"userId":"u","integrationId":"` + testutil.IntegrationID + `","connections":[` + conn + `],"extra":1}}`, 0, "extra: is not a known field"},
		{"duplicate user id refused", `{"request":{"userId":"x","userId":"u","integrationId":"` + testutil.IntegrationID + `","connections":[]}}`, 0, "userId: appears more than once"},
		{"user id in another case refused", `{"request":{"userId":"u","USERID":"x","integrationId":"` + testutil.IntegrationID + `","connections":[]}}`, 0, "USERID: is not a known field"},
		{"payload field in another case is not the request", `{"Request":{"userId":"u","integrationId":"` + testutil.IntegrationID + `","connections":[]}}`, 0, "request: is missing"},
		{"dynamic variables not an object", `{"request":{"userId":"u","integrationId":"` + testutil.IntegrationID + `","connections":[],"dynamicVariables":[1]}}`, 0, "dynamicVariables"},
		{"bad integration id", `{"request":{"userId":"u","integrationId":"nope","connections":[]}}`, 0, "integrationId"},
		{"no user", `{"request":{"integrationId":"` + testutil.IntegrationID + `","connections":[]}}`, 0, "userId"},
		{"batch given twice", `{"request":{"userId":"u","integrationId":"` + testutil.IntegrationID + `","connections":[]},"batch":"a","batch":"b"}`, 0, `"/batch" is given twice`},
		{"reconcile not a bool", `{"request":{"userId":"u","integrationId":"` + testutil.IntegrationID + `","connections":[]},"reconcile":"yes"}`, 0, "not JSON"},
		{"not JSON", `{"request":`, 0, "not JSON"},
		{"not an object", `[1]`, 0, "not JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := DecodePayload([]byte(tt.payload))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("DecodePayload(%s) error %v, want one naming %q", tt.payload, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodePayload(%s): %v", tt.payload, err)
			}
			if p.Request.UserID != "u" || p.Request.IntegrationID != testutil.IntegrationID || len(p.Request.Connections) != tt.wantConns ||
				(tt.wantConns > 0 && p.Request.Connections[0].TemplateID != testutil.TemplateID) {
				t.Fatalf("DecodePayload(%s) = %+v", tt.payload, p)
			}
		})
	}
}

// FuzzDecodePayload checks that whatever DecodePayload accepts is a valid, canonical request that
// NewTask writes back into a payload DecodePayload reads the same way.
func FuzzDecodePayload(f *testing.F) {
	f.Add(encodedPayload(f, Payload{Request: versori.ActivationRequest{UserID: "alice", IntegrationID: testutil.IntegrationID,
		Connections:      []versori.ActivationConnection{{TemplateID: testutil.TemplateID, ConnectionID: testutil.ConnectionID}},
		DynamicVariables: json.RawMessage(`{"plan":"gold"}`)}, Reconcile: true, Batch: "b1", EnqueuedAt: time.Unix(1e9, 5).UTC()}))
	f.Add([]byte(`{"request":{"userId":"u\u0041","integrationId":"` + testutil.IntegrationID + `","connections":[]},"batch":"x","reconcile":false}`))
	f.Add([]byte(`{"request":{"userId":"u","integrationId":"` + testutil.IntegrationID + `","connections":[{}],"dynamicVariables":{}},"enqueuedAt":"2026-01-02T03:04:05Z"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if u, ok := decodeUsual(b); ok {
			s, err := decodeSteps(b)
			if err != nil || !reflect.DeepEqual(u, s) {
				t.Fatalf("%s: one pass read %+v, the steps %+v, %v", b, u, s, err)
			}
		}
		p, err := DecodePayload(b)
		if err != nil {
			return
		}
		if c, err := p.Request.Canonical(); err != nil || !reflect.DeepEqual(c, p.Request) {
			t.Fatalf("accepted %s as %+v: not valid and canonical (%v)", b, p.Request, err)
		}
		again, err := DecodePayload(encodedPayload(t, p))
		if err != nil || again.Request.Pair() != p.Request.Pair() || again.Reconcile != p.Reconcile || again.Batch != p.Batch ||
			!again.EnqueuedAt.Equal(p.EnqueuedAt) || len(again.Request.Connections) != len(p.Request.Connections) {
			t.Fatalf("%s read as %+v, written and read again as %+v, %v", b, p, again, err)
		}
	})
}

// BenchmarkDecodePayload is the worker's cost of reading one job: decode, validate and the
// request's encoding for the API.
func BenchmarkDecodePayload(b *testing.B) {
	pl := encodedPayload(b, Payload{Request: versori.ActivationRequest{UserID: "user-0000001", IntegrationID: testutil.IntegrationID,
		Connections:      []versori.ActivationConnection{{TemplateID: testutil.TemplateID, ConnectionID: testutil.ConnectionID}},
		DynamicVariables: json.RawMessage(`{"region":"eu"}`)}, Batch: "01HZY8J5Q0BATCH00000000001", EnqueuedAt: time.Now()})
	b.ReportAllocs()
	for b.Loop() {
		p, err := DecodePayload(pl)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.Request.MarshalJSON(); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDecodePayloadDeadLetterPair checks the pair DecodePayload gives with an error, which names the
// job's dead letter (and a requeue of it activates): the pair the request names by the strict
// decoder's rules when the payload's other fields are bad, and none when which pair is meant is a
// guess. Before, a bad enqueuedAt or maxRetry lost the pair, two "request" members gave the last one,
// and a request refused for {"userId":"alice","UserID":"bob"} was dead-lettered as bob's (encoding/json
// matches names in any case), so a requeue activated bob. No error quotes a credential.
func TestDecodePayloadDeadLetterPair(t *testing.T) {
	t.Parallel()
	I := testutil.IntegrationID
	good := `{"userId":"alice","integrationId":"` + I + `","connections":[]}`
	newConn := func(creds string) string {
		return `{"userId":"alice","integrationId":"` + I + `","connections":[{"templateId":"` + testutil.TemplateID + `","name":"n","credentials":` + creds + `}]}`
	}
	tests := []struct {
		name, payload, user, err string
	}{
		{"enqueuedAt in another format", `{"request":` + good + `,"enqueuedAt":"2026-01-02 03:04:05"}`, "alice", "not JSON"},
		{"enqueuedAt a number", `{"request":` + good + `,"enqueuedAt":1767322800}`, "alice", "not JSON"},
		{"maxRetry a float", `{"request":` + good + `,"maxRetry":3.5}`, "alice", "not JSON"},
		{"maxRetry huge", `{"request":` + good + `,"maxRetry":1e30}`, "alice", "not JSON"},
		{"reconcile a string", `{"reconcile":"true","request":` + good + `}`, "alice", "not JSON"},
		{"batch twice", `{"batch":"a","batch":"b","request":` + good + `}`, "alice", "given twice"},
		{"request twice", `{"request":` + good + `,"request":{"userId":"bob","integrationId":"` + I + `","connections":[]}}`, "", "given twice"},
		{"request twice after another name twice", `{"batch":"a","batch":"b","request":` + good + `,"request":{"userId":"bob","integrationId":"` + I + `"}}`, "", "given twice"},
		{"user id in another case too", `{"request":{"userId":"alice","UserID":"bob","integrationId":"` + I + `","connections":[]}}`, "alice", "UserID: is not a known field"},
		{"user id twice", `{"request":{"userId":"alice","userId":"bob","integrationId":"` + I + `","connections":[]}}`, "", "userId: appears more than once"},
		{"user id not a string", `{"request":{"userId":7,"integrationId":"` + I + `","connections":[]}}`, "", "userId: must be a string"},
		{"bad connection, pair known", `{"request":{"userId":"alice","integrationId":"` + I + `","connections":[{"templateId":5}]}}`, "alice", "connections[0].templateId"},
		{"credentials name twice, pair known", `{"request":` + newConn(`{"k":"SECRET","k":"x"}`) + `}`, "alice", "connections[0].credentials.k: appears more than once"},
		{"request null", `{"request":null}`, "", "must be a JSON object, not null"},
		{"request a string", `{"request":"` + strings.ReplaceAll(good, `"`, `\"`) + `"}`, "", "must be an object, not a string"},
		{"lone surrogate in credentials", `{"request":` + newConn(`{"k":"\ud800SECRET"}`) + `}`, "", "invalid JSON at byte"},
		{"bad escape in credentials", `{"request":` + newConn(`{"k":"\uSECRET"}`) + `}`, "", "invalid JSON at byte"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := DecodePayload([]byte(tt.payload))
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Fatalf("DecodePayload(%s) error %v, want one with %q", tt.payload, err, tt.err)
			}
			if strings.Contains(err.Error(), "SECR") {
				t.Errorf("error %q quotes the credential", err)
			}
			if p.Request.UserID != tt.user || (tt.user != "") != (p.Request.IntegrationID == I) {
				t.Errorf("DecodePayload(%s) pair %+v, want user %q", tt.payload, p.Request.Pair(), tt.user)
			}
		})
	}
}
