package versoritest_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oklog/ulid/v2"

	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
)

const (
	signKeyID = "01J5TESTK00000000000000005"
)

func newClient(t testing.TB, s *versoritest.Server, auth versori.Authenticator) *versori.Client {
	t.Helper()
	if auth == nil {
		auth = versori.APIKey(s.APIKey())
	}
	c, err := versori.New(versori.Config{BaseURL: s.URL(), HubID: s.HubID(), Auth: auth, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func request(user, integration string, conns ...versori.ActivationConnection) versori.ActivationRequest {
	return versori.ActivationRequest{UserID: user, IntegrationID: integration, Connections: conns}
}

// do makes a raw call, for what the client cannot send, and decodes the JSON answer into a map.
func do(t *testing.T, method, url, auth, body string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("%s %s: body %q is not a JSON object: %v", method, url, raw, err)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: Content-Type %q", method, url, ct)
		}
	}
	return resp.StatusCode, resp.Header, m
}

func TestDefaultsAreValidULIDs(t *testing.T) {
	for _, id := range []string{versoritest.DefaultHubID, testutil.IntegrationID, testutil.OtherIntegrationID, testutil.TemplateID, testutil.ConnectionID, signKeyID} {
		if _, err := ulid.ParseStrict(id); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
}

func TestActivate(t *testing.T) {
	tests := []struct {
		name  string
		conn  []versori.ActivationConnection
		creds string // what the call records as received
	}{
		{"existing connection", []versori.ActivationConnection{{TemplateID: testutil.TemplateID, ConnectionID: testutil.ConnectionID}}, ""},
		{"new connection", []versori.ActivationConnection{{
			TemplateID: testutil.TemplateID, Name: "shopify", Credentials: json.RawMessage(`{"action":{"apiKey":"k"}}`),
			Variables: []versori.ConnectionVariable{{Name: "shop", Value: "acme"}},
		}}, `[{"action":{"apiKey":"k"}}]`},
		{"no connections", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := versoritest.New(t, versoritest.Options{})
			s.RequireConnection(testutil.IntegrationID, testutil.TemplateID)
			if tt.conn == nil {
				s.ClearRequirements(testutil.IntegrationID)
			}
			c := newClient(t, s, nil)
			a, err := c.Activate(context.Background(), request("user-1", testutil.IntegrationID, tt.conn...))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ulid.ParseStrict(a.ID); err != nil {
				t.Errorf("activation id %q: %v", a.ID, err)
			}
			full, err := c.GetActivation(context.Background(), a.ID)
			if err != nil {
				t.Fatal(err)
			}
			if full.HubID != s.HubID() || full.User.ExternalID != "user-1" || full.User.HubID != s.HubID() || full.Integration.ID != testutil.IntegrationID {
				t.Errorf("activation = %+v", full)
			}
			if !full.Integration.IsActivated || !full.Integration.IsDeployed || full.Integration.ImageURL == "" {
				t.Errorf("integration summary = %+v", full.Integration)
			}
			p := versori.Pair{UserID: "user-1", IntegrationID: testutil.IntegrationID}
			if n := s.ActivationCount(p); n != 1 {
				t.Errorf("ActivationCount = %d, want 1", n)
			}
			calls := s.Calls()
			if len(calls) != 2 || calls[1].Op != versori.OpGetActivation {
				t.Fatalf("calls = %+v", calls)
			}
			want := versoritest.Call{At: calls[0].At, Op: versori.OpActivate, Method: "POST", Path: "/activations",
				Pair: p, Status: 200, Committed: true, Auth: "bearer", Credentials: tt.creds}
			if calls[0] != want {
				t.Errorf("call = %+v, want %+v", calls[0], want)
			}
			acts := s.Activations()
			if len(acts) != 1 || acts[0].ID != a.ID || acts[0].Pair != p || acts[0].HubID != s.HubID() {
				t.Errorf("Activations() = %+v", acts)
			}
		})
	}
}

// TestResponseShape checks the fields the spec requires, which the client's types would not notice
// missing.
func TestResponseShape(t *testing.T) {
	s := versoritest.New(t, versoritest.Options{})
	status, _, m := do(t, "POST", s.URL()+"/activations", "Bearer "+s.APIKey(),
		`{"userId":"u","integrationId":"`+testutil.IntegrationID+`","connections":[]}`)
	if status != 200 {
		t.Fatalf("status %d: %v", status, m)
	}
	for _, k := range []string{"id", "user", "hubId", "integration"} {
		if _, ok := m[k]; !ok {
			t.Errorf("activation lacks %s", k)
		}
	}
	user := m["user"].(map[string]any)
	for _, k := range []string{"id", "externalId", "displayName", "hubId", "primaryConnection", "createdAt", "updatedAt"} {
		if _, ok := user[k]; !ok {
			t.Errorf("user lacks %s", k)
		}
	}
	pc := user["primaryConnection"].(map[string]any)
	for _, k := range []string{"id", "name", "credentials", "variables", "createdAt", "updatedAt"} {
		if _, ok := pc[k]; !ok {
			t.Errorf("primaryConnection lacks %s", k)
		}
	}
	if creds, _ := pc["credentials"].(map[string]any); len(creds) == 0 {
		t.Errorf("primaryConnection.credentials = %v, want at least one property", pc["credentials"])
	}
	integ := m["integration"].(map[string]any)
	for _, k := range []string{"id", "name", "imageUrl", "description", "isDeployed", "isActivated"} {
		if _, ok := integ[k]; !ok {
			t.Errorf("integration lacks %s", k)
		}
	}

	_, _, page := do(t, "GET", s.URL()+"/embed/"+s.HubID()+"/users/u/activations", "Bearer "+s.APIKey(), "")
	if _, ok := page["totalCount"]; !ok {
		t.Errorf("page lacks totalCount: %v", page)
	}
	if _, ok := page["next"]; ok {
		t.Errorf("last page has next: %v", page)
	}
	_, _, empty := do(t, "GET", s.URL()+"/embed/"+s.HubID()+"/users/nobody/activations", "Bearer "+s.APIKey(), "")
	if acts, ok := empty["activations"].([]any); !ok || len(acts) != 0 {
		t.Errorf("empty page activations = %#v, want []", empty["activations"])
	}
}

func TestDuplicatePOSTCreatesSecondActivation(t *testing.T) {
	s := versoritest.New(t, versoritest.Options{})
	c := newClient(t, s, nil)
	ctx := context.Background()
	p := versori.Pair{UserID: "user-1", IntegrationID: testutil.IntegrationID}
	first, err := c.Activate(ctx, request(p.UserID, p.IntegrationID))
	if err != nil {
		t.Fatal(err)
	}
	second, err := c.Activate(ctx, request(p.UserID, p.IntegrationID))
	if err != nil {
		t.Fatal(err)
	}
	if first.ID == second.ID {
		t.Errorf("second POST returned the same activation %s", first.ID)
	}
	if n := s.ActivationCount(p); n != 2 {
		t.Errorf("ActivationCount = %d, want 2", n)
	}
	if d := s.Duplicates(); !slices.Equal(d, []versori.Pair{p}) {
		t.Errorf("Duplicates = %v", d)
	}
	if st := s.Stats(); st.Duplicates != 1 || st.Activations != 2 || st.ByOpStatus["activate 200"] != 2 {
		t.Errorf("Stats = %+v", st)
	}
	if err := c.DeleteActivation(ctx, second.ID); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Duplicates != 0 || st.Activations != 1 || len(s.Duplicates()) != 0 {
		t.Errorf("after deleting the duplicate: Stats = %+v, Duplicates = %v", st, s.Duplicates())
	}
}

func TestListPagination(t *testing.T) {
	const pageSize = 3
	s := versoritest.New(t, versoritest.Options{PageSize: pageSize})
	c := newClient(t, s, nil)
	ctx := context.Background()
	var wantA []string
	for i := range 8 {
		if i%4 == 3 {
			s.Seed(versori.Pair{UserID: "user-1", IntegrationID: testutil.OtherIntegrationID})
			continue
		}
		wantA = append(wantA, s.Seed(versori.Pair{UserID: "user-1", IntegrationID: testutil.IntegrationID}))
	}
	s.Seed(versori.Pair{UserID: "user-2", IntegrationID: testutil.IntegrationID})
	if len(s.Calls()) != 0 {
		t.Fatalf("Seed recorded calls: %v", s.Calls())
	}

	tests := []struct {
		name        string
		integration string
		want        int
	}{
		{"all integrations", "", 8},
		{"one integration", testutil.IntegrationID, len(wantA)},
		{"other integration", testutil.OtherIntegrationID, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(s.Calls())
			got, err := c.ListUserActivations(ctx, "user-1", tt.integration)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tt.want {
				t.Fatalf("got %d activations, want %d", len(got), tt.want)
			}
			ids := make([]string, len(got))
			for i, a := range got {
				ids[i] = a.ID
				if tt.integration != "" && a.Integration.ID != tt.integration {
					t.Errorf("activation %s is for %s", a.ID, a.Integration.ID)
				}
			}
			if !slices.IsSorted(ids) || len(slices.Compact(slices.Clone(ids))) != len(ids) {
				t.Errorf("ids not sorted and unique: %v", ids)
			}
			if tt.integration == testutil.IntegrationID && !slices.Equal(ids, wantA) {
				t.Errorf("ids = %v, want %v", ids, wantA)
			}
			pages := len(s.Calls()) - before
			if want := (tt.want + pageSize - 1) / pageSize; pages != want {
				t.Errorf("client made %d list calls, want %d", pages, want)
			}
		})
	}

	found, err := c.FindActivation(ctx, "user-1", testutil.OtherIntegrationID)
	if err != nil || found == nil || found.Integration.ID != testutil.OtherIntegrationID {
		t.Fatalf("FindActivation = %+v, %v", found, err)
	}
	none, err := c.FindActivation(ctx, "user-3", testutil.IntegrationID)
	if err != nil || none != nil {
		t.Fatalf("FindActivation for a user without activations = %+v, %v", none, err)
	}
	last := s.Calls()[len(s.Calls())-1]
	if last.Op != versori.OpListActivations || last.Pair != (versori.Pair{UserID: "user-3", IntegrationID: testutil.IntegrationID}) {
		t.Errorf("list call = %+v", last)
	}
}

func TestListCursors(t *testing.T) {
	s := versoritest.New(t, versoritest.Options{PageSize: 2})
	var ids []string
	for range 5 {
		ids = append(ids, s.Seed(versori.Pair{UserID: "u", IntegrationID: testutil.IntegrationID}))
	}
	base := s.URL() + "/embed/" + s.HubID() + "/users/u/activations"
	auth := "Bearer " + s.APIKey()
	tests := []struct {
		query      string
		want       []string
		next, prev string
	}{
		{"", ids[:2], ids[1], ""},
		{"?first=100", ids[:2], ids[1], ""},
		{"?first=1", ids[:1], ids[0], ""},
		{"?after=" + ids[1], ids[2:4], ids[3], ids[2]},
		{"?after=" + ids[3], ids[4:], "", ids[4]},
		{"?after=" + ids[4], nil, "", ""},
		{"?before=" + ids[4], ids[2:4], ids[3], ids[2]},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			status, _, m := do(t, "GET", base+tt.query, auth, "")
			if status != 200 {
				t.Fatalf("status %d: %v", status, m)
			}
			var got []string
			for _, a := range m["activations"].([]any) {
				got = append(got, a.(map[string]any)["id"].(string))
			}
			next, _ := m["next"].(string)
			prev, _ := m["prev"].(string)
			if !slices.Equal(got, tt.want) || next != tt.next || prev != tt.prev || m["totalCount"] != 5.0 {
				t.Errorf("page = %v (next %q prev %q total %v), want %v (next %q prev %q total 5)",
					got, next, prev, m["totalCount"], tt.want, tt.next, tt.prev)
			}
		})
	}
}

func TestGetAndDelete(t *testing.T) {
	s := versoritest.New(t, versoritest.Options{})
	c := newClient(t, s, nil)
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
	if found, err := c.FindActivation(ctx, p.UserID, p.IntegrationID); err != nil || found != nil {
		t.Errorf("FindActivation after delete = %+v, %v", found, err)
	}

	tests := []struct {
		name string
		call func() error
	}{
		{"get deleted", func() error { _, err := c.GetActivation(ctx, id); return err }},
		{"delete deleted", func() error { return c.DeleteActivation(ctx, id) }},
		{"get unknown", func() error { _, err := c.GetActivation(ctx, "01J5NKN0WN0000000000000000"); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if cl := versori.Classify(err); cl != versori.ClassNotFound {
				t.Errorf("Classify(%v) = %s, want not_found", err, cl)
			}
		})
	}
	calls := s.Calls()
	if calls[0].Op != versori.OpGetActivation || calls[0].Pair != p || calls[1].Op != versori.OpDeleteActivation || calls[1].Status != 204 {
		t.Errorf("calls = %+v", calls[:2])
	}
}

// TestErrors checks that each way a POST can fail is classified as the worker must treat it.
func TestErrors(t *testing.T) {
	p := versori.Pair{UserID: "user-1", IntegrationID: testutil.IntegrationID}
	httpDate := time.Now().Add(5 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		name           string
		setup          func(s *versoritest.Server)
		auth           versori.Authenticator
		req            versori.ActivationRequest
		class          versori.Class
		status         int
		retryAfter     [2]time.Duration // bounds of RetryAfterOf, when the server sends one
		wantCommitted  bool
		messageContain string
	}{
		{
			name: "wrong API key", auth: versori.APIKey("nope"),
			class: versori.ClassUnauthorized, status: 401,
		},
		{
			name: "forgotten user", setup: func(s *versoritest.Server) { s.ForgetUser(p.UserID) },
			class: versori.ClassNotFound, status: 404, messageContain: "end user",
		},
		{
			name: "forgotten integration", setup: func(s *versoritest.Server) { s.ForgetIntegration(testutil.IntegrationID) },
			class: versori.ClassNotFound, status: 404, messageContain: "integration",
		},
		{
			name:  "missing connection",
			setup: func(s *versoritest.Server) { s.RequireConnection(testutil.IntegrationID, testutil.TemplateID) },
			req: request(p.UserID, p.IntegrationID,
				versori.ActivationConnection{TemplateID: testutil.ConnectionID, ConnectionID: testutil.ConnectionID}),
			class: versori.ClassMissingConnections, status: 400,
			messageContain: "missing connections: integration requires a connection for template " + testutil.TemplateID,
		},
		{
			name:  "scripted 503",
			setup: func(s *versoritest.Server) { s.Script(p, versoritest.Fault{Status: 503}) },
			class: versori.ClassTransient, status: 503,
		},
		{
			name:  "scripted 429 with seconds",
			setup: func(s *versoritest.Server) { s.Script(p, versoritest.Fault{Status: 429, RetryAfter: "3"}) },
			class: versori.ClassRateLimited, status: 429, retryAfter: [2]time.Duration{3 * time.Second, 3 * time.Second},
		},
		{
			name:  "scripted 429 with HTTP-date",
			setup: func(s *versoritest.Server) { s.Script(p, versoritest.Fault{Status: 429, RetryAfter: httpDate}) },
			class: versori.ClassRateLimited, status: 429, retryAfter: [2]time.Duration{3 * time.Second, 5 * time.Second},
		},
		{
			name: "scripted 500 after commit with body",
			setup: func(s *versoritest.Server) {
				s.Script(p, versoritest.Fault{Status: 500, Commit: true, Body: &versori.ErrorBody{Message: "gateway lost it"}})
			},
			class: versori.ClassTransient, status: 500, wantCommitted: true, messageContain: "gateway lost it",
		},
		{
			name:  "server error rate 1",
			setup: func(s *versoritest.Server) { s.SetFaults(versoritest.Faults{ServerErrorRate: 1}) },
			class: versori.ClassTransient, status: 503,
		},
		{
			name:  "rate limit rate 1",
			setup: func(s *versoritest.Server) { s.SetFaults(versoritest.Faults{RateLimitRate: 1}) },
			class: versori.ClassRateLimited, status: 429, retryAfter: [2]time.Duration{time.Second, time.Second},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := versoritest.New(t, versoritest.Options{})
			if tt.setup != nil {
				tt.setup(s)
			}
			req := tt.req
			if req.UserID == "" {
				req = request(p.UserID, p.IntegrationID)
			}
			_, err := newClient(t, s, tt.auth).Activate(context.Background(), req)
			if cl := versori.Classify(err); cl != tt.class {
				t.Errorf("Classify(%v) = %s, want %s", err, cl, tt.class)
			}
			var ae *versori.Error
			if !errors.As(err, &ae) || ae.StatusCode != tt.status {
				t.Fatalf("err = %v, want HTTP %d", err, tt.status)
			}
			if want := fmt.Sprint(tt.status * 1000); ae.Code != want {
				t.Errorf("code = %q, want %q", ae.Code, want)
			}
			if !strings.Contains(ae.Message, tt.messageContain) {
				t.Errorf("message %q does not contain %q", ae.Message, tt.messageContain)
			}
			wait, ok := versori.RetryAfterOf(err)
			if tt.retryAfter[1] == 0 && ok {
				t.Errorf("unexpected Retry-After %s", wait)
			}
			if tt.retryAfter[1] != 0 && (!ok || wait < tt.retryAfter[0] || wait > tt.retryAfter[1]) {
				t.Errorf("RetryAfterOf = %s, %v; want within %v", wait, ok, tt.retryAfter)
			}
			if n := s.ActivationCount(p); (n == 1) != tt.wantCommitted || n > 1 {
				t.Errorf("ActivationCount = %d, committed want %v", n, tt.wantCommitted)
			}
			calls := s.Calls()
			if len(calls) != 1 || calls[0].Status != tt.status || calls[0].Committed != tt.wantCommitted {
				t.Fatalf("calls = %+v", calls)
			}
			if tt.retryAfter[1] != 0 && calls[0].RetryAfter < tt.retryAfter[0] {
				t.Errorf("recorded RetryAfter = %s", calls[0].RetryAfter)
			}
			if tt.status == 401 && calls[0].Auth != "" || tt.status != 401 && calls[0].Auth != "bearer" {
				t.Errorf("recorded Auth = %q", calls[0].Auth)
			}
		})
	}
}

func TestMissingConnectionsBody(t *testing.T) {
	s := versoritest.New(t, versoritest.Options{})
	s.RequireConnection(testutil.IntegrationID, testutil.TemplateID)
	_, err := newClient(t, s, nil).Activate(context.Background(), request("u", testutil.IntegrationID))
	var ae *versori.Error
	if !errors.As(err, &ae) {
		t.Fatal(err)
	}
	want := []versori.ErrorField{{Field: "connections", Message: "missing connection for template " + testutil.TemplateID}}
	if !slices.Equal(ae.Fields, want) {
		t.Errorf("fields = %+v, want %+v", ae.Fields, want)
	}
	s.ClearRequirements(testutil.IntegrationID)
	if _, err := newClient(t, s, nil).Activate(context.Background(), request("u", testutil.IntegrationID)); err != nil {
		t.Errorf("after ClearRequirements: %v", err)
	}
}

func TestBadRequests(t *testing.T) {
	s := versoritest.New(t, versoritest.Options{})
	auth := "Bearer " + s.APIKey()
	tests := []struct {
		name, method, path, auth, body string
		status                         int
		field                          string
	}{
		{"malformed JSON", "POST", "/activations", auth, `{"userId":`, 400, "body"},
		{"missing userId", "POST", "/activations", auth, `{"integrationId":"` + testutil.IntegrationID + `","connections":[]}`, 400, "userId"},
		{"missing integrationId", "POST", "/activations", auth, `{"userId":"u","connections":[]}`, 400, "integrationId"},
		{"wrong type", "POST", "/activations", auth, `{"userId":5,"integrationId":"` + testutil.IntegrationID + `"}`, 400, "userId"},
		{"auth before body", "POST", "/activations", "", `{`, 401, ""},
		{"unknown scheme", "POST", "/activations", "Basic dTpw", `{}`, 401, ""},
		{"JWT not configured", "POST", "/activations", "JWT abc", `{}`, 401, ""},
		{"bad first", "GET", "/embed/" + s.HubID() + "/users/u/activations?first=0", auth, "", 400, "first"},
		{"wrong hub", "GET", "/embed/01J5WR0NGHVB00000000000000/users/u/activations", auth, "", 404, ""},
		{"unknown route", "GET", "/nope", auth, "", 404, ""},
		{"wrong method", "PUT", "/activations", auth, "", 405, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, m := do(t, tt.method, s.URL()+tt.path, tt.auth, tt.body)
			if status != tt.status {
				t.Fatalf("status %d, want %d: %v", status, tt.status, m)
			}
			if m["code"] != fmt.Sprint(tt.status*1000) || m["message"] == "" {
				t.Errorf("error body = %v", m)
			}
			fields, _ := m["fields"].([]any)
			if tt.field == "" {
				if _, ok := m["fields"]; ok {
					t.Errorf("fields present: %v", m)
				}
				return
			}
			if len(fields) == 0 || fields[0].(map[string]any)["field"] != tt.field {
				t.Errorf("fields = %v, want %s first", fields, tt.field)
			}
		})
	}
	if n := len(s.Activations()); n != 0 {
		t.Errorf("bad requests created %d activations", n)
	}
	if n := len(s.Calls()); n != len(tests) {
		t.Errorf("recorded %d calls, want %d", n, len(tests))
	}
}

func TestHealthAndBasePath(t *testing.T) {
	s := versoritest.New(t, versoritest.Options{})
	status, _, m := do(t, "GET", s.URL()+"/healthz", "", "")
	if status != 200 || m["message"] != "ok" {
		t.Errorf("healthz = %d %v", status, m)
	}
	c, err := versori.New(versori.Config{BaseURL: s.URL() + "/api/embedded/v1", HubID: s.HubID(), Auth: versori.APIKey(s.APIKey())})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Activate(context.Background(), request("u", testutil.IntegrationID)); err != nil {
		t.Errorf("activate under the production base path: %v", err)
	}
}

func TestSetAPIKey(t *testing.T) {
	s := versoritest.New(t, versoritest.Options{APIKey: "old"})
	old := newClient(t, s, nil)
	ctx := context.Background()
	if _, err := old.Activate(ctx, request("u", testutil.IntegrationID)); err != nil {
		t.Fatal(err)
	}
	s.SetAPIKey("new")
	if _, err := old.Activate(ctx, request("u", testutil.OtherIntegrationID)); versori.Classify(err) != versori.ClassUnauthorized {
		t.Errorf("old key after rotation: %v", err)
	}
	if _, err := newClient(t, s, nil).Activate(ctx, request("u", testutil.OtherIntegrationID)); err != nil {
		t.Errorf("new key: %v", err)
	}
}

// asUser signs every call as a fixed end user, whoever the call is for.
type asUser struct {
	auth *versori.JWTAuth
	user string
}

func (a asUser) Authorize(req *http.Request, _ string) error { return a.auth.Authorize(req, a.user) }

func TestJWT(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	s := versoritest.New(t, versoritest.Options{SigningKeyID: signKeyID, PublicKey: &key.PublicKey})
	good, err := versori.NewJWTAuth(signKeyID, key)
	if err != nil {
		t.Fatal(err)
	}
	wrongKey, _ := versori.NewJWTAuth(signKeyID, other)
	wrongKeyID, _ := versori.NewJWTAuth("01J5WR0NGK3Y00000000000000", key)
	expired, _ := versori.NewJWTAuth(signKeyID, key, versori.WithJWTClock(func() time.Time { return time.Now().Add(-time.Hour) }))
	ctx := context.Background()
	p := versori.Pair{UserID: "user-1", IntegrationID: testutil.IntegrationID}

	c := newClient(t, s, good)
	a, err := c.Activate(ctx, request(p.UserID, p.IntegrationID))
	if err != nil {
		t.Fatalf("activate with a valid JWT: %v", err)
	}
	if _, err := c.ListUserActivations(ctx, p.UserID, p.IntegrationID); err != nil {
		t.Errorf("list with a valid JWT: %v", err)
	}
	if _, err := c.GetActivation(versori.WithEndUser(ctx, p.UserID), a.ID); err != nil {
		t.Errorf("get with a valid JWT: %v", err)
	}
	if calls := s.Calls(); calls[0].Auth != "jwt" {
		t.Errorf("recorded Auth = %q", calls[0].Auth)
	}
	if _, err := newClient(t, s, nil).Activate(ctx, request("user-2", testutil.IntegrationID)); err != nil {
		t.Errorf("the API key still works alongside JWTs: %v", err)
	}

	activate := func(c *versori.Client) error {
		_, err := c.Activate(ctx, request(p.UserID, p.IntegrationID))
		return err
	}
	tests := []struct {
		name   string
		auth   versori.Authenticator
		call   func(c *versori.Client) error
		status int
	}{
		{"activate for another user", asUser{good, "user-2"}, activate, 403},
		{"list another user's activations", asUser{good, "user-2"},
			func(c *versori.Client) error { _, err := c.ListUserActivations(ctx, p.UserID, ""); return err }, 403},
		{"get another user's activation", good,
			func(c *versori.Client) error {
				_, err := c.GetActivation(versori.WithEndUser(ctx, "user-2"), a.ID)
				return err
			}, 403},
		{"delete another user's activation", good,
			func(c *versori.Client) error { return c.DeleteActivation(versori.WithEndUser(ctx, "user-2"), a.ID) }, 403},
		{"wrong signing key", wrongKey, activate, 401},
		{"wrong issuer", wrongKeyID, activate, 401},
		{"expired", expired, activate, 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(newClient(t, s, tt.auth))
			var ae *versori.Error
			if !errors.As(err, &ae) || ae.StatusCode != tt.status {
				t.Fatalf("err = %v, want HTTP %d", err, tt.status)
			}
			if versori.Classify(err) != versori.ClassUnauthorized {
				t.Errorf("Classify = %s", versori.Classify(err))
			}
		})
	}
	if n := s.ActivationCount(p); n != 1 {
		t.Errorf("refused calls changed ActivationCount to %d", n)
	}
	if err := c.DeleteActivation(versori.WithEndUser(ctx, p.UserID), a.ID); err != nil {
		t.Errorf("delete own activation: %v", err)
	}
}

func TestJWTRequiresExpiry(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	s := versoritest.New(t, versoritest.Options{SigningKeyID: signKeyID, PublicKey: &key.PublicKey})
	tok, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.RegisteredClaims{
		Issuer: versori.JWTIssuerPrefix + signKeyID, Subject: "u",
	}).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	status, _, m := do(t, "GET", s.URL()+"/embed/"+s.HubID()+"/users/u/activations", "JWT "+tok, "")
	if status != 401 {
		t.Errorf("token without exp: %d %v", status, m)
	}
}

func TestDropAfterCommit(t *testing.T) {
	tests := []struct {
		name  string
		setup func(s *versoritest.Server, p versori.Pair)
	}{
		{"scripted", func(s *versoritest.Server, p versori.Pair) {
			s.Script(p, versoritest.Fault{Commit: true, Drop: true})
		}},
		{"rate", func(s *versoritest.Server, _ versori.Pair) {
			s.SetFaults(versoritest.Faults{DropAfterCommitRate: 1})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := versoritest.New(t, versoritest.Options{})
			p := versori.Pair{UserID: "user-1", IntegrationID: testutil.IntegrationID}
			tt.setup(s, p)
			_, err := newClient(t, s, nil).Activate(context.Background(), request(p.UserID, p.IntegrationID))
			if !versori.IsOutcomeUnknown(err) || versori.Classify(err) != versori.ClassTransient {
				t.Fatalf("err = %v: want an unknown outcome, transient", err)
			}
			if n := s.ActivationCount(p); n != 1 {
				t.Errorf("ActivationCount = %d, want 1", n)
			}
			calls := s.Calls()
			if len(calls) != 1 || !calls[0].Dropped || !calls[0].Committed || calls[0].Status != 0 {
				t.Errorf("calls = %+v", calls)
			}
			if st := s.Stats(); st.Dropped != 1 || st.ByOpStatus["activate 0"] != 1 {
				t.Errorf("Stats = %+v", st)
			}
		})
	}
}

func TestDropWithoutCommit(t *testing.T) {
	s := versoritest.New(t, versoritest.Options{})
	p := versori.Pair{UserID: "user-1", IntegrationID: testutil.IntegrationID}
	s.Script(p, versoritest.Fault{Drop: true})
	_, err := newClient(t, s, nil).Activate(context.Background(), request(p.UserID, p.IntegrationID))
	if !versori.IsOutcomeUnknown(err) {
		t.Fatalf("err = %v", err)
	}
	if n := s.ActivationCount(p); n != 0 {
		t.Errorf("ActivationCount = %d, want 0", n)
	}
}

func TestLatencyAfterCommit(t *testing.T) {
	s := versoritest.New(t, versoritest.Options{Faults: versoritest.Faults{LatencyAfterCommit: 5 * time.Second}})
	const timeout = 100 * time.Millisecond
	c, err := versori.New(versori.Config{BaseURL: s.URL(), HubID: s.HubID(), Auth: versori.APIKey(s.APIKey()), Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	p := versori.Pair{UserID: "user-1", IntegrationID: testutil.IntegrationID}
	start := time.Now()
	_, err = c.Activate(context.Background(), request(p.UserID, p.IntegrationID))
	if took := time.Since(start); took < timeout {
		t.Errorf("call took %s, less than the client timeout", took)
	}
	if versori.Classify(err) != versori.ClassTransient || !versori.IsOutcomeUnknown(err) {
		t.Fatalf("err = %v: want transient with an unknown outcome", err)
	}
	if n := s.ActivationCount(p); n != 1 {
		t.Errorf("ActivationCount = %d, want 1", n)
	}
	if calls := s.Calls(); len(calls) != 1 || !calls[0].Committed {
		t.Errorf("calls = %+v", calls)
	}
}

func TestLatency(t *testing.T) {
	tests := []struct {
		name  string
		setup func(s *versoritest.Server, p versori.Pair)
	}{
		{"every call", func(s *versoritest.Server, _ versori.Pair) {
			s.SetFaults(versoritest.Faults{Latency: 50 * time.Millisecond})
		}},
		{"scripted delay", func(s *versoritest.Server, p versori.Pair) {
			s.Script(p, versoritest.Fault{Delay: 50 * time.Millisecond})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := versoritest.New(t, versoritest.Options{})
			p := versori.Pair{UserID: "u", IntegrationID: testutil.IntegrationID}
			tt.setup(s, p)
			start := time.Now()
			if _, err := newClient(t, s, nil).Activate(context.Background(), request(p.UserID, p.IntegrationID)); err != nil {
				t.Fatal(err)
			}
			if took := time.Since(start); took < 50*time.Millisecond {
				t.Errorf("call took %s, want at least 50ms", took)
			}
		})
	}
}

func TestScriptQueueThenRates(t *testing.T) {
	s := versoritest.New(t, versoritest.Options{})
	p := versori.Pair{UserID: "u", IntegrationID: testutil.IntegrationID}
	s.Script(p, versoritest.Fault{Status: 503}, versoritest.Fault{Status: 429, RetryAfter: "2"})
	c := newClient(t, s, nil)
	ctx := context.Background()
	want := []versori.Class{versori.ClassTransient, versori.ClassRateLimited, versori.ClassOK, versori.ClassOK}
	for i, w := range want {
		_, err := c.Activate(ctx, request(p.UserID, p.IntegrationID))
		if got := versori.Classify(err); got != w {
			t.Errorf("call %d: %s (%v), want %s", i, got, err, w)
		}
	}
	// Another pair's script is not consumed by p's calls.
	q := versori.Pair{UserID: "v", IntegrationID: testutil.IntegrationID}
	s.Script(q, versoritest.Fault{Status: 503})
	if _, err := c.Activate(ctx, request(p.UserID, p.IntegrationID)); err != nil {
		t.Errorf("p consumed q's script: %v", err)
	}
	if n := s.ActivationCount(p); n != 3 {
		t.Errorf("ActivationCount = %d, want 3", n)
	}
}

// TestRatesAreSeeded checks that the same seed and the same calls meet the same faults.
func TestRatesAreSeeded(t *testing.T) {
	run := func(seed int64) []int {
		s := versoritest.New(t, versoritest.Options{Seed: seed, Faults: versoritest.Faults{
			ServerErrorRate: 0.2, RateLimitRate: 0.2, DropAfterCommitRate: 0.2,
		}})
		c := newClient(t, s, nil)
		for i := range 100 {
			_, _ = c.Activate(context.Background(), request(fmt.Sprint("u", i), testutil.IntegrationID))
		}
		var statuses []int
		for _, call := range s.Calls() {
			statuses = append(statuses, call.Status)
		}
		return statuses
	}
	a, b, other := run(42), run(42), run(43)
	if !slices.Equal(a, b) {
		t.Errorf("same seed, different faults:\n%v\n%v", a, b)
	}
	if slices.Equal(a, other) {
		t.Errorf("different seeds met the same faults")
	}
	counts := map[int]int{}
	for _, st := range a {
		counts[st]++
	}
	for _, st := range []int{0, 200, 429, 503} {
		if counts[st] < 5 {
			t.Errorf("status %d met %d times in 100 calls at rate 0.2 or 0.4: %v", st, counts[st], counts)
		}
	}
}

func TestConcurrentActivations(t *testing.T) {
	s := versoritest.New(t, versoritest.Options{})
	c := newClient(t, s, nil)
	const n = 200
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if _, err := c.Activate(context.Background(), request(fmt.Sprint("u", i%20), testutil.IntegrationID)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	acts := s.Activations()
	if len(acts) != n {
		t.Fatalf("%d activations, want %d", len(acts), n)
	}
	ids := make([]string, n)
	for i, a := range acts {
		ids[i] = a.ID
	}
	if len(slices.Compact(ids)) != n {
		t.Errorf("activation ids are not unique")
	}
	if st := s.Stats(); st.Duplicates != 20 || st.Calls != n {
		t.Errorf("Stats = %+v", st)
	}
}

func TestMaxCalls(t *testing.T) {
	s := versoritest.New(t, versoritest.Options{MaxCalls: 5})
	for range 23 {
		do(t, "GET", s.URL()+"/healthz", "", "")
	}
	if calls := s.Calls(); len(calls) != 5 {
		t.Errorf("kept %d calls, want 5", len(calls))
	}
	if st := s.Stats(); st.Calls != 23 || st.ByOpStatus["other 200"] != 23 {
		t.Errorf("Stats = %+v", st)
	}
}

func TestAdmin(t *testing.T) {
	s := versoritest.New(t, versoritest.Options{})
	post := func(path, body string) int {
		t.Helper()
		resp, err := http.Post(s.URL()+path, "application/json", bytes.NewBufferString(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	get := func(path string, v any) {
		t.Helper()
		resp, err := http.Get(s.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatal(err)
		}
	}

	if st := post("/_standin/faults", `{"latency":"1ms","latencyAfterCommit":2000000,"serverErrorRate":0.5,"retryAfter":"7"}`); st != 200 {
		t.Fatalf("POST faults: %d", st)
	}
	want := versoritest.Faults{Latency: time.Millisecond, LatencyAfterCommit: 2 * time.Millisecond, ServerErrorRate: 0.5, RetryAfter: "7"}
	if got := s.CurrentFaults(); got != want {
		t.Errorf("faults = %+v, want %+v", got, want)
	}
	var f versoritest.Faults
	get("/_standin/faults", &f)
	if f != want {
		t.Errorf("GET faults = %+v", f)
	}
	for _, bad := range []string{`{"serverErrorRate":1.5}`, `{"serverErrorRate":0.6,"rateLimitRate":0.6}`, `{"latency":"soon"}`, `{`} {
		if st := post("/_standin/faults", bad); st != 400 {
			t.Errorf("POST faults %s: %d, want 400", bad, st)
		}
	}
	if st := post("/_standin/faults", `{}`); st != 200 {
		t.Fatalf("POST faults {}: %d", st)
	}

	if st := post("/_standin/require?integration="+testutil.IntegrationID+"&template="+testutil.TemplateID, ""); st != 204 {
		t.Fatalf("require: %d", st)
	}
	c := newClient(t, s, nil)
	if _, err := c.Activate(context.Background(), request("u", testutil.IntegrationID)); versori.Classify(err) != versori.ClassMissingConnections {
		t.Errorf("after require: %v", err)
	}
	if st := post("/_standin/clear?integration="+testutil.IntegrationID, ""); st != 204 {
		t.Fatalf("clear: %d", st)
	}
	if _, err := c.Activate(context.Background(), request("u", testutil.IntegrationID)); err != nil {
		t.Errorf("after clear: %v", err)
	}

	var st versoritest.Stats
	get("/_standin/stats", &st)
	if st.Calls != 2 || st.Activations != 1 || st.ByOpStatus["activate 400"] != 1 || st.ByOpStatus["activate 200"] != 1 {
		t.Errorf("stats = %+v", st)
	}
	var calls []versoritest.Call
	get("/_standin/calls", &calls)
	if len(calls) != 2 || calls[1].Pair.UserID != "u" || !calls[1].Committed {
		t.Errorf("calls = %+v", calls)
	}
	var acts []versoritest.Activation
	get("/_standin/activations", &acts)
	if len(acts) != 1 || acts[0].Pair.IntegrationID != testutil.IntegrationID {
		t.Errorf("activations = %+v", acts)
	}
	if st := post("/_standin/nope", ""); st != 404 {
		t.Errorf("unknown admin endpoint: %d", st)
	}
}

func BenchmarkActivate(b *testing.B) {
	s := versoritest.New(b, versoritest.Options{MaxCalls: 10_000})
	c, err := versori.New(versori.Config{BaseURL: s.URL(), HubID: s.HubID(), Auth: versori.APIKey(s.APIKey()), Concurrency: 64})
	if err != nil {
		b.Fatal(err)
	}
	b.SetParallelism(16)
	var mu sync.Mutex
	n := 0
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mu.Lock()
			n++
			user := fmt.Sprint("u", n)
			mu.Unlock()
			if _, err := c.Activate(context.Background(), request(user, testutil.IntegrationID)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestJWTRevocationAndClockSkew checks the stand-in as harsh as a strict API: a revoked signing key
// refuses every token until restored; exp, nbf and iat are checked against its own (skewed) clock
// with no leeway, which its Date header shows. versori.JWTAuth's backdated tokens pass a modest skew.
func TestJWTRevocationAndClockSkew(t *testing.T) {
	ctx := context.Background()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	// raw is a token issued at iat with no nbf, valid 5 minutes.
	raw := func(iat time.Time) string {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.RegisteredClaims{Issuer: versori.JWTIssuerPrefix + signKeyID,
			Subject: "u", IssuedAt: jwt.NewNumericDate(iat), ExpiresAt: jwt.NewNumericDate(iat.Add(5 * time.Minute))}).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tests := []struct {
		name    string
		revoked bool
		skew    time.Duration // the stand-in's clock ahead of ours
		token   string        // "" for versori.JWTAuth's
		status  int
	}{
		{"good", false, 0, "", 200},
		{"revoked", true, 0, "", 401},
		{"clock 10 min ahead: expired", false, 10 * time.Minute, "", 401},
		{"clock 2 min behind: not yet valid", false, -2 * time.Minute, "", 401},
		{"clock 45 s behind: backdated token passes", false, -45 * time.Second, "", 200},
		{"clock 45 s ahead", false, 45 * time.Second, "", 200},
		{"iat 10 s in the stand-in's future", false, 0, raw(time.Now().Add(10 * time.Second)), 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := versoritest.New(t, versoritest.Options{SigningKeyID: signKeyID, PublicKey: &key.PublicKey})
			s.RevokeSigningKey(tt.revoked)
			s.SetClockSkew(tt.skew)
			tok := tt.token
			if tok == "" {
				a, err := versori.NewJWTAuth(signKeyID, key)
				if err != nil {
					t.Fatal(err)
				}
				if tok, err = a.Token("u"); err != nil {
					t.Fatal(err)
				}
			}
			status, hdr, m := doHeader(t, "GET", s.URL()+"/embed/"+s.HubID()+"/users/u/activations", "JWT "+tok)
			if status != tt.status && !(tt.status == 200 && status == 404) {
				t.Fatalf("status %d %v, want %d", status, m, tt.status)
			}
			date, err := http.ParseTime(hdr.Get("Date"))
			if d := date.Sub(time.Now().Add(tt.skew)); err != nil || d < -2*time.Second || d > 2*time.Second {
				t.Errorf("Date %q is %s off the stand-in's clock (%v)", hdr.Get("Date"), d, err)
			}
			if tt.revoked {
				s.RevokeSigningKey(false)
				if status, _, m := doHeader(t, "GET", s.URL()+"/embed/"+s.HubID()+"/users/u/activations", "JWT "+tok); status != 200 && status != 404 {
					t.Errorf("restored key: status %d %v", status, m)
				}
			}
			if tt.skew != 0 && tt.status == 401 {
				// The client reads the skew from the refusal's Date header.
				a, _ := versori.NewJWTAuth(signKeyID, key)
				c := newClient(t, s, a)
				_, err := c.ListUserActivations(ctx, "u", "")
				skew, ok := c.ClockSkew()
				if err == nil || !ok || skew < tt.skew-2*time.Second || skew > tt.skew+2*time.Second {
					t.Errorf("ClockSkew = %s, %v after %v; want about %s", skew, ok, err, tt.skew)
				}
			}
		})
	}
}

// doHeader makes a request without a body and returns the status, the headers and the decoded body.
func doHeader(t *testing.T, method, url, auth string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", auth)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, resp.Header, m
}
