package versori_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/versori/activator/internal/configerr"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
)

// capturedReq is one request as the test server received it.
type capturedReq struct {
	Method string
	Path   string
	Query  url.Values
	Header http.Header
	Body   []byte
}

// capturingServer serves the stand-in behind a handler that records every request's headers and
// body, which the stand-in does not keep. Under a few path prefixes it answers itself, to produce
// responses the stand-in never gives:
//
//	/plain/...   502 with a text/plain body
//	/empty/...   503 with no body
//	/garbled/... 200 with a body that is not JSON
//	/noid/...    200 with an empty JSON object
type capturingServer struct {
	*versoritest.Server
	URL string

	mu   sync.Mutex
	reqs []capturedReq
}

func newCapturingServer(t *testing.T, opts versoritest.Options) *capturingServer {
	t.Helper()
	cs := &capturingServer{Server: versoritest.NewServer(opts)}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		cs.mu.Lock()
		cs.reqs = append(cs.reqs, capturedReq{Method: r.Method, Path: r.URL.Path, Query: r.URL.Query(), Header: r.Header.Clone(), Body: body})
		cs.mu.Unlock()
		first, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
		switch first {
		case "plain":
			w.Header().Set("Content-Type", "text/plain")
			w.WriteHeader(http.StatusBadGateway)
			_, _ = io.WriteString(w, "  upstream connect error\n")
		case "empty":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "garbled":
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"id": "01`)
		case "noid":
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{}`)
		default:
			cs.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(ts.Close)
	cs.URL = ts.URL
	return cs
}

func (cs *capturingServer) requests() []capturedReq {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return append([]capturedReq(nil), cs.reqs...)
}

func newClient(t *testing.T, cfg versori.Config) *versori.Client {
	t.Helper()
	c, err := versori.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func apiKeyClient(t *testing.T, base string, mod func(*versori.Config)) *versori.Client {
	t.Helper()
	cfg := versori.Config{BaseURL: base, HubID: versoritest.DefaultHubID, Auth: versori.APIKey(versoritest.DefaultAPIKey)}
	if mod != nil {
		mod(&cfg)
	}
	return newClient(t, cfg)
}

func newULID() string { return ulid.Make().String() }

func callsOf(s *versoritest.Server, op string) []versoritest.Call {
	var out []versoritest.Call
	for _, c := range s.Calls() {
		if c.Op == op {
			out = append(out, c)
		}
	}
	return out
}

func TestNewConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		cfg     versori.Config
		wantErr bool
	}{
		{"defaults", versori.Config{Auth: versori.APIKey("k")}, false},
		{"https", versori.Config{BaseURL: "https://example.com/api/embedded/v1/", Auth: versori.APIKey("k")}, false},
		{"no auth", versori.Config{BaseURL: "http://example.com"}, true},
		{"ftp", versori.Config{BaseURL: "ftp://example.com", Auth: versori.APIKey("k")}, true},
		{"no host", versori.Config{BaseURL: "http://", Auth: versori.APIKey("k")}, true},
		{"not a URL", versori.Config{BaseURL: "::", Auth: versori.APIKey("k")}, true},
		{"relative", versori.Config{BaseURL: "/api", Auth: versori.APIKey("k")}, true},
		{"hub id", versori.Config{HubID: testHubID, Auth: versori.APIKey("k")}, false},
		{"hub id in lower case", versori.Config{HubID: strings.ToLower(testHubID), Auth: versori.APIKey("k")}, false},
		{"hub id not a ULID", versori.Config{HubID: "hub1", Auth: versori.APIKey("k")}, true},
		{"hub id with a U", versori.Config{HubID: "01HZY8J5Q0HUB0000000000000", Auth: versori.APIKey("k")}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := versori.New(tt.cfg)
			if (err != nil) != tt.wantErr {
				t.Errorf("New() error = %v, wantErr %v", err, tt.wantErr)
			}
		})
	}
}

// TestConfigHubIDError checks that a hub id that is not a ULID is refused naming the field, for a
// command to name its variable (VERSORI_HUB_ID=hub1 used to start a worker whose look-ups failed).
func TestConfigHubIDError(t *testing.T) {
	t.Parallel()
	err := versori.Config{HubID: "hub1", Auth: versori.APIKey("k")}.WithDefaults().Validate()
	var ce *configerr.Error
	if !errors.As(err, &ce) || ce.Field != "HubID" || ce.Problem != `"hub1" is not a ULID (26 Crockford base32 characters)` {
		t.Errorf("Validate() = %v, want a configerr about HubID", err)
	}
}

func TestActivateConnectionForms(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		conn     versori.ActivationConnection
		wantBody string
	}{
		{"existing", versori.ActivationConnection{TemplateID: testutil.TemplateID, ConnectionID: testutil.ConnectionID},
			`{"userId":"user-1","integrationId":"` + testutil.IntegrationID + `","connections":[{"templateId":"` + testutil.TemplateID + `","connectionId":"` + testutil.ConnectionID + `"}]}`},
		{"new", versori.ActivationConnection{TemplateID: testutil.TemplateID, Name: "CRM", Credentials: json.RawMessage(`{"apiKey":"x"}`)},
			`{"userId":"user-1","integrationId":"` + testutil.IntegrationID + `","connections":[{"templateId":"` + testutil.TemplateID + `","name":"CRM","credentials":{"apiKey":"x"},"variables":[]}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newCapturingServer(t, versoritest.Options{})
			s.RequireConnection(testutil.IntegrationID, testutil.TemplateID)
			c := apiKeyClient(t, s.URL, func(cfg *versori.Config) { cfg.UserAgent = "activator-test/1" })
			req := versori.ActivationRequest{UserID: "user-1", IntegrationID: testutil.IntegrationID, Connections: []versori.ActivationConnection{tt.conn}}
			act, err := c.Activate(context.Background(), req)
			if err != nil {
				t.Fatalf("Activate: %v", err)
			}
			if act.ID == "" {
				t.Errorf("Activate = %+v, want an id", act)
			}

			acts := s.Activations()
			if len(acts) != 1 || acts[0].ID != act.ID || acts[0].Pair != req.Pair() {
				t.Errorf("stand-in activations = %+v, want one %s for %+v", acts, act.ID, req.Pair())
			}
			calls := s.Calls()
			if len(calls) != 1 {
				t.Fatalf("stand-in recorded %d calls, want 1: %+v", len(calls), calls)
			}
			if got := calls[0]; got.Op != versori.OpActivate || got.Method != http.MethodPost || got.Path != "/activations" ||
				got.Status != http.StatusOK || !got.Committed || got.Auth != "bearer" || got.Pair != req.Pair() {
				t.Errorf("call = %+v", got)
			}

			reqs := s.requests()
			if len(reqs) != 1 {
				t.Fatalf("captured %d requests, want 1", len(reqs))
			}
			r := reqs[0]
			if string(r.Body) != tt.wantBody {
				t.Errorf("body =\n  %s\nwant\n  %s", r.Body, tt.wantBody)
			}
			wantHeaders := map[string]string{
				"Authorization": "Bearer " + versoritest.DefaultAPIKey,
				"Content-Type":  "application/json",
				"Accept":        "application/json",
				"User-Agent":    "activator-test/1",
			}
			for k, v := range wantHeaders {
				if got := r.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			// An Idempotency-Key would also make net/http replay the POST on a broken keep-alive
			// connection, and the API does not honour one.
			for k := range r.Header {
				if strings.EqualFold(k, "Idempotency-Key") || strings.EqualFold(k, "X-Idempotency-Key") {
					t.Errorf("request carries %s: %q", k, r.Header.Values(k))
				}
			}
		})
	}
}

func TestNoIdempotencyKeyOnAnyCall(t *testing.T) {
	t.Parallel()
	s := newCapturingServer(t, versoritest.Options{})
	c := apiKeyClient(t, s.URL, nil)
	ctx := context.Background()
	req := versori.ActivationRequest{UserID: "user-1", IntegrationID: testutil.IntegrationID}
	act, err := c.Activate(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListUserActivations(ctx, "user-1", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetActivation(ctx, act.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteActivation(ctx, act.ID); err != nil {
		t.Fatal(err)
	}
	reqs := s.requests()
	if len(reqs) != 4 {
		t.Fatalf("captured %d requests, want 4", len(reqs))
	}
	for _, r := range reqs {
		if v := r.Header.Values("Idempotency-Key"); len(v) > 0 {
			t.Errorf("%s %s carries Idempotency-Key %q", r.Method, r.Path, v)
		}
		if r.Header.Get("User-Agent") != "activator" {
			t.Errorf("%s %s: User-Agent = %q, want the default", r.Method, r.Path, r.Header.Get("User-Agent"))
		}
		if r.Method != http.MethodPost && (len(r.Body) != 0 || r.Header.Get("Content-Type") != "") {
			t.Errorf("%s %s has a body %q or Content-Type %q", r.Method, r.Path, r.Body, r.Header.Get("Content-Type"))
		}
	}
}

func TestListUserActivationsFollowsNext(t *testing.T) {
	t.Parallel()
	s := newCapturingServer(t, versoritest.Options{PageSize: 3})
	c := apiKeyClient(t, s.URL, nil)
	ctx := context.Background()
	const user = "team/alice?x=1" // needs escaping in the path
	integrations := make([]string, 8)
	ids := make([]string, 8)
	for i := range integrations {
		integrations[i] = newULID()
		ids[i] = s.Seed(versori.Pair{UserID: user, IntegrationID: integrations[i]})
	}
	s.Seed(versori.Pair{UserID: "someone-else", IntegrationID: integrations[0]})

	got, err := c.ListUserActivations(ctx, user, "")
	if err != nil {
		t.Fatal(err)
	}
	gotIDs := make([]string, len(got))
	for i, a := range got {
		gotIDs[i] = a.ID
		if a.Integration.ID != integrations[i] || a.HubID != versoritest.DefaultHubID {
			t.Errorf("activation %d = %+v, want integration %s", i, a, integrations[i])
		}
	}
	if !reflect.DeepEqual(gotIDs, ids) {
		t.Errorf("ids = %v, want %v", gotIDs, ids)
	}

	lists := callsOf(s.Server, versori.OpListActivations)
	if len(lists) != 3 {
		t.Fatalf("%d list calls, want 3 (pages of 3, 3 and 2)", len(lists))
	}
	for _, call := range lists {
		if call.Status != http.StatusOK || call.Pair.UserID != user {
			t.Errorf("list call = %+v", call)
		}
	}
	reqs := s.requests()
	wantAfter := []string{"", ids[2], ids[5]}
	for i, r := range reqs {
		if r.Query.Get("after") != wantAfter[i] {
			t.Errorf("page %d: after = %q, want %q", i, r.Query.Get("after"), wantAfter[i])
		}
		if r.Query.Get("first") == "" || r.Query.Has("integration_id") {
			t.Errorf("page %d: query %v", i, r.Query)
		}
		if want := "/embed/" + versoritest.DefaultHubID + "/users/" + user + "/activations"; r.Path != want {
			t.Errorf("page %d: path %q, want %q", i, r.Path, want)
		}
	}

	// Filtered by integration: one page, the filter sent.
	one, err := c.ListUserActivations(ctx, user, integrations[4])
	if err != nil {
		t.Fatal(err)
	}
	if len(one) != 1 || one[0].ID != ids[4] {
		t.Errorf("filtered list = %+v, want %s", one, ids[4])
	}
	if last := s.requests()[len(s.requests())-1]; last.Query.Get("integration_id") != integrations[4] {
		t.Errorf("integration_id = %q", last.Query.Get("integration_id"))
	}
}

func TestFindActivation(t *testing.T) {
	t.Parallel()
	s := versoritest.New(t, versoritest.Options{PageSize: 2})
	ctx := context.Background()
	integ := []string{newULID(), newULID(), newULID()}
	ids := make([]string, len(integ))
	for i, in := range integ {
		ids[i] = s.Seed(versori.Pair{UserID: "user-1", IntegrationID: in})
	}
	s.Seed(versori.Pair{UserID: "gone", IntegrationID: integ[0]})
	s.ForgetUser("gone")
	c := apiKeyClient(t, s.URL(), nil)

	tests := []struct {
		name      string
		user      string
		integ     string
		wantID    string
		wantClass versori.Class
	}{
		{"found first", "user-1", integ[0], ids[0], versori.ClassOK},
		{"found last", "user-1", integ[2], ids[2], versori.ClassOK},
		{"other integration", "user-1", newULID(), "", versori.ClassOK},
		{"user without activations", "nobody", integ[0], "", versori.ClassOK},
		{"forgotten user", "gone", integ[0], "", versori.ClassNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := c.FindActivation(ctx, tt.user, tt.integ)
			if cl := versori.Classify(err); cl != tt.wantClass {
				t.Fatalf("FindActivation error %v: class %q, want %q", err, cl, tt.wantClass)
			}
			switch {
			case tt.wantID == "" && got != nil:
				t.Errorf("FindActivation = %+v, want nil", got)
			case tt.wantID != "" && (got == nil || got.ID != tt.wantID || got.Integration.ID != tt.integ):
				t.Errorf("FindActivation = %+v, want %s", got, tt.wantID)
			}
		})
	}

	noHub := apiKeyClient(t, s.URL(), func(cfg *versori.Config) { cfg.HubID = "" })
	if _, err := noHub.FindActivation(ctx, "user-1", integ[0]); err == nil {
		t.Error("FindActivation without a hub id succeeded")
	}
	wrongHub := apiKeyClient(t, s.URL(), func(cfg *versori.Config) { cfg.HubID = newULID() })
	if _, err := wrongHub.FindActivation(ctx, "user-1", integ[0]); versori.Classify(err) != versori.ClassNotFound {
		t.Errorf("FindActivation with an unknown hub: %v", err)
	}
}

func TestGetAndDeleteActivationAPIKey(t *testing.T) {
	t.Parallel()
	s := versoritest.New(t, versoritest.Options{})
	c := apiKeyClient(t, s.URL(), nil)
	ctx := context.Background()
	p := versori.Pair{UserID: "user-1", IntegrationID: testutil.IntegrationID}
	id := s.Seed(p)

	got, err := c.GetActivation(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != id || got.User.ExternalID != p.UserID || got.Integration.ID != p.IntegrationID {
		t.Errorf("GetActivation = %+v", got)
	}
	if err := c.DeleteActivation(ctx, id); err != nil {
		t.Fatal(err)
	}
	if n := s.ActivationCount(p); n != 0 {
		t.Errorf("ActivationCount after delete = %d", n)
	}
	_, err = c.GetActivation(ctx, id)
	var ae *versori.Error
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusNotFound || ae.Op != versori.OpGetActivation || versori.Classify(err) != versori.ClassNotFound {
		t.Errorf("GetActivation after delete: %v", err)
	}
	err = c.DeleteActivation(ctx, id)
	if !errors.As(err, &ae) || ae.StatusCode != http.StatusNotFound || ae.Op != versori.OpDeleteActivation {
		t.Errorf("DeleteActivation twice: %v", err)
	}

	// A rotated key is refused on every call.
	s.SetAPIKey("rotated")
	_, err = c.Activate(ctx, versori.ActivationRequest{UserID: "user-2", IntegrationID: testutil.IntegrationID})
	if versori.Classify(err) != versori.ClassUnauthorized || versori.IsOutcomeUnknown(err) {
		t.Errorf("Activate with a rotated key: %v", err)
	}
	if n := s.ActivationCount(versori.Pair{UserID: "user-2", IntegrationID: testutil.IntegrationID}); n != 0 {
		t.Errorf("refused call committed %d activations", n)
	}
}

var jwtKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func TestJWTMode(t *testing.T) {
	t.Parallel()
	key := jwtKey()
	s := versoritest.New(t, versoritest.Options{SigningKeyID: "sk1", PublicKey: &key.PublicKey})
	auth, err := versori.NewJWTAuth("sk1", key)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, versori.Config{BaseURL: s.URL(), HubID: s.HubID(), Auth: auth})
	ctx := context.Background()
	req := versori.ActivationRequest{UserID: "user-1", IntegrationID: testutil.IntegrationID}

	act, err := c.Activate(ctx, req)
	if err != nil {
		t.Fatalf("Activate: %v", err)
	}
	if calls := s.Calls(); len(calls) != 1 || calls[0].Auth != "jwt" || calls[0].Status != http.StatusOK {
		t.Errorf("calls = %+v", calls)
	}
	found, err := c.FindActivation(ctx, "user-1", testutil.IntegrationID)
	if err != nil || found == nil || found.ID != act.ID {
		t.Fatalf("FindActivation = %+v, %v", found, err)
	}

	// Without the end user on ctx, the call is not made at all.
	before := len(s.Calls())
	if _, err := c.GetActivation(ctx, act.ID); err == nil {
		t.Error("GetActivation without an end user succeeded")
	} else if versori.IsOutcomeUnknown(err) {
		t.Errorf("GetActivation without an end user: outcome unknown: %v", err)
	}
	if err := c.DeleteActivation(ctx, act.ID); err == nil {
		t.Error("DeleteActivation without an end user succeeded")
	}
	if n := len(s.Calls()); n != before {
		t.Errorf("calls without an end user reached the server: %d calls, want %d", n, before)
	}

	// Another user's token is refused.
	_, err = c.GetActivation(versori.WithEndUser(ctx, "user-2"), act.ID)
	if versori.Classify(err) != versori.ClassUnauthorized {
		t.Errorf("GetActivation as another user: %v", err)
	}
	if err := c.DeleteActivation(versori.WithEndUser(ctx, "user-2"), act.ID); versori.Classify(err) != versori.ClassUnauthorized {
		t.Errorf("DeleteActivation as another user: %v", err)
	}
	if n := s.ActivationCount(req.Pair()); n != 1 {
		t.Fatalf("ActivationCount = %d after a refused delete", n)
	}

	userCtx := versori.WithEndUser(ctx, "user-1")
	got, err := c.GetActivation(userCtx, act.ID)
	if err != nil || got.ID != act.ID {
		t.Fatalf("GetActivation = %+v, %v", got, err)
	}
	if err := c.DeleteActivation(userCtx, act.ID); err != nil {
		t.Fatalf("DeleteActivation: %v", err)
	}
	if n := s.ActivationCount(req.Pair()); n != 0 {
		t.Errorf("ActivationCount after delete = %d", n)
	}
	if _, err := c.GetActivation(userCtx, act.ID); versori.Classify(err) != versori.ClassNotFound {
		t.Errorf("GetActivation after delete: %v", err)
	}

	// A wrong API key is refused as unauthorized.
	bad := newClient(t, versori.Config{BaseURL: s.URL(), HubID: s.HubID(), Auth: versori.APIKey("wrong")})
	if _, err := bad.Activate(ctx, req); versori.Classify(err) != versori.ClassUnauthorized {
		t.Errorf("Activate with a wrong API key: %v", err)
	}
}

func TestErrorDecoding(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		prefix string                                      // base URL path, to reach the capturing server's own answers
		setup  func(s *versoritest.Server, p versori.Pair) // nil: none
		// What the error must be.
		transport     bool // a *TransportError rather than an *Error
		status        int
		code          string
		message       string
		fields        []versori.ErrorField
		retryAfter    time.Duration
		hasRetry      bool
		class         versori.Class
		unknown       bool
		wantCommitted bool
	}{
		{
			name: "scripted 422 with fields and Retry-After",
			setup: func(s *versoritest.Server, p versori.Pair) {
				s.Script(p, versoritest.Fault{Status: 422, RetryAfter: "7", Body: &versori.ErrorBody{
					Code: "422001", Message: "invalid connections", Details: "see docs",
					Fields: []versori.ErrorField{{Field: "connections[0].templateId", Message: "unknown template"}, {Field: "userId", Message: "odd"}}}})
			},
			status: 422, code: "422001", message: "invalid connections",
			fields:     []versori.ErrorField{{Field: "connections[0].templateId", Message: "unknown template"}, {Field: "userId", Message: "odd"}},
			retryAfter: 7 * time.Second, hasRetry: true, class: versori.ClassMissingConnections,
		},
		{
			name: "scripted 422 about userId",
			setup: func(s *versoritest.Server, p versori.Pair) {
				s.Script(p, versoritest.Fault{Status: 422, Body: &versori.ErrorBody{
					Fields: []versori.ErrorField{{Field: "userId", Message: "too long"}}}})
			},
			status: 422, code: "422000", message: "Unprocessable Entity",
			fields: []versori.ErrorField{{Field: "userId", Message: "too long"}}, class: versori.ClassInvalidRequest,
		},
		{
			name: "scripted 429 with an HTTP-date",
			setup: func(s *versoritest.Server, p versori.Pair) {
				s.Script(p, versoritest.Fault{Status: 429, RetryAfter: "Thu, 01 Jan 1970 00:00:00 GMT"})
			},
			status: 429, code: "429000", message: "Too Many Requests", hasRetry: true, class: versori.ClassRateLimited,
		},
		{
			name:   "scripted 503 after commit",
			setup:  func(s *versoritest.Server, p versori.Pair) { s.Script(p, versoritest.Fault{Status: 503, Commit: true}) },
			status: 503, code: "503000", message: "Service Unavailable", class: versori.ClassTransient, unknown: true, wantCommitted: true,
		},
		{
			name:   "missing connection",
			setup:  func(s *versoritest.Server, p versori.Pair) { s.RequireConnection(p.IntegrationID, testutil.TemplateID) },
			status: 400, code: "400000",
			message: "missing connections: integration requires a connection for template " + testutil.TemplateID,
			fields:  []versori.ErrorField{{Field: "connections", Message: "missing connection for template " + testutil.TemplateID}},
			class:   versori.ClassMissingConnections,
		},
		{
			name:   "unknown integration",
			setup:  func(s *versoritest.Server, p versori.Pair) { s.ForgetIntegration(p.IntegrationID) },
			status: 404, code: "404000", message: "integration " + testutil.IntegrationID + " not found", class: versori.ClassNotFound,
		},
		{
			name: "plain-text 502", prefix: "/plain",
			status: 502, message: "upstream connect error", class: versori.ClassTransient, unknown: true,
		},
		{
			name: "empty 503", prefix: "/empty",
			status: 503, message: "Service Unavailable", class: versori.ClassTransient, unknown: true,
		},
		{name: "truncated success", prefix: "/garbled", transport: true, class: versori.ClassTransient, unknown: true},
		{name: "success without id", prefix: "/noid", transport: true, class: versori.ClassTransient, unknown: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newCapturingServer(t, versoritest.Options{})
			req := versori.ActivationRequest{UserID: "user-1", IntegrationID: testutil.IntegrationID}
			if tt.setup != nil {
				tt.setup(s.Server, req.Pair())
			}
			c := apiKeyClient(t, s.URL+tt.prefix, nil)
			act, err := c.Activate(context.Background(), req)
			if err == nil {
				t.Fatalf("Activate = %+v, want an error", act)
			}
			if act != nil {
				t.Errorf("Activate returned %+v with its error", act)
			}
			if cl := versori.Classify(err); cl != tt.class {
				t.Errorf("class = %q, want %q (%v)", cl, tt.class, err)
			}
			if u := versori.IsOutcomeUnknown(err); u != tt.unknown {
				t.Errorf("IsOutcomeUnknown = %v, want %v", u, tt.unknown)
			}
			if tt.transport {
				var te *versori.TransportError
				if !errors.As(err, &te) || te.Op != versori.OpActivate {
					t.Errorf("error %v (%T), want a *TransportError for activate", err, err)
				}
				return
			}
			var ae *versori.Error
			if !errors.As(err, &ae) {
				t.Fatalf("error %v (%T), want a *versori.Error", err, err)
			}
			if ae.Op != versori.OpActivate || ae.StatusCode != tt.status || ae.Code != tt.code || ae.Message != tt.message {
				t.Errorf("error = op %q status %d code %q message %q; want %q %d %q %q",
					ae.Op, ae.StatusCode, ae.Code, ae.Message, versori.OpActivate, tt.status, tt.code, tt.message)
			}
			if !reflect.DeepEqual(ae.Fields, tt.fields) {
				t.Errorf("fields = %+v, want %+v", ae.Fields, tt.fields)
			}
			if ae.RetryAfter != tt.retryAfter || ae.HasRetryAfter != tt.hasRetry {
				t.Errorf("retry after = %s, %v; want %s, %v", ae.RetryAfter, ae.HasRetryAfter, tt.retryAfter, tt.hasRetry)
			}
			if got, ok := versori.RetryAfterOf(err); got != tt.retryAfter || ok != tt.hasRetry {
				t.Errorf("RetryAfterOf = %s, %v", got, ok)
			}
			if n := s.ActivationCount(req.Pair()); (n == 1) != tt.wantCommitted {
				t.Errorf("ActivationCount = %d, want committed %v", n, tt.wantCommitted)
			}
			for _, f := range tt.fields {
				if !strings.Contains(err.Error(), f.Field+": "+f.Message) {
					t.Errorf("Error() %q does not name field %s", err, f.Field)
				}
			}
		})
	}
}

type observed struct {
	op     string
	status int
	took   time.Duration
}

type recorder struct {
	mu  sync.Mutex
	obs []observed
}

func (r *recorder) observe(op string, status int, took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.obs = append(r.obs, observed{op, status, took})
}

func (r *recorder) all() []observed {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]observed(nil), r.obs...)
}

func TestObserver(t *testing.T) {
	t.Parallel()
	s := versoritest.New(t, versoritest.Options{})
	rec := &recorder{}
	c := apiKeyClient(t, s.URL(), func(cfg *versori.Config) { cfg.Observe = rec.observe })
	ctx := context.Background()
	ok := versori.ActivationRequest{UserID: "user-1", IntegrationID: testutil.IntegrationID}
	bad := versori.ActivationRequest{UserID: "user-2", IntegrationID: testutil.IntegrationID}
	dropped := versori.ActivationRequest{UserID: "user-3", IntegrationID: testutil.IntegrationID}
	s.Script(bad.Pair(), versoritest.Fault{Status: 422})
	s.Script(dropped.Pair(), versoritest.Fault{Commit: true, Drop: true})

	act, err := c.Activate(ctx, ok)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Activate(ctx, bad); versori.Classify(err) != versori.ClassInvalidRequest {
		t.Errorf("scripted 422: %v", err)
	}
	if _, err := c.ListUserActivations(ctx, "user-1", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetActivation(ctx, act.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.DeleteActivation(ctx, act.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetActivation(ctx, act.ID); versori.Classify(err) != versori.ClassNotFound {
		t.Errorf("get after delete: %v", err)
	}
	_, err = c.Activate(ctx, dropped)
	var te *versori.TransportError
	if !errors.As(err, &te) || !versori.IsOutcomeUnknown(err) {
		t.Errorf("dropped activate: %v (%T), want a *TransportError", err, err)
	}
	if n := s.ActivationCount(dropped.Pair()); n != 1 {
		t.Errorf("dropped call committed %d activations, want 1", n)
	}

	want := []observed{
		{op: versori.OpActivate, status: 200},
		{op: versori.OpActivate, status: 422},
		{op: versori.OpListActivations, status: 200},
		{op: versori.OpGetActivation, status: 200},
		{op: versori.OpDeleteActivation, status: 204},
		{op: versori.OpGetActivation, status: 404},
		{op: versori.OpActivate, status: 0},
	}
	got := rec.all()
	if len(got) != len(want) {
		t.Fatalf("observed %d calls, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i].op != want[i].op || got[i].status != want[i].status {
			t.Errorf("observation %d = %s %d, want %s %d", i, got[i].op, got[i].status, want[i].op, want[i].status)
		}
		if got[i].took < 0 {
			t.Errorf("observation %d took %s", i, got[i].took)
		}
	}
	if st := s.Stats(); st.Dropped != 1 || st.ByOpStatus["activate 0"] != 1 {
		t.Errorf("stand-in stats = %+v", st)
	}
}

func TestTimeoutAfterCommit(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	s := versoritest.New(t, versoritest.Options{Faults: versoritest.Faults{LatencyAfterCommit: 2 * time.Second}})
	c := apiKeyClient(t, s.URL(), func(cfg *versori.Config) { cfg.Timeout = timeout })
	req := versori.ActivationRequest{UserID: "user-1", IntegrationID: testutil.IntegrationID}

	start := time.Now()
	act, err := c.Activate(context.Background(), req)
	took := time.Since(start)
	if err == nil {
		t.Fatalf("Activate = %+v, want a timeout", act)
	}
	if took < timeout {
		t.Errorf("Activate returned after %s, before its %s timeout", took, timeout)
	}
	var te *versori.TransportError
	if !errors.As(err, &te) || te.Op != versori.OpActivate {
		t.Fatalf("error %v (%T), want a *TransportError", err, err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not wrap context.DeadlineExceeded", err)
	}
	if !versori.IsOutcomeUnknown(err) || versori.Classify(err) != versori.ClassTransient {
		t.Errorf("IsOutcomeUnknown = %v, Classify = %q", versori.IsOutcomeUnknown(err), versori.Classify(err))
	}
	if n := s.ActivationCount(req.Pair()); n != 1 {
		t.Errorf("ActivationCount = %d, want 1: the stand-in committed before the client gave up", n)
	}
	calls := callsOf(s, versori.OpActivate)
	if len(calls) != 1 || !calls[0].Committed {
		t.Errorf("activate calls = %+v, want one committed", calls)
	}
	// Looking before retrying finds it; list calls are not delayed by LatencyAfterCommit.
	found, err := c.FindActivation(context.Background(), req.UserID, req.IntegrationID)
	if err != nil || found == nil {
		t.Errorf("FindActivation = %+v, %v", found, err)
	}
}

func TestCallerContext(t *testing.T) {
	t.Parallel()
	s := versoritest.New(t, versoritest.Options{Faults: versoritest.Faults{Latency: 2 * time.Second}})
	c := apiKeyClient(t, s.URL(), nil)
	tests := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 50*time.Millisecond)
		}, context.DeadlineExceeded},
		{"cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel)
			return ctx, cancel
		}, context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := tt.ctx()
			defer cancel()
			_, err := c.ListUserActivations(ctx, "user-"+tt.name, "")
			var te *versori.TransportError
			if !errors.As(err, &te) || !errors.Is(err, tt.want) {
				t.Errorf("error %v (%T), want a *TransportError wrapping %v", err, err, tt.want)
			}
		})
	}
}

// TestClientBoundsCallsInFlight checks Config.Concurrency: never more calls at the server at once,
// the bound reached, and a call that cannot get a slot before its context ends fails as not sent.
func TestClientBoundsCallsInFlight(t *testing.T) {
	t.Parallel()
	const bound, callers = 3, 12
	var mu sync.Mutex
	inFlight, most := 0, 0
	release := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		mu.Unlock()
		<-release
		mu.Lock()
		inFlight--
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"id":"A1"}`)
	}))
	t.Cleanup(ts.Close)
	c, err := versori.New(versori.Config{BaseURL: ts.URL, Auth: versori.APIKey("k"), Concurrency: bound})
	if err != nil {
		t.Fatal(err)
	}
	body := versori.ActivationRequest{UserID: "u", IntegrationID: testutil.IntegrationID}
	errs := make(chan error, callers)
	for range callers {
		go func() {
			_, err := c.Activate(context.Background(), body)
			errs <- err
		}()
	}
	waitUntil := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := inFlight
		mu.Unlock()
		if n == bound || time.Now().After(waitUntil) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}

	// All slots are taken: one more call gives up when its context ends, without being sent.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	_, err = c.Activate(ctx, body)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) || versori.IsOutcomeUnknown(err) || !versori.IsNotSent(err) {
		t.Errorf("call without a free slot: %v (outcome unknown %v), want a not-sent deadline error", err, versori.IsOutcomeUnknown(err))
	}

	close(release)
	for range callers {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if most != bound {
		t.Fatalf("the server saw at most %d calls at once, want %d", most, bound)
	}
}

// cannedTransport answers every request with status and body without a network, so that a
// benchmark counts the client's own work and allocations only.
type cannedTransport struct {
	status int
	body   string
}

func (ct cannedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		_ = r.Body.Close()
	}
	return &http.Response{
		StatusCode: ct.status, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: http.Header{}, Body: io.NopCloser(strings.NewReader(ct.body)), ContentLength: int64(len(ct.body)), Request: r,
	}, nil
}

// BenchmarkActivate measures Activate's hot path in the client: encoding, building and authorising
// the request, the http.Client's handling of it, and reading the answer's id.
func BenchmarkActivate(b *testing.B) {
	hc := &http.Client{Transport: cannedTransport{status: http.StatusOK, body: `{"id":"01M8F7NXC3DBK7GFTFQXESPAGQ","hubId":"h"}`}}
	c, err := versori.New(versori.Config{BaseURL: "http://versori.invalid/api", Auth: versori.APIKey("k"), HTTPClient: hc, Concurrency: 4})
	if err != nil {
		b.Fatal(err)
	}
	body := versori.ActivationRequest{UserID: "u", IntegrationID: testutil.IntegrationID,
		Connections:      []versori.ActivationConnection{{TemplateID: testutil.IntegrationID, ConnectionID: testutil.IntegrationID}},
		DynamicVariables: json.RawMessage(`{"region":"eu"}`)}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Activate(ctx, body); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRedirectsAreNotFollowed checks that no call follows a 3xx: a POST is neither re-sent (307,
// 308) nor turned into a GET (301, 302, 303), and the answer is a permanent error that says where
// it pointed, without the Location's credentials, query or fragment.
func TestRedirectsAreNotFollowed(t *testing.T) {
	t.Parallel()
	const secretLoc = "https://admin:hunter2@other.example/api/activations?token=s3cret#frag"
	tests := []struct {
		name     string
		status   int
		location string // "" sends none
		call     func(c *versori.Client) error
		wantTo   string // what the message must say it was redirected to; HOST is the server's
	}{
		{"POST 307", http.StatusTemporaryRedirect, "/v2/activations", activateCall, "redirect to http://HOST/v2/activations,"},
		{"POST 308 with credentials", http.StatusPermanentRedirect, secretLoc, activateCall, "redirect to https://other.example/api/activations,"},
		{"POST 301", http.StatusMovedPermanently, "/v2/activations", activateCall, "redirect to http://HOST/v2/activations,"},
		{"POST 302", http.StatusFound, "/login?next=%2Factivations&session=s3cret", activateCall, "redirect to http://HOST/login,"},
		{"POST 303", http.StatusSeeOther, "/v2/activations", activateCall, "redirect to http://HOST/v2/activations,"},
		{"POST 302 without Location", http.StatusFound, "", activateCall, "redirect to no Location,"},
		{"POST 300", http.StatusMultipleChoices, "/v2/activations", activateCall, "redirect to http://HOST/v2/activations,"},
		{"GET list 308", http.StatusPermanentRedirect, secretLoc, func(c *versori.Client) error {
			_, err := c.ListUserActivations(context.Background(), "user-1", testutil.IntegrationID)
			return err
		}, "redirect to https://other.example/api/activations,"},
		{"GET find 301", http.StatusMovedPermanently, "/v2/x", func(c *versori.Client) error {
			_, err := c.FindActivation(context.Background(), "user-1", testutil.IntegrationID)
			return err
		}, "redirect to http://HOST/v2/x,"},
		{"DELETE 307", http.StatusTemporaryRedirect, "/v2/activations/A1", func(c *versori.Client) error {
			return c.DeleteActivation(context.Background(), "A1")
		}, "redirect to http://HOST/v2/activations/A1,"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var seen []string
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				seen = append(seen, r.Method+" "+r.URL.Path)
				mu.Unlock()
				if strings.HasPrefix(r.URL.Path, "/api/") {
					if tt.location != "" {
						w.Header().Set("Location", tt.location)
					}
					w.Header().Set("Content-Type", "text/html")
					w.WriteHeader(tt.status)
					_, _ = io.WriteString(w, "<html>Moved: missing connections</html>")
					return
				}
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, `{"id":"01M8F7NXC3DBK7GFTFQXESPAGQ","activations":[]}`)
			}))
			t.Cleanup(ts.Close)
			rec := &recorder{}
			c := newClient(t, versori.Config{BaseURL: ts.URL + "/api", HubID: testHubID, Auth: versori.APIKey("the-key"), Observe: rec.observe})

			err := tt.call(c)
			var ae *versori.Error
			if !errors.As(err, &ae) || ae.StatusCode != tt.status {
				t.Fatalf("error %v (%T), want a *versori.Error with status %d", err, err, tt.status)
			}
			want := strings.ReplaceAll(tt.wantTo, "HOST", strings.TrimPrefix(ts.URL, "http://"))
			if !strings.Contains(ae.Message, "the API answered with a redirect") || !strings.Contains(ae.Message, want) ||
				!strings.Contains(ae.Message, "VERSORI_BASE_URL is probably wrong") {
				t.Errorf("message %q does not say it was redirected (%q) and that VERSORI_BASE_URL is probably wrong", ae.Message, want)
			}
			for _, secret := range []string{"hunter2", "admin", "s3cret", "token", "frag", "the-key", "missing connections"} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q contains %q", err, secret)
				}
			}
			if cl := versori.Classify(err); cl != versori.ClassPermanent {
				t.Errorf("class = %q, want permanent", cl)
			}
			if versori.IsOutcomeUnknown(err) || versori.IsNotSent(err) {
				t.Errorf("IsOutcomeUnknown = %v, IsNotSent = %v; want false, false", versori.IsOutcomeUnknown(err), versori.IsNotSent(err))
			}
			mu.Lock()
			defer mu.Unlock()
			if len(seen) != 1 {
				t.Errorf("server saw %v, want exactly the one call: the redirect was followed", seen)
			}
			if obs := rec.all(); len(obs) != 1 || obs[0].status != tt.status {
				t.Errorf("observed %+v, want one call with status %d", obs, tt.status)
			}
		})
	}
}

func activateCall(c *versori.Client) error {
	_, err := c.Activate(context.Background(), versori.ActivationRequest{UserID: "user-1", IntegrationID: testutil.IntegrationID})
	return err
}

// countingTransport counts the requests it passes on.
type countingTransport struct {
	mu sync.Mutex
	n  int
	rt http.RoundTripper
}

func (ct *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	ct.mu.Lock()
	ct.n++
	ct.mu.Unlock()
	return ct.rt.RoundTrip(r)
}

// TestCallerHTTPClientKeptAsIs checks that a Config.HTTPClient is used (its transport) but not
// changed, and that its own redirect policy, even one that follows, does not apply to the Client.
func TestCallerHTTPClientKeptAsIs(t *testing.T) {
	t.Parallel()
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/activations" {
			http.Redirect(w, r, "/elsewhere", http.StatusPermanentRedirect)
			return
		}
		_, _ = io.WriteString(w, `{"id":"A1"}`)
	}))
	t.Cleanup(ts.Close)
	followed := 0
	follow := func(*http.Request, []*http.Request) error { followed++; return nil }
	tests := []struct {
		name  string
		check func(*http.Request, []*http.Request) error
	}{
		{"no redirect policy", nil},
		{"a policy that follows", follow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct := &countingTransport{rt: http.DefaultTransport}
			hc := &http.Client{Transport: ct, CheckRedirect: tt.check, Timeout: time.Minute}
			c := newClient(t, versori.Config{BaseURL: ts.URL, Auth: versori.APIKey("k"), HTTPClient: hc})
			_, err := c.Activate(context.Background(), versori.ActivationRequest{UserID: "u", IntegrationID: testutil.IntegrationID})
			var ae *versori.Error
			if !errors.As(err, &ae) || ae.StatusCode != http.StatusPermanentRedirect {
				t.Fatalf("Activate: %v, want the 308", err)
			}
			if ct.n != 1 {
				t.Errorf("the caller's transport carried %d requests, want 1", ct.n)
			}
			if reflect.ValueOf(hc.CheckRedirect).Pointer() != reflect.ValueOf(tt.check).Pointer() || hc.Transport != ct || hc.Timeout != time.Minute {
				t.Errorf("the caller's http.Client was changed: %+v", hc)
			}
			if followed != 0 {
				t.Errorf("the caller's CheckRedirect was consulted %d times", followed)
			}
		})
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

// TestTransportErrorsSentOrNot checks NotSent on real failures: set when the connection could not be
// set up, so that the request provably never left; clear when it may have been written, so that the
// outcome is unknown and the caller looks before calling again.
func TestTransportErrorsSentOrNot(t *testing.T) {
	t.Parallel()
	var handled sync.Map // test name -> true when a handler saw its request
	okServer := func(name string) *httptest.Server {
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			handled.Store(name, true)
			_, _ = io.WriteString(w, `{"id":"A1"}`)
		}))
		t.Cleanup(ts.Close)
		return ts
	}
	// hangUp answers a request, once read whole, by closing the connection; rst makes that a reset.
	hangUp := func(name string, rst bool) *httptest.Server {
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			handled.Store(name, true)
			_, _ = io.ReadAll(r.Body)
			conn, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			if tc, ok := conn.(*net.TCPConn); ok && rst {
				_ = tc.SetLinger(0)
			}
			_ = conn.Close()
		}))
		t.Cleanup(ts.Close)
		return ts
	}
	noDNS := &net.Resolver{PreferGo: true, Dial: func(context.Context, string, string) (net.Conn, error) {
		return nil, errors.New("no DNS server in this test")
	}}
	tests := []struct {
		name        string
		setup       func(name string) (base string, hc *http.Client)
		wantNotSent bool
	}{
		{"connection refused", func(string) (string, *http.Client) { return "http://" + closedAddr(t), nil }, true},
		{"DNS lookup failure", func(string) (string, *http.Client) {
			d := &net.Dialer{Resolver: noDNS}
			return "http://api.versori.invalid", &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
		}, true},
		{"dial timeout", func(name string) (string, *http.Client) {
			d := &net.Dialer{Timeout: time.Nanosecond}
			return okServer(name).URL, &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
		}, true},
		{"proxy refused", func(name string) (string, *http.Client) {
			proxy, _ := url.Parse("http://" + closedAddr(t))
			return okServer(name).URL, &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(proxy)}}
		}, true},
		{"TLS certificate not trusted", func(name string) (string, *http.Client) {
			ts := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handled.Store(name, true) }))
			ts.Config.ErrorLog = log.New(io.Discard, "", 0)
			t.Cleanup(ts.Close)
			return ts.URL, nil
		}, true},
		{"https to a plain HTTP server", func(name string) (string, *http.Client) {
			return "https://" + strings.TrimPrefix(okServer(name).URL, "http://"), nil
		}, true},
		{"https to a server that is not TLS", func(string) (string, *http.Client) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = l.Close() })
			go func() {
				for {
					conn, err := l.Accept()
					if err != nil {
						return
					}
					_, _ = io.WriteString(conn, "SSH-2.0-OpenSSH_9.6\r\n")
					_ = conn.Close()
				}
			}()
			return "https://" + l.Addr().String(), nil
		}, true},
		{"connection closed after the request", func(name string) (string, *http.Client) { return hangUp(name, false).URL, nil }, false},
		{"connection reset after the request", func(name string) (string, *http.Client) { return hangUp(name, true).URL, nil }, false},
		{"timeout after the request", func(name string) (string, *http.Client) {
			stop := make(chan struct{})
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				handled.Store(name, true)
				_, _ = io.ReadAll(r.Body)
				// The server cancels r's context only once it has read the body to its end; bound the
				// wait too, so that a client gone early cannot hold the server's Close.
				select {
				case <-r.Context().Done():
				case <-stop:
				case <-time.After(5 * time.Second):
				}
			}))
			t.Cleanup(ts.Close)
			t.Cleanup(func() { close(stop) }) // runs first
			return ts.URL, &http.Client{Transport: &http.Transport{}, Timeout: 100 * time.Millisecond}
		}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			base, hc := tt.setup(tt.name)
			c := newClient(t, versori.Config{BaseURL: base, Auth: versori.APIKey("k"), HTTPClient: hc, Timeout: 5 * time.Second})
			_, err := c.Activate(context.Background(), versori.ActivationRequest{UserID: "u", IntegrationID: testutil.IntegrationID})
			t.Log(err)
			var te *versori.TransportError
			if !errors.As(err, &te) || te.Op != versori.OpActivate {
				t.Fatalf("error %v (%T), want a *TransportError for activate", err, err)
			}
			if te.NotSent != tt.wantNotSent || versori.IsNotSent(err) != tt.wantNotSent || versori.IsOutcomeUnknown(err) == tt.wantNotSent {
				t.Errorf("%v: NotSent = %v, IsNotSent = %v, IsOutcomeUnknown = %v; want not sent %v",
					err, te.NotSent, versori.IsNotSent(err), versori.IsOutcomeUnknown(err), tt.wantNotSent)
			}
			if cl := versori.Classify(err); cl != versori.ClassTransient {
				t.Errorf("class = %q, want transient", cl)
			}
			if _, seen := handled.Load(tt.name); seen == tt.wantNotSent {
				t.Errorf("a handler saw the request: %v; want %v", seen, !tt.wantNotSent)
			}
		})
	}
}

// listServer answers the activations list of hub "hub" with pages[0], or with pages[i] for the
// cursor "p<i>", as they are: bodies the stand-in never gives.
func listServer(t *testing.T, pages ...string) (base string, calls func() int) {
	t.Helper()
	var mu sync.Mutex
	n := 0
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := 0
		if after := r.URL.Query().Get("after"); after != "" {
			i, _ = strconv.Atoi(strings.TrimPrefix(after, "p"))
		}
		if !strings.HasPrefix(r.URL.Path, "/embed/"+testHubID+"/users/") || r.Method != http.MethodGet || i < 0 || i >= len(pages) {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		body := pages[i]
		n++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, body)
	}))
	t.Cleanup(ts.Close)
	return ts.URL, func() int { mu.Lock(); defer mu.Unlock(); return n }
}

// TestListUserActivationsShape checks that a 200 whose body is not a page of activations is an
// unknown outcome, never an empty list: a caller looking before re-activating would otherwise
// activate the pair again.
func TestListUserActivationsShape(t *testing.T) {
	t.Parallel()
	const act = `{"id":"A1","hubId":"hub","integration":{"id":"` + testutil.IntegrationID + `"}}`
	tests := []struct {
		name      string
		pages     []string
		wantIDs   []string // when the answer is valid
		wantShape bool     // the error must say "documented shape" (else: any undecodable answer)
	}{
		{"empty array", []string{`{"activations":[],"totalCount":0}`}, nil, false},
		{"empty array only", []string{`{"activations":[]}`}, nil, false},
		{"one", []string{`{"activations":[` + act + `],"totalCount":1}`}, []string{"A1"}, false},
		{"empty object", []string{`{}`}, nil, true},
		{"null", []string{`null`}, nil, true},
		{"envelope", []string{`{"data":{"activations":[` + act + `]}}`}, nil, true},
		{"null activations", []string{`{"activations":null,"totalCount":1}`}, nil, true},
		{"activations an object", []string{`{"activations":{}}`}, nil, true},
		{"activations a string", []string{`{"activations":"none"}`}, nil, true},
		{"an array", []string{`[` + act + `]`}, nil, true},
		{"a string", []string{`"ok"`}, nil, true},
		{"a number", []string{`0`}, nil, true},
		{"entry without integration", []string{`{"activations":[{"id":"A1"}]}`}, nil, true},
		{"entry without id", []string{`{"activations":[{"integration":{"id":"` + testutil.IntegrationID + `"}}]}`}, nil, true},
		{"null entry", []string{`{"activations":[null]}`}, nil, true},
		{"totalCount a string", []string{`{"activations":[],"totalCount":"0"}`}, nil, true},
		{"truncated", []string{`{"activations":[` + act}, nil, false},
		{"HTML", []string{`<html>maintenance</html>`}, nil, false},
		{"empty body", []string{``}, nil, false},
		{"second page without the shape", []string{`{"activations":[` + act + `],"next":"p1"}`, `{}`}, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			base, _ := listServer(t, tt.pages...)
			c := newClient(t, versori.Config{BaseURL: base, HubID: testHubID, Auth: versori.APIKey("k")})
			ctx := context.Background()
			got, err := c.ListUserActivations(ctx, "user-1", testutil.IntegrationID)
			found, ferr := c.FindActivations(ctx, "user-1", testutil.IntegrationID)
			one, oerr := c.FindActivation(ctx, "user-1", testutil.IntegrationID)
			valid := tt.wantIDs != nil || (!tt.wantShape && strings.HasPrefix(tt.pages[0], `{"activations":[]`))
			if valid {
				if err != nil || ferr != nil || oerr != nil {
					t.Fatalf("errors %v, %v, %v; want none", err, ferr, oerr)
				}
				var ids []string
				for _, a := range got {
					ids = append(ids, a.ID)
				}
				if !reflect.DeepEqual(ids, tt.wantIDs) || len(found) != len(tt.wantIDs) || (one != nil) != (len(tt.wantIDs) > 0) {
					t.Errorf("listed %v, found %+v, first %+v; want %v", ids, found, one, tt.wantIDs)
				}
				return
			}
			for _, e := range []error{err, ferr, oerr} {
				var te *versori.TransportError
				if !errors.As(e, &te) || te.Op != versori.OpListActivations || te.NotSent {
					t.Fatalf("error %v (%T), want a *TransportError for list_activations that was sent", e, e)
				}
				if !versori.IsOutcomeUnknown(e) || versori.Classify(e) != versori.ClassTransient {
					t.Errorf("%v: IsOutcomeUnknown = %v, class %q; want unknown, transient", e, versori.IsOutcomeUnknown(e), versori.Classify(e))
				}
				if tt.wantShape && !strings.Contains(e.Error(), "documented shape") {
					t.Errorf("error %q does not say the answer did not have the documented shape", e)
				}
			}
			if got != nil || found != nil || one != nil {
				t.Errorf("results %+v, %+v, %+v returned with errors", got, found, one)
			}
		})
	}
}

// TestFindActivationsDuplicates checks that every activation of the pair is returned, across pages,
// with integration ids compared case-insensitively (ULIDs are), and that FindActivation returns
// the first listed.
func TestFindActivationsDuplicates(t *testing.T) {
	t.Parallel()
	lower := strings.ToLower(testutil.IntegrationID)
	entry := func(id, integ string) string {
		return `{"id":"` + id + `","hubId":"hub","integration":{"id":"` + integ + `"}}`
	}
	base, calls := listServer(t,
		`{"activations":[`+entry("A1", testutil.IntegrationID)+`,`+entry("A2", "01HZY8J5Q0OTHER00000000000")+`],"next":"p1","totalCount":4}`,
		`{"activations":[`+entry("A3", lower)+`,`+entry("A4", testutil.IntegrationID)+`],"totalCount":4}`,
	)
	c := newClient(t, versori.Config{BaseURL: base, HubID: testHubID, Auth: versori.APIKey("k")})
	ctx := context.Background()
	tests := []struct {
		name  string
		integ string
		want  []string
	}{
		{"upper case", testutil.IntegrationID, []string{"A1", "A3", "A4"}},
		{"lower case", lower, []string{"A1", "A3", "A4"}},
		{"other", "01HZY8J5Q0OTHER00000000000", []string{"A2"}},
		{"none", "01HZY8J5Q0NONE0000000000000", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := calls()
			acts, err := c.FindActivations(ctx, "user-1", tt.integ)
			if err != nil {
				t.Fatal(err)
			}
			if n := calls() - before; n != 2 {
				t.Errorf("FindActivations made %d list calls, want 2 pages", n)
			}
			var ids []string
			for _, a := range acts {
				ids = append(ids, a.ID)
				if !strings.EqualFold(a.Integration.ID, tt.integ) {
					t.Errorf("activation %+v is not of %s", a, tt.integ)
				}
			}
			if !reflect.DeepEqual(ids, tt.want) {
				t.Errorf("FindActivations = %v, want %v", ids, tt.want)
			}
			one, err := c.FindActivation(ctx, "user-1", tt.integ)
			switch {
			case err != nil:
				t.Fatal(err)
			case tt.want == nil && one != nil:
				t.Errorf("FindActivation = %+v, want nil", one)
			case tt.want != nil && (one == nil || one.ID != tt.want[0]):
				t.Errorf("FindActivation = %+v, want %s", one, tt.want[0])
			}
		})
	}
}

// TestFindActivationsReadsEveryPage checks the ways a listing could wrongly read as "no activation":
// an empty page that still has a cursor (followed), a cursor that does not move (an unknown
// outcome), and a total above what was listed (the unfiltered list is read to settle it).
func TestFindActivationsReadsEveryPage(t *testing.T) {
	t.Parallel()
	act := `{"id":"01J0000000000000000000ACT1","hubId":"hub","integration":{"id":"` + testutil.IntegrationID + `"}}`
	other := `{"id":"01J0000000000000000000ACT2","hubId":"hub","integration":{"id":"01J00000000000000000000THR"}}`
	tests := []struct {
		name       string
		filtered   map[string]string // the filtered list's pages, by cursor ("" first)
		unfiltered map[string]string
		wantFound  int
		wantErr    bool
		wantCalls  int
	}{
		{"empty first page with a cursor", map[string]string{"": `{"activations":[],"next":"c1","totalCount":1}`,
			"c1": `{"activations":[` + act + `],"totalCount":1}`}, nil, 1, false, 2},
		{"a cursor that does not move", map[string]string{"": `{"activations":[],"next":"c1","totalCount":1}`,
			"c1": `{"activations":[],"next":"c1","totalCount":1}`}, nil, 0, true, 2},
		{"a total above the list: the unfiltered list has it", map[string]string{"": `{"activations":[],"totalCount":1}`},
			map[string]string{"": `{"activations":[` + other + `,` + act + `],"totalCount":2}`}, 1, false, 2},
		{"a total of the user's other activations", map[string]string{"": `{"activations":[],"totalCount":1}`},
			map[string]string{"": `{"activations":[` + other + `],"totalCount":1}`}, 0, false, 2},
		{"none", map[string]string{"": `{"activations":[],"totalCount":0}`}, nil, 0, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			calls := 0
			ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				calls++
				mu.Unlock()
				pages := tt.unfiltered
				if r.URL.Query().Get("integration_id") != "" {
					pages = tt.filtered
				}
				body, ok := pages[r.URL.Query().Get("after")]
				if !ok {
					http.NotFound(w, r)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				_, _ = io.WriteString(w, body)
			}))
			t.Cleanup(ts.Close)
			c := newClient(t, versori.Config{BaseURL: ts.URL, HubID: testHubID, Auth: versori.APIKey("k")})
			found, err := c.FindActivations(context.Background(), "u", testutil.IntegrationID)
			if tt.wantErr {
				if !versori.IsOutcomeUnknown(err) {
					t.Fatalf("FindActivations = %v, %v; want an unknown outcome", found, err)
				}
			} else if err != nil || len(found) != tt.wantFound {
				t.Fatalf("FindActivations = %v, %v; want %d found", found, err, tt.wantFound)
			}
			if calls != tt.wantCalls {
				t.Errorf("%d list calls, want %d", calls, tt.wantCalls)
			}
		})
	}
}

// testHubID is the hub of the tests that serve the API themselves; hub ids are ULIDs.
const testHubID = "01J5TESTHVB0000000000000HB"
