package tasks_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

const secret = "END-USER-THIRD-PARTY-SECRET"

func key(id string, b byte) string {
	return id + ":" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(rune(b)), 32)))
}

func ring(t testing.TB, specs ...string) *tasks.Keyring {
	t.Helper()
	k, err := tasks.ParseKeyring(strings.Join(specs, ","))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func secretReq(user string) versori.ActivationRequest {
	return versori.ActivationRequest{UserID: user, IntegrationID: testutil.IntegrationID,
		Connections: []versori.ActivationConnection{
			{TemplateID: testutil.TemplateID, ConnectionID: testutil.ConnectionID},
			{TemplateID: testutil.OtherTemplateID, Name: "n", Credentials: json.RawMessage(`{"apiKey":"` + secret + `"}`)},
		}}
}

const primarySecret = "PRIMARY-CONNECTION-SECRET"

// endUser is an end user to create whose primary connection has credentials.
func endUser() *tasks.EndUser {
	return &tasks.EndUser{DisplayName: "Ada", PrimaryConnection: &versori.ConnectionCreate{
		Name: "primary", Credentials: json.RawMessage(`{"token":"` + primarySecret + `"}`), Variables: []versori.ConnectionVariable{}}}
}

func TestParseKeyring(t *testing.T) {
	tests := []struct {
		in, err string
		ids     []string
	}{
		{"", "", nil},
		{key("a", 1), "", []string{"a"}},
		{key("b", 2) + ", " + key("a_-1", 1), "", []string{"b", "a_-1"}},
		{"a:" + base64.RawURLEncoding.EncodeToString(make([]byte, 32)), "", []string{"a"}},
		{"nocolon", "key 1 has no ':'", nil},
		{key("a", 1) + "," + key("a", 2), `key 2 repeats id "a"`, nil},
		{key("a/b", 1), "key 1 has an id", nil},
		{"a:" + base64.StdEncoding.EncodeToString(make([]byte, 16)), `key 1 (id "a") is 16 bytes`, nil},
		{"a:not base64!", `key 1 (id "a") is not base64`, nil},
		// Set but blank (a stray space, a template left empty) is a mistake, not "no keys": a worker
		// without keys dead-letters every sealed job.
		{" ", "set but blank", nil},
		{"\t\r\n", "set but blank", nil},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			k, err := tasks.ParseKeyring(tt.in)
			if tt.err != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tasks.EncryptionKeysVar+": "+tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				if _, material, _ := strings.Cut(tt.in, ":"); len(material) > 4 && strings.Contains(err.Error(), material) {
					t.Errorf("the error quotes key material: %v", err)
				}
				return
			}
			if err != nil || strings.Join(k.IDs(), ",") != strings.Join(tt.ids, ",") {
				t.Fatalf("ParseKeyring = %v, %v; want ids %v", k.IDs(), err, tt.ids)
			}
		})
	}
}

// TestSealOpen: a seal opens with its key for its pair only; the sealed payload holds no secret.
func TestSealOpen(t *testing.T) {
	a, b := key("a", 1), key("b", 2)
	sealed := tasks.Payload{Request: secretReq("u-1")}
	if err := sealed.Seal(ring(t, a)); err != nil {
		t.Fatal(err)
	}
	enc, _ := json.Marshal(sealed)
	if strings.Contains(string(enc), secret) || tasks.HasCredentials(sealed.Request) || tasks.SecretKeyID(sealed.Secrets) != "a" {
		t.Fatalf("sealed payload = %s", enc)
	}
	other := tasks.Payload{Request: secretReq("u-2")}
	if err := other.Seal(ring(t, a)); err != nil {
		t.Fatal(err)
	}
	moved := tasks.Payload{Request: other.Request, Secrets: sealed.Secrets} // u-1's seal on u-2's job
	relabelled := sealed
	relabelled.Secrets = "b" + strings.TrimPrefix(sealed.Secrets, "a")
	// Reordered or retemplated connections would hand one third party's credentials to another's.
	two := secretReq("u-1")
	two.Connections[0] = versori.ActivationConnection{TemplateID: testutil.TemplateID, Name: "m", Credentials: json.RawMessage(`{"apiKey":"` + secret + `-0"}`)}
	twoSealed := tasks.Payload{Request: two}
	if err := twoSealed.Seal(ring(t, a)); err != nil {
		t.Fatal(err)
	}
	swapped := twoSealed
	swapped.Request.Connections = []versori.ActivationConnection{twoSealed.Request.Connections[1], twoSealed.Request.Connections[0]}
	retemplated := sealed
	retemplated.Request.Connections = append([]versori.ActivationConnection(nil), sealed.Request.Connections...)
	retemplated.Request.Connections[1].TemplateID = strings.ToLower(testutil.TemplateID)
	recased := sealed // the same ULID spelt in lower case is the same template
	recased.Request.Connections = append([]versori.ActivationConnection(nil), sealed.Request.Connections...)
	recased.Request.Connections[1].TemplateID = strings.ToLower(testutil.OtherTemplateID)
	// The end user's primary connection credentials are sealed with the request's, bound to their
	// label: a seal without them does not open as one with them, nor the other way round.
	withUser := tasks.Payload{Request: secretReq("u-1"), EndUser: endUser()}
	if err := withUser.Seal(ring(t, a)); err != nil {
		t.Fatal(err)
	}
	if enc, _ := json.Marshal(withUser); strings.Contains(string(enc), primarySecret) || tasks.EndUserHasCredentials(withUser.EndUser) {
		t.Fatalf("sealed payload with an end user = %s", enc)
	}
	onlyUser := tasks.Payload{Request: versori.ActivationRequest{UserID: "u-1", IntegrationID: testutil.IntegrationID}, EndUser: endUser()}
	if err := onlyUser.Seal(ring(t, a)); err != nil || onlyUser.Secrets == "" {
		t.Fatalf("Seal of a payload whose only credentials are the end user's = %v, secrets %q", err, onlyUser.Secrets)
	}
	userDropped := withUser // the seal holds the end user's credentials; the payload no longer withholds them
	userDropped.EndUser = nil
	userAdded := sealed // the payload withholds end-user credentials the seal never held
	userAdded.EndUser = tasks.RedactEndUser(endUser())
	userSwapped := withUser // the label binds the seal: another seal of the pair without them does not do
	userSwapped.Secrets = sealed.Secrets
	tests := []struct {
		name string
		p    tasks.Payload
		keys *tasks.Keyring
		ok   bool
	}{
		{"own pair, its key", sealed, ring(t, a), true},
		{"own pair, key among others", sealed, ring(t, b, a), true},
		{"no keys", sealed, nil, false},
		{"key id unknown", sealed, ring(t, b), false},
		{"another key under the id", sealed, ring(t, "a:"+strings.Split(b, ":")[1]), false},
		{"moved to another pair", moved, ring(t, a), false},
		{"relabelled key id", relabelled, ring(t, a, b), false},
		{"withheld without a seal", tasks.Payload{Request: sealed.Request}, ring(t, a), false},
		{"connections swapped", swapped, ring(t, a), false},
		{"template changed", retemplated, ring(t, a), false},
		{"template recased", recased, ring(t, a), true},
		{"with the end user's credentials", withUser, ring(t, a), true},
		{"only the end user's credentials", onlyUser, ring(t, a), true},
		{"end user dropped", userDropped, ring(t, a), false},
		{"end user withheld, not sealed", userAdded, ring(t, a), false},
		{"end user's seal swapped", userSwapped, ring(t, a), false},
		{"end user withheld, no seal", tasks.Payload{Request: onlyUser.Request, EndUser: onlyUser.EndUser}, ring(t, a), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.p
			err := p.Open(tt.keys)
			if !tt.ok {
				if !errors.Is(err, tasks.ErrSecretUnreadable) || strings.Contains(err.Error(), secret) {
					t.Fatalf("Open = %v, want ErrSecretUnreadable without the secret", err)
				}
				return
			}
			if err != nil || p.Secrets != "" || (len(p.Request.Connections) > 1 && string(p.Request.Connections[1].Credentials) != `{"apiKey":"`+secret+`"}`) {
				t.Fatalf("Open = %v, request %+v", err, p.Request)
			}
			if tt.p.EndUser != nil && string(p.EndUser.PrimaryConnection.Credentials) != `{"token":"`+primarySecret+`"}` {
				t.Fatalf("Open gave the end user %+v", p.EndUser.PrimaryConnection)
			}
			if tt.p.EndUser != nil && !tasks.IsWithheld(tt.p.EndUser.PrimaryConnection.Credentials) {
				t.Fatal("Open changed the payload it was given a copy of")
			}
		})
	}
}

func TestRedactPayload(t *testing.T) {
	plain := tasks.Payload{Request: secretReq("u-1"), EndUser: endUser()}
	sealed := plain
	if err := sealed.Seal(ring(t, key("a", 1))); err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]tasks.Payload{"plaintext": plain, "sealed": sealed} {
		t.Run(name, func(t *testing.T) {
			b, _ := json.Marshal(p)
			out, ok := tasks.RedactPayload(b)
			if !ok || strings.Contains(string(out), secret) || strings.Contains(string(out), primarySecret) ||
				!strings.Contains(string(out), tasks.Withheld) || !strings.Contains(string(out), "u-1") || !strings.Contains(string(out), "Ada") {
				t.Errorf("RedactPayload = %s, %v", out, ok)
			}
		})
	}
	if out, ok := tasks.RedactPayload([]byte(`not json ` + secret)); ok || len(out) > 0 {
		t.Errorf("RedactPayload of a non-JSON payload = %q, %v; want nothing shown", out, ok)
	}
}

// BenchmarkSealOpen is the cost of credentials at rest per job: one seal at enqueue, one open in
// the worker.
func BenchmarkSealOpen(b *testing.B) {
	k := ring(b, key("a", 1))
	req := secretReq("u-bench")
	b.ReportAllocs()
	for b.Loop() {
		p := tasks.Payload{Request: req}
		if err := p.Seal(k); err != nil {
			b.Fatal(err)
		}
		if err := p.Open(k); err != nil {
			b.Fatal(err)
		}
	}
}
