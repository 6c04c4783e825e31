package versori_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
)

// primary is the smallest primary connection a caller gives: no credentials, no variables.
var primary = &versori.ConnectionCreate{Name: "primary"}

// wantClass checks err's class and whether its outcome is unknown.
func wantClass(t *testing.T, what string, err error, class versori.Class, unknown bool) {
	t.Helper()
	if got := versori.Classify(err); got != class || versori.IsOutcomeUnknown(err) != unknown {
		t.Errorf("%s: %v: class %q, outcome unknown %v; want %q, %v", what, err, got, versori.IsOutcomeUnknown(err), class, unknown)
	}
}

func TestCreateEndUser(t *testing.T) {
	t.Parallel()
	cs := newCapturingServer(t, versoritest.Options{RequireKnownUsers: true})
	c := apiKeyClient(t, cs.URL, nil)
	ctx := context.Background()

	u, err := c.CreateEndUser(ctx, versori.EndUserCreate{ExternalID: "user/1", DisplayName: "User One", PrimaryConnection: primary})
	if err != nil {
		t.Fatal(err)
	}
	if u.ExternalID != "user/1" || u.DisplayName != "User One" || u.HubID != cs.HubID() || u.ID == "" || u.CreatedAt.IsZero() {
		t.Errorf("CreateEndUser = %+v", u)
	}
	reqs := cs.requests()
	if len(reqs) != 1 || reqs[0].Method != http.MethodPost || reqs[0].Path != "/hubs/"+cs.HubID()+"/users" {
		t.Fatalf("requests = %+v", reqs)
	}
	// The spec requires the primary connection's credentials and variables: none go out as {} and [].
	var body map[string]any
	if err := json.Unmarshal(reqs[0].Body, &body); err != nil {
		t.Fatal(err)
	}
	pc, _ := body["primaryConnection"].(map[string]any)
	if body["externalId"] != "user/1" || pc["name"] != "primary" {
		t.Errorf("body = %s", reqs[0].Body)
	}
	if creds, ok := pc["credentials"].(map[string]any); !ok || len(creds) != 0 {
		t.Errorf("credentials = %v, want {}", pc["credentials"])
	}
	if vars, ok := pc["variables"].([]any); !ok || len(vars) != 0 {
		t.Errorf("variables = %v, want []", pc["variables"])
	}
	if primary.Variables != nil || primary.Credentials != nil {
		t.Error("CreateEndUser changed the caller's connection")
	}
	if _, err := c.Activate(ctx, versori.ActivationRequest{UserID: "user/1", IntegrationID: testutil.IntegrationID}); err != nil {
		t.Errorf("Activate of the created user: %v", err)
	}

	// A second create is a 409: known outcome, nothing created.
	_, err = c.CreateEndUser(ctx, versori.EndUserCreate{ExternalID: "user/1", PrimaryConnection: primary})
	var ae *versori.Error
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusConflict || ae.Op != versori.OpCreateEndUser {
		t.Errorf("second create: %v", err)
	}
	wantClass(t, "second create", err, versori.ClassConflict, false)
	if n := cs.UserCreates("user/1"); n != 1 {
		t.Errorf("UserCreates = %d, want 1", n)
	}

	// What the API refuses.
	_, err = c.CreateEndUser(ctx, versori.EndUserCreate{ExternalID: "user-2"})
	wantClass(t, "no primary connection", err, versori.ClassInvalidRequest, false)
	if errors.As(err, &ae) && (len(ae.Fields) == 0 || ae.Fields[0].Field != "primaryConnection") {
		t.Errorf("no primary connection: fields %+v", ae.Fields)
	}
	_, err = c.CreateEndUser(ctx, versori.EndUserCreate{PrimaryConnection: primary})
	wantClass(t, "no external id", err, versori.ClassInvalidRequest, false)
	_, err = c.CreateEndUser(ctx, versori.EndUserCreate{ExternalID: "user-2",
		PrimaryConnection: &versori.ConnectionCreate{Name: "p", Credentials: json.RawMessage(`"secret"`)}})
	wantClass(t, "credentials not an object", err, versori.ClassInvalidRequest, false)

	// Without a hub id nothing is sent.
	before := len(cs.requests())
	noHub := apiKeyClient(t, cs.URL, func(cfg *versori.Config) { cfg.HubID = "" })
	if _, err := noHub.CreateEndUser(ctx, versori.EndUserCreate{ExternalID: "user-3", PrimaryConnection: primary}); err == nil || versori.IsOutcomeUnknown(err) {
		t.Errorf("create without a hub id: %v", err)
	}
	if _, err := noHub.GetEndUser(ctx, "user/1"); err == nil || versori.IsOutcomeUnknown(err) {
		t.Errorf("get without a hub id: %v", err)
	}
	if n := len(cs.requests()); n != before {
		t.Errorf("calls without a hub id reached the server: %d requests, want %d", n, before)
	}
	// Another hub is a 404.
	otherHub := apiKeyClient(t, cs.URL, func(cfg *versori.Config) { cfg.HubID = testutil.IntegrationID })
	_, err = otherHub.CreateEndUser(ctx, versori.EndUserCreate{ExternalID: "user-3", PrimaryConnection: primary})
	wantClass(t, "another hub", err, versori.ClassNotFound, false)
}

func TestGetEndUser(t *testing.T) {
	t.Parallel()
	cs := newCapturingServer(t, versoritest.Options{})
	c := apiKeyClient(t, cs.URL, nil)
	ctx := context.Background()
	id := cs.AddUser("user 1/a")

	u, err := c.GetEndUser(ctx, "user 1/a")
	if err != nil {
		t.Fatal(err)
	}
	if u.ID != id || u.ExternalID != "user 1/a" || u.HubID != cs.HubID() {
		t.Errorf("GetEndUser = %+v", u)
	}
	reqs := cs.requests()
	if len(reqs) != 1 || reqs[0].Method != http.MethodGet || reqs[0].Path != "/hubs/"+cs.HubID()+"/users/user 1/a" ||
		reqs[0].Query.Get("identifier_type") != "external" {
		t.Errorf("requests = %+v", reqs)
	}
	_, err = c.GetEndUser(ctx, "User 1/a")
	var ae *versori.Error
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusNotFound || ae.Op != versori.OpGetEndUser {
		t.Errorf("GetEndUser of another case: %v", err)
	}
	wantClass(t, "unknown user", err, versori.ClassNotFound, false)
}

func TestUpdateDynamicVariables(t *testing.T) {
	t.Parallel()
	cs := newCapturingServer(t, versoritest.Options{})
	c := apiKeyClient(t, cs.URL, nil)
	ctx := context.Background()
	p := versori.Pair{UserID: "user-1", IntegrationID: testutil.IntegrationID}
	id := cs.Seed(p)

	got, err := c.UpdateDynamicVariables(ctx, p.UserID, id, json.RawMessage(`{"region":"eu","n":1}`))
	if err != nil || string(got) != `{"region":"eu","n":1}` {
		t.Fatalf("UpdateDynamicVariables = %s, %v", got, err)
	}
	if v, _ := cs.Variables(p); string(v) != `{"region":"eu","n":1}` {
		t.Errorf("Variables = %s", v)
	}
	// No variables replace them with none.
	if got, err := c.UpdateDynamicVariables(ctx, p.UserID, id, nil); err != nil || string(got) != `{}` {
		t.Errorf("UpdateDynamicVariables(nil) = %s, %v", got, err)
	}
	reqs := cs.requests()
	if len(reqs) != 2 || reqs[1].Method != http.MethodPut || reqs[1].Path != "/activations/"+id+"/variables" ||
		string(reqs[1].Body) != `{"dynamicVariables":{}}` {
		t.Errorf("requests = %+v", reqs)
	}

	_, err = c.UpdateDynamicVariables(ctx, p.UserID, testutil.OtherIntegrationID, json.RawMessage(`{}`))
	var ae *versori.Error
	if !errors.As(err, &ae) || ae.Op != versori.OpUpdateVariables {
		t.Errorf("unknown activation: %v", err)
	}
	wantClass(t, "unknown activation", err, versori.ClassNotFound, false)

	// A 5xx before the commit: transient, outcome unknown, nothing changed.
	cs.ScriptOp(versori.OpUpdateVariables, p, versoritest.Fault{Status: http.StatusServiceUnavailable})
	_, err = c.UpdateDynamicVariables(ctx, p.UserID, id, json.RawMessage(`{"lost":true}`))
	wantClass(t, "scripted 503", err, versori.ClassTransient, true)
	if v, _ := cs.Variables(p); string(v) != `{}` {
		t.Errorf("Variables after a 503 = %s", v)
	}
	// A 502 after the commit: the same to the client, but the variables changed.
	cs.ScriptOp(versori.OpUpdateVariables, p, versoritest.Fault{Status: http.StatusBadGateway, Commit: true})
	_, err = c.UpdateDynamicVariables(ctx, p.UserID, id, json.RawMessage(`{"landed":true}`))
	wantClass(t, "scripted 502 after commit", err, versori.ClassTransient, true)
	if v, _ := cs.Variables(p); string(v) != `{"landed":true}` {
		t.Errorf("Variables after a 502 after commit = %s", v)
	}
	// 429 with Retry-After.
	cs.ScriptOp(versori.OpUpdateVariables, p, versoritest.Fault{Status: http.StatusTooManyRequests, RetryAfter: "3"})
	_, err = c.UpdateDynamicVariables(ctx, p.UserID, id, json.RawMessage(`{}`))
	wantClass(t, "scripted 429", err, versori.ClassRateLimited, false)
	if !errors.As(err, &ae) || !ae.HasRetryAfter || ae.RetryAfter != 3*time.Second {
		t.Errorf("429: %v", err)
	}
}

// TestLifecycleTimeoutAfterCommit checks that each lifecycle write whose answer the client's timeout
// cuts off is a transient error of unknown outcome, while the stand-in committed it.
func TestLifecycleTimeoutAfterCommit(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	s := versoritest.New(t, versoritest.Options{Faults: versoritest.Faults{LatencyAfterCommit: time.Minute,
		WriteOps: versoritest.AllWriteOps}})
	c := apiKeyClient(t, s.URL(), func(cfg *versori.Config) { cfg.Timeout = timeout })
	ctx := context.Background()
	p := versori.Pair{UserID: "user-1", IntegrationID: testutil.IntegrationID}
	id := s.Seed(p)

	for _, tt := range []struct {
		op   string
		call func() error
		took func() bool
	}{
		{versori.OpCreateEndUser, func() error {
			_, err := c.CreateEndUser(ctx, versori.EndUserCreate{ExternalID: "user-2", PrimaryConnection: primary})
			return err
		}, func() bool { return s.HasUser("user-2") }},
		{versori.OpUpdateVariables, func() error {
			_, err := c.UpdateDynamicVariables(ctx, p.UserID, id, json.RawMessage(`{"a":1}`))
			return err
		}, func() bool { v, _ := s.Variables(p); return string(v) == `{"a":1}` }},
		{versori.OpDeleteActivation, func() error { return c.DeleteActivation(ctx, id) },
			func() bool { return s.ActivationCount(p) == 0 }},
	} {
		err := tt.call()
		var te *versori.TransportError
		if !errors.As(err, &te) || te.Op != tt.op || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: %v (%T), want a *TransportError wrapping the deadline", tt.op, err, err)
		}
		wantClass(t, tt.op, err, versori.ClassTransient, true)
		if !tt.took() {
			t.Errorf("%s: the stand-in did not commit before the client gave up", tt.op)
		}
	}
}

func TestLifecycleJWT(t *testing.T) {
	t.Parallel()
	key := jwtKey()
	s := versoritest.New(t, versoritest.Options{SigningKeyID: "sk1", PublicKey: &key.PublicKey, RequireKnownUsers: true})
	auth, err := versori.NewJWTAuth("sk1", key)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, versori.Config{BaseURL: s.URL(), HubID: s.HubID(), Auth: auth})
	ctx := context.Background()

	// Each call is made with a token for the user it is about.
	if _, err := c.GetEndUser(ctx, "user-1"); versori.Classify(err) != versori.ClassNotFound {
		t.Errorf("GetEndUser before the create: %v", err)
	}
	if _, err := c.CreateEndUser(ctx, versori.EndUserCreate{ExternalID: "user-1", PrimaryConnection: primary}); err != nil {
		t.Fatal(err)
	}
	if u, err := c.GetEndUser(ctx, "user-1"); err != nil || u.ExternalID != "user-1" {
		t.Errorf("GetEndUser = %+v, %v", u, err)
	}
	act, err := c.Activate(ctx, versori.ActivationRequest{UserID: "user-1", IntegrationID: testutil.IntegrationID})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateDynamicVariables(ctx, "user-1", act.ID, json.RawMessage(`{"a":1}`)); err != nil {
		t.Errorf("UpdateDynamicVariables: %v", err)
	}
	// Another user's token may not change this user's activation.
	_, err = c.UpdateDynamicVariables(ctx, "user-2", act.ID, json.RawMessage(`{"a":2}`))
	wantClass(t, "update as another user", err, versori.ClassUnauthorized, false)
	if err := c.DeleteActivation(versori.WithEndUser(ctx, "user-1"), act.ID); err != nil {
		t.Errorf("DeleteActivation: %v", err)
	}
	for _, call := range s.Calls() {
		if call.Auth != "jwt" {
			t.Errorf("call %s %s authenticated as %q", call.Method, call.Path, call.Auth)
		}
	}
}

func TestLifecycleObserved(t *testing.T) {
	t.Parallel()
	s := versoritest.New(t, versoritest.Options{})
	rec := &recorder{}
	c := apiKeyClient(t, s.URL(), func(cfg *versori.Config) { cfg.Observe = rec.observe })
	ctx := context.Background()
	p := versori.Pair{UserID: "user-1", IntegrationID: testutil.IntegrationID}
	id := s.Seed(p)
	_, _ = c.GetEndUser(ctx, "user-1")
	_, _ = c.CreateEndUser(ctx, versori.EndUserCreate{ExternalID: "user-2", PrimaryConnection: primary})
	_, _ = c.UpdateDynamicVariables(ctx, p.UserID, id, nil)
	want := []observed{
		{op: versori.OpGetEndUser, status: 200},
		{op: versori.OpCreateEndUser, status: 201},
		{op: versori.OpUpdateVariables, status: 200},
	}
	got := rec.all()
	if len(got) != len(want) {
		t.Fatalf("observed %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i].op != want[i].op || got[i].status != want[i].status {
			t.Errorf("observation %d = %s %d, want %s %d", i, got[i].op, got[i].status, want[i].op, want[i].status)
		}
	}
}
