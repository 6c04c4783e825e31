package versoritest_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
)

// createBody is a valid POST /hubs/{hub}/users body for ext, with edit applied to it as a map.
func createBody(t *testing.T, ext string, edit func(m map[string]any)) string {
	t.Helper()
	m := map[string]any{
		"externalId":  ext,
		"displayName": "Display " + ext,
		"primaryConnection": map[string]any{
			"name":        "primary",
			"credentials": map[string]any{"action": []any{}},
			"variables":   []any{map[string]any{"name": "region", "value": "eu"}},
		},
	}
	if edit != nil {
		edit(m)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func usersURL(s *versoritest.Server) string { return s.URL() + "/hubs/" + s.HubID() + "/users" }

func bearer(s *versoritest.Server) string { return "Bearer " + s.APIKey() }

// fieldsOf returns the field names of an error body decoded by do.
func fieldsOf(m map[string]any) []string {
	var out []string
	fs, _ := m["fields"].([]any)
	for _, f := range fs {
		if fm, ok := f.(map[string]any); ok {
			name, _ := fm["field"].(string)
			out = append(out, name)
		}
	}
	return out
}

func TestCreateUser(t *testing.T) {
	t.Parallel()
	s := versoritest.New(t, versoritest.Options{})
	primary := func(m map[string]any) map[string]any { return m["primaryConnection"].(map[string]any) }

	status, _, m := do(t, http.MethodPost, usersURL(s), bearer(s), createBody(t, "user-1", nil))
	if status != http.StatusCreated {
		t.Fatalf("create = %d %v", status, m)
	}
	if m["externalId"] != "user-1" || m["displayName"] != "Display user-1" || m["hubId"] != s.HubID() || m["id"] == "" {
		t.Errorf("created user = %v", m)
	}
	pc, _ := m["primaryConnection"].(map[string]any)
	if pc["name"] != "primary" || pc["credentials"] == nil {
		t.Errorf("primary connection = %v", pc)
	}
	if calls := s.Calls(); len(calls) != 1 || calls[0].Credentials != `[{"action":[]}]` || calls[0].Pair != (versori.Pair{UserID: "user-1"}) {
		t.Errorf("calls = %+v", calls)
	}
	if !s.HasUser("user-1") || s.HasUser("User-1") {
		t.Errorf("HasUser(user-1) = %v, HasUser(User-1) = %v", s.HasUser("user-1"), s.HasUser("User-1"))
	}

	tests := []struct {
		name   string
		url    string
		body   string
		status int
		field  string // the first field error wanted
	}{
		{name: "existing external id", body: createBody(t, "user-1", nil), status: http.StatusConflict},
		{name: "external ids are case-sensitive", body: createBody(t, "User-1", nil), status: http.StatusCreated},
		{name: "no externalId", body: createBody(t, "", nil), status: http.StatusBadRequest, field: "externalId"},
		{name: "no primaryConnection", body: createBody(t, "u2", func(m map[string]any) { delete(m, "primaryConnection") }),
			status: http.StatusBadRequest, field: "primaryConnection"},
		{name: "no name", body: createBody(t, "u2", func(m map[string]any) { delete(primary(m), "name") }),
			status: http.StatusBadRequest, field: "primaryConnection.name"},
		{name: "no credentials", body: createBody(t, "u2", func(m map[string]any) { delete(primary(m), "credentials") }),
			status: http.StatusBadRequest, field: "primaryConnection.credentials"},
		{name: "credentials not an object", body: createBody(t, "u2", func(m map[string]any) { primary(m)["credentials"] = "secret" }),
			status: http.StatusBadRequest, field: "primaryConnection.credentials"},
		{name: "null variables", body: createBody(t, "u2", func(m map[string]any) { primary(m)["variables"] = nil }),
			status: http.StatusBadRequest, field: "primaryConnection.variables"},
		{name: "variables of the wrong type", body: createBody(t, "u2", func(m map[string]any) { primary(m)["variables"] = map[string]any{} }),
			status: http.StatusBadRequest},
		{name: "not JSON", body: `{"externalId":`, status: http.StatusBadRequest, field: "body"},
		{name: "wrong hub", url: s.URL() + "/hubs/" + testutil.IntegrationID + "/users", body: createBody(t, "u2", nil),
			status: http.StatusNotFound},
		{name: "hub id in lower case", url: s.URL() + "/hubs/" + strings.ToLower(s.HubID()) + "/users",
			body: createBody(t, "u3", nil), status: http.StatusCreated},
	}
	for _, tt := range tests {
		url := tt.url
		if url == "" {
			url = usersURL(s)
		}
		status, _, m := do(t, http.MethodPost, url, bearer(s), tt.body)
		if status != tt.status {
			t.Errorf("%s: status %d, want %d (%v)", tt.name, status, tt.status, m)
			continue
		}
		if status >= 400 && (m["code"] == "" || m["message"] == "") {
			t.Errorf("%s: error body %v", tt.name, m)
		}
		if tt.field != "" {
			if f := fieldsOf(m); len(f) == 0 || f[0] != tt.field {
				t.Errorf("%s: fields %v, want %s first", tt.name, f, tt.field)
			}
		}
	}
	if s.HasUser("u2") {
		t.Error("a refused create made u2 known")
	}
	for ext, want := range map[string]int{"user-1": 1, "User-1": 1, "u3": 1, "u2": 0} {
		if n := s.UserCreates(ext); n != want {
			t.Errorf("UserCreates(%s) = %d, want %d", ext, n, want)
		}
	}
	if n := s.UserCreateCalls("user-1"); n != 2 {
		t.Errorf("UserCreateCalls(user-1) = %d, want 2 (one 201, one 409)", n)
	}
	if st := s.Stats(); st.Users != 3 || st.UsersCreated != 3 || st.UsersCreatedTwice != 0 ||
		st.ByOpStatus[versori.OpCreateEndUser+" 409"] != 1 {
		t.Errorf("Stats = %+v", st)
	}

	// Wrong methods and an unknown key.
	if status, hdr, _ := do(t, http.MethodDelete, usersURL(s), bearer(s), ""); status != http.StatusMethodNotAllowed || hdr.Get("Allow") != "GET, POST" {
		t.Errorf("DELETE users = %d, Allow %q", status, hdr.Get("Allow"))
	}
	if status, _, _ := do(t, http.MethodPost, usersURL(s), "Bearer nope", createBody(t, "u4", nil)); status != http.StatusUnauthorized || s.HasUser("u4") {
		t.Errorf("create with a wrong key = %d, HasUser = %v", status, s.HasUser("u4"))
	}
}

func TestGetUser(t *testing.T) {
	t.Parallel()
	s := versoritest.New(t, versoritest.Options{})
	status, _, created := do(t, http.MethodPost, usersURL(s), bearer(s), createBody(t, "user/1", nil))
	if status != http.StatusCreated {
		t.Fatalf("create = %d", status)
	}
	id := created["id"].(string)
	seededID := s.AddUser("seeded")
	s.AddUser("forgotten")
	s.ForgetUser("forgotten")

	tests := []struct {
		name   string
		path   string // after /users/
		status int
		ext    string
	}{
		{"external by default", "user%2F1", http.StatusOK, "user/1"},
		{"external", "user%2F1?identifier_type=external", http.StatusOK, "user/1"},
		{"internal", id + "?identifier_type=internal", http.StatusOK, "user/1"},
		{"internal in lower case", strings.ToLower(id) + "?identifier_type=internal", http.StatusOK, "user/1"},
		{"added", "seeded", http.StatusOK, "seeded"},
		{"added, internal", seededID + "?identifier_type=internal", http.StatusOK, "seeded"},
		{"external ids are case-sensitive", "User%2F1", http.StatusNotFound, ""},
		{"internal id as external", id, http.StatusNotFound, ""},
		{"unknown internal", testutil.IntegrationID + "?identifier_type=internal", http.StatusNotFound, ""},
		{"forgotten", "forgotten", http.StatusNotFound, ""},
		{"bad identifier_type", "seeded?identifier_type=email", http.StatusBadRequest, ""},
	}
	for _, tt := range tests {
		status, _, m := do(t, http.MethodGet, usersURL(s)+"/"+tt.path, bearer(s), "")
		if status != tt.status || (tt.ext != "" && m["externalId"] != tt.ext) {
			t.Errorf("%s: %d %v, want %d for %q", tt.name, status, m, tt.status, tt.ext)
		}
	}
	if status, _, _ := do(t, http.MethodGet, s.URL()+"/hubs/"+testutil.IntegrationID+"/users/seeded", bearer(s), ""); status != http.StatusNotFound {
		t.Errorf("GET user of another hub = %d", status)
	}
	if n := s.UserCreates("seeded"); n != 0 {
		t.Errorf("UserCreates of an added user = %d", n)
	}
	calls := callsOf(s, versori.OpGetEndUser)
	if len(calls) != len(tests)+1 || calls[0].Pair != (versori.Pair{UserID: "user/1"}) {
		t.Errorf("get_end_user calls = %+v", calls)
	}

	// The client reads it, and an unknown user is a 404.
	c := newClient(t, s, nil)
	u, err := c.GetEndUser(context.Background(), "user/1")
	if err != nil || u.ID != id || u.ExternalID != "user/1" || u.HubID != s.HubID() {
		t.Errorf("GetEndUser = %+v, %v", u, err)
	}
	if _, err := c.GetEndUser(context.Background(), "nobody"); versori.Classify(err) != versori.ClassNotFound {
		t.Errorf("GetEndUser(nobody): %v", err)
	}
}

func TestListUsers(t *testing.T) {
	t.Parallel()
	s := versoritest.New(t, versoritest.Options{PageSize: 2})
	var ids []string
	for _, ext := range []string{"alice", "bob", "carol", "dave", "Alina"} {
		ids = append(ids, s.AddUser(ext))
	}
	s.AddUser("gone")
	s.ForgetUser("gone")
	// externals lists a page's external ids, failing on anything off the spec's EndUserPage.
	externals := func(query string) (ext []string, next, prev string, total int) {
		t.Helper()
		status, _, m := do(t, http.MethodGet, usersURL(s)+query, bearer(s), "")
		if status != http.StatusOK {
			t.Fatalf("list%s = %d %v", query, status, m)
		}
		users, ok := m["users"].([]any)
		if !ok {
			t.Fatalf("list%s: no users array: %v", query, m)
		}
		for _, u := range users {
			ext = append(ext, u.(map[string]any)["externalId"].(string))
		}
		next, _ = m["next"].(string)
		prev, _ = m["prev"].(string)
		return ext, next, prev, int(m["totalCount"].(float64))
	}
	got, next, _, total := externals("")
	if !slices.Equal(got, []string{"alice", "bob"}) || next != ids[1] || total != 5 {
		t.Errorf("first page = %v, next %q, total %d", got, next, total)
	}
	got, next, prev, _ := externals("?after=" + strings.ToLower(next))
	if !slices.Equal(got, []string{"carol", "dave"}) || next != ids[3] || prev != ids[2] {
		t.Errorf("second page = %v, next %q, prev %q", got, next, prev)
	}
	got, next, _, _ = externals("?after=" + next)
	if !slices.Equal(got, []string{"Alina"}) || next != "" {
		t.Errorf("last page = %v, next %q", got, next)
	}
	got, _, _, total = externals("?search=ALI")
	if !slices.Equal(got, []string{"alice", "Alina"}) || total != 2 {
		t.Errorf("search ALI = %v (total %d)", got, total)
	}
	if got, _, _, _ = externals("?search=" + strings.ToLower(ids[2])); !slices.Equal(got, []string{"carol"}) {
		t.Errorf("search by id = %v", got)
	}
	if status, _, _ := do(t, http.MethodGet, usersURL(s)+"?first=0", bearer(s), ""); status != http.StatusBadRequest {
		t.Errorf("first=0 = %d", status)
	}
	if calls := s.Calls(); calls[0].Op != "list_end_users" {
		t.Errorf("call op = %q", calls[0].Op)
	}
}

func TestRequireKnownUsers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("on", func(t *testing.T) {
		t.Parallel()
		s := versoritest.New(t, versoritest.Options{RequireKnownUsers: true})
		c := newClient(t, s, nil)
		req := request("stranger", testutil.IntegrationID)
		_, err := c.Activate(ctx, req)
		var ae *versori.Error
		if !errors.As(err, &ae) || ae.StatusCode != http.StatusNotFound || !strings.Contains(ae.Message, "stranger") {
			t.Fatalf("Activate of an unknown user: %v, want 404 naming the user", err)
		}
		if _, err := c.ListUserActivations(ctx, "stranger", testutil.IntegrationID); versori.Classify(err) != versori.ClassNotFound {
			t.Errorf("list of an unknown user: %v, want 404", err)
		}
		if s.HasUser("stranger") || s.ActivationCount(req.Pair()) != 0 {
			t.Error("a refused activation created the user or the activation")
		}

		// Created by the API, the user can activate.
		if _, err := c.CreateEndUser(ctx, versori.EndUserCreate{ExternalID: "stranger",
			PrimaryConnection: &versori.ConnectionCreate{Name: "p"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Activate(ctx, req); err != nil {
			t.Fatalf("Activate after the create: %v", err)
		}
		if acts, err := c.ListUserActivations(ctx, "stranger", ""); err != nil || len(acts) != 1 {
			t.Errorf("list = %+v, %v", acts, err)
		}
		// AddUser and Seed make users known too.
		s.AddUser("added")
		if _, err := c.Activate(ctx, request("added", testutil.IntegrationID)); err != nil {
			t.Errorf("Activate of an added user: %v", err)
		}
		s.Seed(versori.Pair{UserID: "seeded", IntegrationID: testutil.IntegrationID})
		if !s.HasUser("seeded") {
			t.Error("Seed did not make its user known")
		}
		// Turned off, the first activation creates the user.
		s.RequireKnownUsers(false)
		if _, err := c.Activate(ctx, request("late", testutil.IntegrationID)); err != nil || !s.HasUser("late") {
			t.Errorf("Activate with the rule off: %v, HasUser %v", err, s.HasUser("late"))
		}
	})
	t.Run("a create that lands late lets the next activation through", func(t *testing.T) {
		t.Parallel()
		s := versoritest.New(t, versoritest.Options{RequireKnownUsers: true})
		c := newClient(t, s, nil)
		s.ScriptOp(versori.OpCreateEndUser, versori.Pair{UserID: "slow"}, versoritest.Fault{Status: 502, CommitAfter: 50 * time.Millisecond})
		_, err := c.CreateEndUser(ctx, versori.EndUserCreate{ExternalID: "slow", PrimaryConnection: &versori.ConnectionCreate{Name: "p"}})
		if !versori.IsOutcomeUnknown(err) {
			t.Fatalf("create: %v, want a 502", err)
		}
		waitPending(t, s)
		if !s.HasUser("slow") || s.UserCreates("slow") != 1 {
			t.Fatalf("HasUser = %v, UserCreates = %d after the late commit", s.HasUser("slow"), s.UserCreates("slow"))
		}
		if calls := callsOf(s, versori.OpCreateEndUser); len(calls) != 1 || calls[0].Status != 502 || !calls[0].Committed {
			t.Errorf("create calls = %+v", calls)
		}
		if _, err := c.CreateEndUser(ctx, versori.EndUserCreate{ExternalID: "slow", PrimaryConnection: &versori.ConnectionCreate{Name: "p"}}); versori.Classify(err) != versori.ClassConflict {
			t.Errorf("second create: %v, want 409", err)
		}
		if _, err := c.Activate(ctx, request("slow", testutil.IntegrationID)); err != nil {
			t.Errorf("Activate: %v", err)
		}
	})
	t.Run("off", func(t *testing.T) {
		t.Parallel()
		s := versoritest.New(t, versoritest.Options{})
		c := newClient(t, s, nil)
		if _, err := c.Activate(ctx, request("implicit", testutil.IntegrationID)); err != nil {
			t.Fatal(err)
		}
		if !s.HasUser("implicit") {
			t.Error("the first activation did not create the user")
		}
		_, err := c.CreateEndUser(ctx, versori.EndUserCreate{ExternalID: "implicit", PrimaryConnection: &versori.ConnectionCreate{Name: "p"}})
		if versori.Classify(err) != versori.ClassConflict {
			t.Errorf("create of a user an activation created: %v, want 409", err)
		}
		// A forgotten user can be created again, and is known once more.
		s.ForgetUser("implicit")
		if _, err := c.CreateEndUser(ctx, versori.EndUserCreate{ExternalID: "implicit", PrimaryConnection: &versori.ConnectionCreate{Name: "p"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.ListUserActivations(ctx, "implicit", ""); err != nil {
			t.Errorf("list after the user was created again: %v", err)
		}
	})
}

func TestUpdateVariables(t *testing.T) {
	t.Parallel()
	s := versoritest.New(t, versoritest.Options{})
	c := newClient(t, s, nil)
	ctx := context.Background()
	p := versori.Pair{UserID: "user-1", IntegrationID: testutil.IntegrationID}
	req := request(p.UserID, p.IntegrationID)
	req.DynamicVariables = json.RawMessage(`{"region":"eu"}`)
	a, err := c.Activate(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := s.Variables(p); !ok || string(v) != `{"region":"eu"}` {
		t.Errorf("initial Variables = %s, %v", v, ok)
	}
	got, err := c.UpdateDynamicVariables(ctx, p.UserID, strings.ToLower(a.ID), json.RawMessage(`{"region":"us","n":2}`))
	if err != nil || string(got) != `{"region":"us","n":2}` {
		t.Fatalf("UpdateDynamicVariables = %s, %v", got, err)
	}
	if v, ok := s.Variables(p); !ok || string(v) != `{"region":"us","n":2}` || s.VariableUpdates(p) != 1 {
		t.Errorf("Variables = %s, %v; VariableUpdates = %d", v, ok, s.VariableUpdates(p))
	}
	calls := callsOf(s, versori.OpUpdateVariables)
	if len(calls) != 1 || calls[0].Pair != p || calls[0].Status != http.StatusOK || !calls[0].Committed || calls[0].Method != http.MethodPut {
		t.Errorf("update calls = %+v", calls)
	}

	url := s.URL() + "/activations/" + a.ID + "/variables"
	for _, tt := range []struct {
		name, body string
		status     int
		want       string // the variables held after
	}{
		{"not an object", `{"dynamicVariables":[1]}`, http.StatusBadRequest, `{"region":"us","n":2}`},
		{"not JSON", `{`, http.StatusBadRequest, `{"region":"us","n":2}`},
		{"absent clears", `{}`, http.StatusOK, `{}`},
	} {
		status, _, m := do(t, http.MethodPut, url, bearer(s), tt.body)
		v, _ := s.Variables(p)
		if status != tt.status || string(v) != tt.want {
			t.Errorf("%s: %d %v, variables %s; want %d, %s", tt.name, status, m, v, tt.status, tt.want)
		}
	}
	if status, hdr, _ := do(t, http.MethodPost, url, bearer(s), `{}`); status != http.StatusMethodNotAllowed || hdr.Get("Allow") != "PUT" {
		t.Errorf("POST variables = %d, Allow %q", status, hdr.Get("Allow"))
	}
	if _, err := c.UpdateDynamicVariables(ctx, p.UserID, testutil.IntegrationID, json.RawMessage(`{}`)); versori.Classify(err) != versori.ClassNotFound {
		t.Errorf("update of an unknown activation: %v", err)
	}
	if err := c.DeleteActivation(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.UpdateDynamicVariables(ctx, p.UserID, a.ID, json.RawMessage(`{}`)); versori.Classify(err) != versori.ClassNotFound {
		t.Errorf("update of a deleted activation: %v", err)
	}
	if _, ok := s.Variables(p); ok {
		t.Error("Variables of a pair without activation reports ok")
	}
	if n := s.VariableUpdates(p); n != 2 {
		t.Errorf("VariableUpdates = %d, want 2", n)
	}
}

func TestDeleteActivation(t *testing.T) {
	t.Parallel()
	s := versoritest.New(t, versoritest.Options{})
	c := newClient(t, s, nil)
	ctx := context.Background()
	p := versori.Pair{UserID: "user-1", IntegrationID: testutil.IntegrationID}
	id := s.Seed(p)
	other := s.Seed(versori.Pair{UserID: "user-1", IntegrationID: testutil.OtherIntegrationID})

	status, _, m := do(t, http.MethodDelete, s.URL()+"/activations/"+strings.ToLower(id), bearer(s), "")
	if status != http.StatusNoContent || m != nil {
		t.Fatalf("DELETE = %d %v", status, m)
	}
	if acts, err := c.ListUserActivations(ctx, p.UserID, ""); err != nil || len(acts) != 1 || acts[0].ID != other {
		t.Errorf("list after delete = %+v, %v", acts, err)
	}
	if _, err := c.GetActivation(ctx, id); versori.Classify(err) != versori.ClassNotFound {
		t.Errorf("GET after delete: %v", err)
	}
	if err := c.DeleteActivation(ctx, id); versori.Classify(err) != versori.ClassNotFound {
		t.Errorf("second delete: %v", err)
	}
	if n, d := s.ActivationCount(p), s.Deletes(p); n != 0 || d != 1 {
		t.Errorf("ActivationCount = %d, Deletes = %d; want 0, 1", n, d)
	}
	calls := callsOf(s, versori.OpDeleteActivation)
	if len(calls) != 2 || calls[0].Pair != p || !calls[0].Committed || calls[1].Committed || calls[1].Status != http.StatusNotFound {
		t.Errorf("delete calls = %+v", calls)
	}
}

// TestWriteFaults checks that every write operation meets the faults POST /activations meets, scripted
// and drawn, and that those that commit after losing their answer take effect all the same.
func TestWriteFaults(t *testing.T) {
	t.Parallel()
	const (
		user  = "user-1"
		delay = 50 * time.Millisecond
	)
	pair := versori.Pair{UserID: user, IntegrationID: testutil.IntegrationID}
	createReq := versori.EndUserCreate{ExternalID: user, PrimaryConnection: &versori.ConnectionCreate{Name: "p"}}
	ops := []struct {
		op string
		// key is the pair ScriptOp takes; setup prepares the server and returns the activation id.
		key   versori.Pair
		setup func(s *versoritest.Server) string
		call  func(c *versori.Client, id string) error
		took  func(s *versoritest.Server) bool // whether the write took effect
	}{
		{
			op: versori.OpCreateEndUser, key: versori.Pair{UserID: user},
			setup: func(*versoritest.Server) string { return "" },
			call: func(c *versori.Client, _ string) error {
				_, err := c.CreateEndUser(context.Background(), createReq)
				return err
			},
			took: func(s *versoritest.Server) bool { return s.HasUser(user) && s.UserCreates(user) == 1 },
		},
		{
			op: versori.OpUpdateVariables, key: pair,
			setup: func(s *versoritest.Server) string { return s.Seed(pair) },
			call: func(c *versori.Client, id string) error {
				_, err := c.UpdateDynamicVariables(context.Background(), user, id, json.RawMessage(`{"v":1}`))
				return err
			},
			took: func(s *versoritest.Server) bool { v, _ := s.Variables(pair); return string(v) == `{"v":1}` },
		},
		{
			op: versori.OpDeleteActivation, key: pair,
			setup: func(s *versoritest.Server) string { return s.Seed(pair) },
			call:  func(c *versori.Client, id string) error { return c.DeleteActivation(context.Background(), id) },
			took:  func(s *versoritest.Server) bool { return s.ActivationCount(pair) == 0 && s.Deletes(pair) == 1 },
		},
	}
	faults := []struct {
		name    string
		rates   versoritest.Faults // with WriteOps set to the op
		script  *versoritest.Fault
		status  int  // 0: no answer
		timeout bool // the client's timeout ends the call
		took    bool
	}{
		{name: "503 before commit", rates: versoritest.Faults{ServerErrorRate: 1}, status: 503},
		{name: "429 with Retry-After", rates: versoritest.Faults{RateLimitRate: 1, RetryAfter: "7"}, status: 429},
		{name: "dropped after commit", rates: versoritest.Faults{DropAfterCommitRate: 1}, took: true},
		{name: "late commit", rates: versoritest.Faults{LateCommitRate: 1, LateCommitStatus: 502, LateCommitDelay: delay}, status: 502, took: true},
		{name: "hung, committed meanwhile", rates: versoritest.Faults{HangCommitRate: 1, LateCommitDelay: delay, HangFor: time.Minute},
			timeout: true, took: true},
		{name: "timeout after commit", rates: versoritest.Faults{LatencyAfterCommit: time.Minute}, timeout: true, took: true},
		{name: "conflict rate does not apply", rates: versoritest.Faults{ConflictRate: 1}, status: -1, took: true},
		{name: "scripted 500 after commit", script: &versoritest.Fault{Status: 500, Commit: true}, status: 500, took: true},
		{name: "scripted 504, committed later", script: &versoritest.Fault{CommitAfter: delay}, status: 504, took: true},
		{name: "scripted 503", script: &versoritest.Fault{Status: 503}, status: 503},
	}
	for _, o := range ops {
		for _, f := range faults {
			t.Run(o.op+"/"+f.name, func(t *testing.T) {
				t.Parallel()
				opts := versoritest.Options{}
				if f.script == nil {
					opts.Faults = f.rates
					ops, err := versoritest.ParseWriteOps(o.op)
					if err != nil {
						t.Fatal(err)
					}
					opts.Faults.WriteOps = ops
				}
				s := versoritest.New(t, opts)
				id := o.setup(s)
				if f.script != nil {
					s.ScriptOp(o.op, o.key, *f.script)
				}
				c, err := versori.New(versori.Config{BaseURL: s.URL(), HubID: s.HubID(), Auth: versori.APIKey(s.APIKey()),
					Timeout: 300 * time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				err = o.call(c, id)
				var ae *versori.Error
				switch {
				case f.status == -1:
					if err != nil {
						t.Fatalf("err = %v, want success", err)
					}
				case f.status == 0:
					var te *versori.TransportError
					if !errors.As(err, &te) || !versori.IsOutcomeUnknown(err) || f.timeout != errors.Is(err, context.DeadlineExceeded) {
						t.Fatalf("err = %v, want a call without answer (timeout %v)", err, f.timeout)
					}
				case !errors.As(err, &ae) || ae.StatusCode != f.status:
					t.Fatalf("err = %v, want HTTP %d", err, f.status)
				case f.status == 429 && (!ae.HasRetryAfter || ae.RetryAfter != 7*time.Second):
					t.Errorf("Retry-After = %s (%v), want 7s", ae.RetryAfter, ae.HasRetryAfter)
				}
				waitPending(t, s)
				if got := o.took(s); got != f.took {
					t.Errorf("took effect = %v, want %v", got, f.took)
				}
				calls := callsOf(s, o.op)
				if len(calls) != 1 || calls[0].Committed != f.took || calls[0].Pair != o.key {
					t.Errorf("calls = %+v", calls)
				}
			})
		}
	}
}

// TestWriteFaultsOffByDefault checks that the rates reach the other write routes only when WriteOps
// selects them, and that drawing for them leaves the POSTs' faults where they were.
func TestWriteFaultsOffByDefault(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	outcomes := func(writeOps versoritest.WriteOps) (posts []int, deletes int) {
		s := versoritest.New(t, versoritest.Options{Seed: 7, Faults: versoritest.Faults{ServerErrorRate: 0.5, WriteOps: writeOps}})
		c := newClient(t, s, nil)
		for i := range 20 {
			p := versori.Pair{UserID: "u" + string(rune('a'+i)), IntegrationID: testutil.IntegrationID}
			_, err := c.Activate(ctx, request(p.UserID, p.IntegrationID))
			var ae *versori.Error
			status := http.StatusOK
			if errors.As(err, &ae) {
				status = ae.StatusCode
			}
			posts = append(posts, status)
			if err := c.DeleteActivation(ctx, s.Seed(versori.Pair{UserID: p.UserID, IntegrationID: testutil.OtherIntegrationID})); err != nil {
				deletes++
			}
		}
		return posts, deletes
	}
	offPosts, offFailed := outcomes(versoritest.WriteOps{})
	onPosts, onFailed := outcomes(versoritest.AllWriteOps)
	if offFailed != 0 {
		t.Errorf("%d deletes failed with WriteOps off", offFailed)
	}
	if onFailed == 0 || onFailed == 20 {
		t.Errorf("%d of 20 deletes failed at rate 0.5 with WriteOps on", onFailed)
	}
	if !slices.Equal(offPosts, onPosts) {
		t.Errorf("POST outcomes changed with WriteOps: %v, then %v", offPosts, onPosts)
	}
}

// callsOf returns the calls of op that s recorded.
func callsOf(s *versoritest.Server, op string) []versoritest.Call {
	var out []versoritest.Call
	for _, c := range s.Calls() {
		if c.Op == op {
			out = append(out, c)
		}
	}
	return out
}

func TestWriteOpsParseAndJSON(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in   string
		want versoritest.WriteOps
		err  bool
	}{
		{"", versoritest.WriteOps{}, false},
		{"all", versoritest.AllWriteOps, false},
		{"create_end_user, delete_activation", versoritest.WriteOps{CreateEndUser: true, DeleteActivation: true}, false},
		{"update_variables", versoritest.WriteOps{UpdateVariables: true}, false},
		{"activate", versoritest.WriteOps{}, true},
		{"create_end_user,nope", versoritest.WriteOps{}, true},
	} {
		got, err := versoritest.ParseWriteOps(tt.in)
		if got != tt.want || (err != nil) != tt.err {
			t.Errorf("ParseWriteOps(%q) = %+v, %v", tt.in, got, err)
		}
		if err == nil {
			if back, _ := versoritest.ParseWriteOps(got.String()); back != got {
				t.Errorf("%q: String %q reads back as %+v", tt.in, got.String(), back)
			}
		}
	}
	f := versoritest.Faults{ServerErrorRate: 0.1, WriteOps: versoritest.WriteOps{UpdateVariables: true}}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"writeOps":{"updateVariables":true}`) {
		t.Errorf("JSON %s", b)
	}
	var back versoritest.Faults
	if err := json.Unmarshal(b, &back); err != nil || back != f {
		t.Errorf("round trip = %+v, %v", back, err)
	}
	defer func() {
		if recover() == nil {
			t.Error("ScriptOp of a read operation did not panic")
		}
	}()
	versoritest.NewServer(versoritest.Options{}).ScriptOp(versori.OpGetEndUser, versori.Pair{UserID: "u"}, versoritest.Fault{Status: 503})
}

func TestLifecycleJWT(t *testing.T) {
	t.Parallel()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	s := versoritest.New(t, versoritest.Options{SigningKeyID: signKeyID, PublicKey: &key.PublicKey})
	auth, err := versori.NewJWTAuth(signKeyID, key)
	if err != nil {
		t.Fatal(err)
	}
	token := func(sub string) string {
		req, _ := http.NewRequest(http.MethodGet, s.URL(), nil)
		if err := auth.Authorize(req, sub); err != nil {
			t.Fatal(err)
		}
		return req.Header.Get("Authorization")
	}
	if status, _, _ := do(t, http.MethodPost, usersURL(s), token("someone-else"), createBody(t, "u1", nil)); status != http.StatusForbidden || s.HasUser("u1") {
		t.Errorf("create with another user's token = %d", status)
	}
	if status, _, _ := do(t, http.MethodPost, usersURL(s), token("u1"), createBody(t, "u1", nil)); status != http.StatusCreated {
		t.Errorf("create with the user's token = %d", status)
	}
	if status, _, _ := do(t, http.MethodGet, usersURL(s)+"/u1", token("someone-else"), ""); status != http.StatusForbidden {
		t.Errorf("get with another user's token = %d", status)
	}
	if status, _, _ := do(t, http.MethodGet, usersURL(s)+"/u1", token("u1"), ""); status != http.StatusOK {
		t.Errorf("get with the user's token = %d", status)
	}
	if status, _, _ := do(t, http.MethodGet, usersURL(s), token("u1"), ""); status != http.StatusForbidden {
		t.Errorf("list users with a user's token = %d", status)
	}
	p := versori.Pair{UserID: "u1", IntegrationID: testutil.IntegrationID}
	id := s.Seed(p)
	url := s.URL() + "/activations/" + id + "/variables"
	if status, _, _ := do(t, http.MethodPut, url, token("someone-else"), `{"dynamicVariables":{"a":1}}`); status != http.StatusForbidden {
		t.Errorf("PUT with another user's token = %d", status)
	}
	if status, _, _ := do(t, http.MethodPut, url, token("u1"), `{"dynamicVariables":{"a":1}}`); status != http.StatusOK {
		t.Errorf("PUT with the user's token = %d", status)
	}
	if n := s.VariableUpdates(p); n != 1 {
		t.Errorf("VariableUpdates = %d, want 1", n)
	}
	for _, c := range s.Calls() {
		if c.Status/100 == 2 && c.Auth != "jwt" {
			t.Errorf("call %+v not recorded as jwt", c)
		}
	}
}

func TestAdminUsers(t *testing.T) {
	t.Parallel()
	s := versoritest.New(t, versoritest.Options{})
	if status, _, _ := rawDo(t, http.MethodPost, s.URL()+"/_standin/users?externalId=added", "", ""); status != http.StatusNoContent {
		t.Fatalf("POST /_standin/users = %d", status)
	}
	if status, _, _ := do(t, http.MethodPost, usersURL(s), bearer(s), createBody(t, "created", nil)); status != http.StatusCreated {
		t.Fatalf("create = %d", status)
	}
	status, _, body := rawDo(t, http.MethodGet, s.URL()+"/_standin/users", "", "")
	var users []versoritest.User
	if err := json.Unmarshal(body, &users); status != http.StatusOK || err != nil {
		t.Fatalf("GET /_standin/users = %d %s: %v", status, body, err)
	}
	if len(users) != 2 || users[0].ExternalID != "added" || users[0].Creates != 0 ||
		users[1].ExternalID != "created" || users[1].Creates != 1 || users[1].CreateCalls != 1 || users[1].ID == "" {
		t.Errorf("users = %+v", users)
	}
	if status, _, _ := rawDo(t, http.MethodPost, s.URL()+"/_standin/users", "", ""); status != http.StatusBadRequest {
		t.Errorf("POST /_standin/users without externalId = %d", status)
	}
}
