package versoritest_test

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
)

// The ids of server_test.go, spelt in lower case as a client might send them.
var (
	intALower      = strings.ToLower(testutil.IntegrationID)
	templateXLower = strings.ToLower(testutil.TemplateID)
)

// noRedirects is a client that shows redirects instead of following them to a host that never resolves.
var noRedirects = &http.Client{
	Timeout:       10 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// rawDo makes a raw call, without following redirects, and returns the answer as it came. The versori
// client is not used, so that ids reach the stand-in in the case the test spelt them.
func rawDo(t *testing.T, method, url, auth, body string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, raw
}

// activateBody is a POST /activations body binding an existing connection for each template.
func activateBody(t *testing.T, user, integration string, templates ...string) string {
	t.Helper()
	conns := []map[string]string{}
	for _, tm := range templates {
		conns = append(conns, map[string]string{"templateId": tm, "connectionId": strings.ToLower(testutil.ConnectionID)})
	}
	b, err := json.Marshal(map[string]any{"userId": user, "integrationId": integration, "connections": conns})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// post activates over raw HTTP and returns the status, headers and body.
func post(t *testing.T, s *versoritest.Server, user, integration string, templates ...string) (int, http.Header, []byte) {
	t.Helper()
	return rawDo(t, "POST", s.URL()+"/activations", "Bearer "+s.APIKey(), activateBody(t, user, integration, templates...))
}

// listIDs lists user's activations over raw HTTP, filtered by integration when it is not empty, and
// returns their ids and integration ids.
func listIDs(t *testing.T, s *versoritest.Server, user, integration string) (ids, integrations []string) {
	t.Helper()
	url := s.URL() + "/embed/" + s.HubID() + "/users/" + user + "/activations"
	if integration != "" {
		url += "?integration_id=" + integration
	}
	status, _, raw := rawDo(t, "GET", url, "Bearer "+s.APIKey(), "")
	if status != 200 {
		t.Fatalf("list: %d %s", status, raw)
	}
	var page versori.EndUserActivationPage
	if err := json.Unmarshal(raw, &page); err != nil {
		t.Fatalf("list body %s: %v", raw, err)
	}
	for _, a := range page.Activations {
		ids = append(ids, a.ID)
		integrations = append(integrations, a.Integration.ID)
	}
	return ids, integrations
}

// waitPending waits until no background commit is still to come, as a test must before it counts.
func waitPending(t *testing.T, s *versoritest.Server) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for s.PendingCommits() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d commits still pending after 10s", s.PendingCommits())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestULIDCase(t *testing.T) {
	const user = "user-1"
	lower := versori.Pair{UserID: user, IntegrationID: intALower}
	canonical := versori.Pair{UserID: user, IntegrationID: testutil.IntegrationID}
	tests := []struct {
		name            string
		setup           func(s *versoritest.Server)
		postIntegration string   // "" makes no POST
		templates       []string // bound by the POST
		status          int
		listIntegration string
		wantCount       int
	}{
		{name: "POST lower, list upper", postIntegration: intALower, status: 200, listIntegration: testutil.IntegrationID, wantCount: 1},
		{name: "POST upper, list lower", postIntegration: testutil.IntegrationID, status: 200, listIntegration: intALower, wantCount: 1},
		{name: "POST lower, list unfiltered", postIntegration: intALower, status: 200, wantCount: 1},
		{
			name:            "requirement given in lower case, met in upper case",
			setup:           func(s *versoritest.Server) { s.RequireConnection(intALower, templateXLower) },
			postIntegration: testutil.IntegrationID, templates: []string{testutil.TemplateID}, status: 200, listIntegration: testutil.IntegrationID, wantCount: 1,
		},
		{
			name:            "requirement given in upper case, met in lower case",
			setup:           func(s *versoritest.Server) { s.RequireConnection(testutil.IntegrationID, testutil.TemplateID) },
			postIntegration: intALower, templates: []string{templateXLower}, status: 200, listIntegration: testutil.IntegrationID, wantCount: 1,
		},
		{
			name:            "requirement unmet in either case",
			setup:           func(s *versoritest.Server) { s.RequireConnection(intALower, testutil.TemplateID) },
			postIntegration: testutil.IntegrationID, status: 400, listIntegration: testutil.IntegrationID,
		},
		{
			name: "requirement cleared in lower case",
			setup: func(s *versoritest.Server) {
				s.RequireConnection(testutil.IntegrationID, testutil.TemplateID)
				s.ClearRequirements(intALower)
			},
			postIntegration: testutil.IntegrationID, status: 200, listIntegration: testutil.IntegrationID, wantCount: 1,
		},
		{
			name:            "integration forgotten in lower case",
			setup:           func(s *versoritest.Server) { s.ForgetIntegration(intALower) },
			postIntegration: testutil.IntegrationID, status: 404, listIntegration: testutil.IntegrationID,
		},
		{
			name:            "script for the lower-case pair",
			setup:           func(s *versoritest.Server) { s.Script(lower, versoritest.Fault{Status: 503}) },
			postIntegration: testutil.IntegrationID, status: 503, listIntegration: testutil.IntegrationID,
		},
		{
			name:            "forbidden for the lower-case pair",
			setup:           func(s *versoritest.Server) { s.Forbid(lower) },
			postIntegration: testutil.IntegrationID, status: 403, listIntegration: intALower,
		},
		{
			name:      "seeded for the lower-case pair",
			setup:     func(s *versoritest.Server) { s.Seed(lower) },
			status:    200,
			wantCount: 1, listIntegration: testutil.IntegrationID,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := versoritest.New(t, versoritest.Options{})
			if tt.setup != nil {
				tt.setup(s)
			}
			if tt.postIntegration != "" {
				status, _, raw := post(t, s, user, tt.postIntegration, tt.templates...)
				if status != tt.status {
					t.Fatalf("POST: %d %s, want %d", status, raw, tt.status)
				}
				if status == 200 {
					var a versori.Activation
					if err := json.Unmarshal(raw, &a); err != nil {
						t.Fatal(err)
					}
					if a.Integration.ID != testutil.IntegrationID || a.User.ExternalID != user {
						t.Errorf("answer holds integration %q, user %q; want %q, %q", a.Integration.ID, a.User.ExternalID, testutil.IntegrationID, user)
					}
				}
				if calls := s.Calls(); len(calls) != 1 || calls[0].Pair != canonical {
					t.Errorf("recorded calls = %+v, want pair %v", calls, canonical)
				}
			}
			ids, integrations := listIDs(t, s, user, tt.listIntegration)
			if len(ids) != tt.wantCount {
				t.Errorf("list with integration_id %q: %v, want %d activations", tt.listIntegration, ids, tt.wantCount)
			}
			for _, id := range integrations {
				if id != testutil.IntegrationID {
					t.Errorf("listed integration %q, want %q", id, testutil.IntegrationID)
				}
			}
			if last := s.Calls()[len(s.Calls())-1]; last.Pair.IntegrationID != strings.ToUpper(tt.listIntegration) {
				t.Errorf("list recorded pair %v", last.Pair)
			}
			for _, p := range []versori.Pair{lower, canonical} {
				if n := s.ActivationCount(p); n != tt.wantCount {
					t.Errorf("ActivationCount(%v) = %d, want %d", p, n, tt.wantCount)
				}
			}
			for _, a := range s.Activations() {
				if a.Pair != canonical {
					t.Errorf("activation held for %v, want %v", a.Pair, canonical)
				}
			}
		})
	}
}

func TestULIDCaseDuplicates(t *testing.T) {
	tests := []struct {
		name       string
		posts      []versori.Pair
		wantDups   []versori.Pair
		wantCounts map[versori.Pair]int
	}{
		{
			name:       "one integration in two cases is one pair",
			posts:      []versori.Pair{{UserID: "u", IntegrationID: intALower}, {UserID: "u", IntegrationID: testutil.IntegrationID}},
			wantDups:   []versori.Pair{{UserID: "u", IntegrationID: testutil.IntegrationID}},
			wantCounts: map[versori.Pair]int{{UserID: "u", IntegrationID: testutil.IntegrationID}: 2, {UserID: "u", IntegrationID: intALower}: 2},
		},
		{
			name:       "user ids in two cases are two pairs",
			posts:      []versori.Pair{{UserID: "User-1", IntegrationID: testutil.IntegrationID}, {UserID: "user-1", IntegrationID: intALower}},
			wantCounts: map[versori.Pair]int{{UserID: "User-1", IntegrationID: testutil.IntegrationID}: 1, {UserID: "user-1", IntegrationID: testutil.IntegrationID}: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := versoritest.New(t, versoritest.Options{})
			for _, p := range tt.posts {
				if status, _, raw := post(t, s, p.UserID, p.IntegrationID); status != 200 {
					t.Fatalf("POST %v: %d %s", p, status, raw)
				}
			}
			if d := s.Duplicates(); !slices.Equal(d, tt.wantDups) {
				t.Errorf("Duplicates = %v, want %v", d, tt.wantDups)
			}
			if st := s.Stats(); st.Duplicates != len(tt.wantDups) {
				t.Errorf("Stats.Duplicates = %d", st.Duplicates)
			}
			for p, n := range tt.wantCounts {
				if got := s.ActivationCount(p); got != n {
					t.Errorf("ActivationCount(%v) = %d, want %d", p, got, n)
				}
			}
		})
	}
}

// TestULIDCaseInPathAndCursors checks the other ULIDs a call can carry: the activation id of get and
// delete, the hub id of the list route and its cursors.
func TestULIDCaseInPathAndCursors(t *testing.T) {
	s := versoritest.New(t, versoritest.Options{PageSize: 1})
	p := versori.Pair{UserID: "u", IntegrationID: testutil.IntegrationID}
	first, second := s.Seed(p), s.Seed(p)
	auth := "Bearer " + s.APIKey()
	tests := []struct {
		name, method, path string
		status             int
		wantID             string // the id the answer's first activation holds
	}{
		{"get in lower case", "GET", "/activations/" + strings.ToLower(first), 200, first},
		{"hub in lower case", "GET", "/embed/" + strings.ToLower(s.HubID()) + "/users/u/activations", 200, first},
		{"after cursor in lower case", "GET", "/embed/" + s.HubID() + "/users/u/activations?after=" + strings.ToLower(first), 200, second},
		{"delete in lower case", "DELETE", "/activations/" + strings.ToLower(second), 204, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, raw := rawDo(t, tt.method, s.URL()+tt.path, auth, "")
			if status != tt.status {
				t.Fatalf("%d %s, want %d", status, raw, tt.status)
			}
			if tt.wantID == "" {
				return
			}
			var m struct {
				ID          string `json:"id"`
				Activations []struct {
					ID string `json:"id"`
				} `json:"activations"`
			}
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			got := m.ID
			if len(m.Activations) > 0 {
				got = m.Activations[0].ID
			}
			if got != tt.wantID {
				t.Errorf("answer holds %q, want %q: %s", got, tt.wantID, raw)
			}
		})
	}
	if n := s.ActivationCount(p); n != 1 {
		t.Errorf("ActivationCount after deleting in lower case = %d, want 1", n)
	}
}

func TestLateCommit(t *testing.T) {
	const delay = 400 * time.Millisecond
	tests := []struct {
		name          string
		faults        versoritest.Faults
		script        []versoritest.Fault
		setup         func(s *versoritest.Server)
		status        int // 0: dropped
		wantCommitted bool
	}{
		{name: "rate, default status", faults: versoritest.Faults{LateCommitRate: 1, LateCommitDelay: delay}, status: 504, wantCommitted: true},
		{name: "rate, 502", faults: versoritest.Faults{LateCommitRate: 1, LateCommitStatus: 502, LateCommitDelay: delay}, status: 502, wantCommitted: true},
		{name: "scripted 500", script: []versoritest.Fault{{Status: 500, CommitAfter: delay}}, status: 500, wantCommitted: true},
		{name: "scripted without status", script: []versoritest.Fault{{CommitAfter: delay}}, status: 504, wantCommitted: true},
		{name: "scripted drop", script: []versoritest.Fault{{Drop: true, CommitAfter: delay}}, status: 0, wantCommitted: true},
		{
			name: "integration gone before the commit lands", faults: versoritest.Faults{LateCommitRate: 1, LateCommitDelay: delay},
			setup: func(s *versoritest.Server) { s.ForgetIntegration(testutil.IntegrationID) }, status: 504,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := versoritest.New(t, versoritest.Options{Faults: tt.faults})
			p := versori.Pair{UserID: "u", IntegrationID: testutil.IntegrationID}
			s.Script(p, tt.script...)
			if tt.setup != nil {
				tt.setup(s)
			}
			start := time.Now()
			_, err := newClient(t, s, nil).Activate(context.Background(), request(p.UserID, p.IntegrationID))
			took := time.Since(start)
			var ae *versori.Error
			switch {
			case tt.status == 0 && !versori.IsOutcomeUnknown(err):
				t.Fatalf("err = %v, want a dropped call", err)
			case tt.status != 0 && (!errors.As(err, &ae) || ae.StatusCode != tt.status):
				t.Fatalf("err = %v, want HTTP %d", err, tt.status)
			}
			// Only checkable when the machine answered well within the delay.
			if took < delay/2 {
				if n := s.ActivationCount(p); n != 0 {
					t.Errorf("committed before the answer: ActivationCount = %d", n)
				}
				if n := s.PendingCommits(); n != 1 {
					t.Errorf("PendingCommits = %d, want 1", n)
				}
				if st := s.Stats(); st.PendingCommits != 1 {
					t.Errorf("Stats.PendingCommits = %d, want 1", st.PendingCommits)
				}
			}
			waitPending(t, s)
			want := 0
			if tt.wantCommitted {
				want = 1
			}
			if n := s.ActivationCount(p); n != want {
				t.Errorf("ActivationCount = %d, want %d", n, want)
			}
			calls := s.Calls()
			if len(calls) != 1 || calls[0].Status != tt.status || calls[0].Committed != tt.wantCommitted || calls[0].Pair != p {
				t.Errorf("calls = %+v", calls)
			}
			if st := s.Stats(); st.PendingCommits != 0 || st.Activations != want {
				t.Errorf("Stats = %+v", st)
			}
		})
	}
}

func TestHangCommit(t *testing.T) {
	tests := []struct {
		name          string
		faults        versoritest.Faults
		script        []versoritest.Fault
		clientTimeout time.Duration
		status        int  // 0: the client gave up
		committedNow  bool // the activation exists when the client has its answer
	}{
		{
			name:   "client gives up before the commit",
			faults: versoritest.Faults{HangCommitRate: 1, LateCommitDelay: 300 * time.Millisecond}, clientTimeout: 50 * time.Millisecond,
		},
		{
			name:   "gateway answers 504 after the commit",
			faults: versoritest.Faults{HangCommitRate: 1, HangFor: 300 * time.Millisecond, LateCommitDelay: 10 * time.Millisecond},
			status: 504, committedNow: true,
		},
		{
			name:   "gateway answers 504 before the commit",
			faults: versoritest.Faults{HangCommitRate: 1, HangFor: 10 * time.Millisecond, LateCommitDelay: 300 * time.Millisecond},
			status: 504,
		},
		{
			name:   "scripted: Delay longer than CommitAfter",
			script: []versoritest.Fault{{Status: 504, Delay: 300 * time.Millisecond, CommitAfter: 10 * time.Millisecond}},
			status: 504, committedNow: true,
		},
		{
			name:          "scripted: client gives up, commit lands",
			script:        []versoritest.Fault{{Status: 504, Delay: 5 * time.Second, CommitAfter: 100 * time.Millisecond}},
			clientTimeout: 50 * time.Millisecond,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := versoritest.New(t, versoritest.Options{Faults: tt.faults})
			p := versori.Pair{UserID: "u", IntegrationID: testutil.IntegrationID}
			s.Script(p, tt.script...)
			c, err := versori.New(versori.Config{BaseURL: s.URL(), HubID: s.HubID(), Auth: versori.APIKey(s.APIKey()),
				Timeout: cmp.Or(tt.clientTimeout, 10*time.Second)})
			if err != nil {
				t.Fatal(err)
			}
			_, err = c.Activate(context.Background(), request(p.UserID, p.IntegrationID))
			var ae *versori.Error
			switch {
			case tt.status == 0 && !versori.IsOutcomeUnknown(err):
				t.Fatalf("err = %v, want a timeout with an unknown outcome", err)
			case tt.status != 0 && (!errors.As(err, &ae) || ae.StatusCode != tt.status):
				t.Fatalf("err = %v, want HTTP %d", err, tt.status)
			}
			if tt.committedNow {
				if n := s.ActivationCount(p); n != 1 {
					t.Errorf("ActivationCount when answered = %d, want 1", n)
				}
			}
			waitPending(t, s)
			if n := s.ActivationCount(p); n != 1 {
				t.Errorf("ActivationCount = %d, want 1", n)
			}
			// The handler of a call whose client gave up may still be finishing; its record settles.
			deadline := time.Now().Add(5 * time.Second)
			for {
				calls := s.Calls()
				if len(calls) == 1 && calls[0].Status == tt.status && calls[0].Committed {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("calls = %+v, want status %d, committed", calls, tt.status)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
}

// TestHangReleasedAtEnd checks that a held call does not keep the test's server from closing for
// HangFor.
func TestHangReleasedAtEnd(t *testing.T) {
	result := make(chan int, 1)
	start := time.Now()
	t.Run("held", func(t *testing.T) {
		s := versoritest.New(t, versoritest.Options{Faults: versoritest.Faults{HangCommitRate: 1, HangFor: time.Minute}})
		url, body, key := s.URL()+"/activations", activateBody(t, "u", testutil.IntegrationID), s.APIKey()
		go func() {
			req, _ := http.NewRequest("POST", url, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+key)
			resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
			if err != nil {
				result <- -1
				return
			}
			resp.Body.Close()
			result <- resp.StatusCode
		}()
		for len(s.Calls()) == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	})
	select {
	case status := <-result:
		if status != 504 {
			t.Errorf("held call answered %d, want 504", status)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("held call not released when its test ended")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("closing took %s", took)
	}
}

func TestGatewayStatuses(t *testing.T) {
	p := versori.Pair{UserID: "u", IntegrationID: testutil.IntegrationID}
	tests := []struct {
		name     string
		faults   versoritest.Faults
		setup    func(s *versoritest.Server)
		base     string // prefix of the POST's path
		status   int
		location string
		message  string
	}{
		{name: "forbidden rate", faults: versoritest.Faults{ForbiddenRate: 1}, status: 403, message: "end user may not use this integration"},
		{name: "forbidden pair", setup: func(s *versoritest.Server) { s.Forbid(p) }, status: 403, message: "end user may not use this integration"},
		{name: "conflict rate", faults: versoritest.Faults{ConflictRate: 1}, status: 409},
		{name: "too early rate", faults: versoritest.Faults{TooEarlyRate: 1}, status: 425},
		{name: "redirect rate", faults: versoritest.Faults{RedirectRate: 1}, status: 307, location: versoritest.RedirectBaseURL + "/activations"},
		{
			name: "redirect rate under the production base path", faults: versoritest.Faults{RedirectRate: 1}, base: "/api/embedded/v1",
			status: 307, location: versoritest.RedirectBaseURL + "/api/embedded/v1/activations",
		},
		{
			name: "scripted redirect with Location",
			setup: func(s *versoritest.Server) {
				s.Script(p, versoritest.Fault{Status: 308, Location: "https://eu.example.invalid/x"})
			},
			status: 308, location: "https://eu.example.invalid/x",
		},
		{
			name:   "scripted redirect without Location",
			setup:  func(s *versoritest.Server) { s.Script(p, versoritest.Fault{Status: 307}) },
			status: 307, location: versoritest.RedirectBaseURL + "/activations",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := versoritest.New(t, versoritest.Options{Faults: tt.faults})
			if tt.setup != nil {
				tt.setup(s)
			}
			status, h, raw := rawDo(t, "POST", s.URL()+tt.base+"/activations", "Bearer "+s.APIKey(), activateBody(t, p.UserID, p.IntegrationID))
			if status != tt.status {
				t.Fatalf("POST: %d %s, want %d", status, raw, tt.status)
			}
			if got := h.Get("Location"); got != tt.location {
				t.Errorf("Location = %q, want %q", got, tt.location)
			}
			var eb versori.ErrorBody
			if err := json.Unmarshal(raw, &eb); err != nil || eb.Code != fmt.Sprint(tt.status*1000) || eb.Message == "" {
				t.Errorf("error body %s: %v", raw, err)
			}
			if !strings.Contains(eb.Message, tt.message) {
				t.Errorf("message %q does not contain %q", eb.Message, tt.message)
			}
			if n := s.ActivationCount(p); n != 0 || s.PendingCommits() != 0 {
				t.Errorf("ActivationCount = %d, PendingCommits = %d; want nothing committed", n, s.PendingCommits())
			}
			if calls := s.Calls(); len(calls) != 1 || calls[0].Status != tt.status || calls[0].Committed || calls[0].Auth != "bearer" {
				t.Errorf("calls = %+v", calls)
			}
			// The fault is about that request: the key still works for the list, and for another pair
			// unless a rate says otherwise.
			if _, _, raw := rawDo(t, "GET", s.URL()+"/embed/"+s.HubID()+"/users/u/activations?integration_id="+testutil.IntegrationID, "Bearer "+s.APIKey(), ""); !bytes.Contains(raw, []byte(`"totalCount":0`)) {
				t.Errorf("list after the fault: %s", raw)
			}
			if tt.faults == (versoritest.Faults{}) {
				if status, _, raw := post(t, s, "other-user", testutil.IntegrationID); status != 200 {
					t.Errorf("another pair: %d %s", status, raw)
				}
			}
		})
	}
}

func TestForbidEveryPOST(t *testing.T) {
	s := versoritest.New(t, versoritest.Options{})
	p := versori.Pair{UserID: "u", IntegrationID: testutil.IntegrationID}
	s.Forbid(p)
	s.Script(p, versoritest.Fault{Status: 503})
	c := newClient(t, s, nil)
	for i := range 3 {
		_, err := c.Activate(context.Background(), request(p.UserID, p.IntegrationID))
		var ae *versori.Error
		if !errors.As(err, &ae) || ae.StatusCode != 403 {
			t.Errorf("POST %d: %v, want 403", i, err)
		}
	}
	tests := []struct {
		name string
		pair versori.Pair
	}{
		{"other user", versori.Pair{UserID: "v", IntegrationID: testutil.IntegrationID}},
		{"other integration", versori.Pair{UserID: "u", IntegrationID: testutil.OtherIntegrationID}},
		{"user in another case", versori.Pair{UserID: "U", IntegrationID: testutil.IntegrationID}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := c.Activate(context.Background(), request(tt.pair.UserID, tt.pair.IntegrationID)); err != nil {
				t.Errorf("activate %v: %v", tt.pair, err)
			}
		})
	}
	if n := s.ActivationCount(p); n != 0 {
		t.Errorf("ActivationCount = %d", n)
	}
}

// shapeOf names a list body's shape: "page" for the documented one, else the wrong shape it has.
func shapeOf(t *testing.T, raw []byte) string {
	t.Helper()
	if string(bytes.TrimSpace(raw)) == "null" {
		return "null"
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return "not JSON"
	}
	switch {
	case len(m) == 0:
		return "{}"
	case m["data"] != nil:
		return "wrapped"
	case string(m["activations"]) == "null":
		return "null activations"
	case m["activations"] != nil && m["totalCount"] != nil:
		return "page"
	}
	return "unknown"
}

func TestBadList(t *testing.T) {
	const user = "u"
	p := versori.Pair{UserID: user, IntegrationID: testutil.IntegrationID}
	tests := []struct {
		name        string
		faults      versoritest.Faults
		setup       func(s *versoritest.Server)
		calls       int
		integration string   // integration_id of the list calls
		want        []string // the bodies, in order, when scripted
		wantShapes  []string // shapes that must all appear
	}{
		{
			name: "scripted for the pair, in lower case",
			setup: func(s *versoritest.Server) {
				s.ScriptList(versori.Pair{UserID: user, IntegrationID: intALower}, `{}`, `<html>oops</html>`)
			},
			calls:       3,
			integration: testutil.IntegrationID,
			want:        []string{`{}`, `<html>oops</html>`},
			wantShapes:  []string{"{}", "not JSON", "page"},
		},
		{
			name:       "scripted for the unfiltered list",
			setup:      func(s *versoritest.Server) { s.ScriptList(versori.Pair{UserID: user}, `null`) },
			calls:      2,
			want:       []string{`null`},
			wantShapes: []string{"null", "page"},
		},
		{
			name: "another pair's script is not used",
			setup: func(s *versoritest.Server) {
				s.ScriptList(versori.Pair{UserID: "v", IntegrationID: testutil.IntegrationID}, `{}`)
			},
			calls:       2,
			integration: testutil.IntegrationID,
			wantShapes:  []string{"page"},
		},
		{
			name:        "script ahead of the rate",
			faults:      versoritest.Faults{BadListRate: 1},
			setup:       func(s *versoritest.Server) { s.ScriptList(p, `{"activations":[]}`) },
			calls:       1,
			integration: testutil.IntegrationID,
			want:        []string{`{"activations":[]}`},
			wantShapes:  []string{"unknown"},
		},
		{
			name:        "rate 1 meets every shape",
			faults:      versoritest.Faults{BadListRate: 1},
			calls:       60,
			integration: testutil.IntegrationID,
			wantShapes:  []string{"{}", "null", "wrapped", "null activations"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := versoritest.New(t, versoritest.Options{Faults: tt.faults})
			ids := []string{s.Seed(p), s.Seed(p)}
			if tt.setup != nil {
				tt.setup(s)
			}
			url := s.URL() + "/embed/" + s.HubID() + "/users/" + user + "/activations"
			if tt.integration != "" {
				url += "?integration_id=" + tt.integration
			}
			seen := map[string]bool{}
			for i := range tt.calls {
				status, h, raw := rawDo(t, "GET", url, "Bearer "+s.APIKey(), "")
				if status != 200 || h.Get("Content-Type") != "application/json" {
					t.Fatalf("call %d: %d %q %s", i, status, h.Get("Content-Type"), raw)
				}
				if i < len(tt.want) && string(raw) != tt.want[i] {
					t.Errorf("call %d: body %q, want %q", i, raw, tt.want[i])
				}
				shape := shapeOf(t, raw)
				seen[shape] = true
				if tt.faults.BadListRate == 1 && i >= len(tt.want) && shape == "page" {
					t.Errorf("call %d: the documented page at BadListRate 1", i)
				}
				var m map[string]any
				_ = json.Unmarshal(raw, &m)
				switch shape {
				case "wrapped":
					acts := m["data"].(map[string]any)["activations"].([]any)
					if len(acts) != len(ids) || acts[0].(map[string]any)["id"] != ids[0] {
						t.Errorf("wrapped page %s does not hold the real activations %v", raw, ids)
					}
				case "null activations", "page":
					if m["totalCount"] != float64(len(ids)) {
						t.Errorf("totalCount in %s, want %d", raw, len(ids))
					}
				}
			}
			for _, shape := range tt.wantShapes {
				if !seen[shape] {
					t.Errorf("shape %s never answered; saw %v", shape, seen)
				}
			}
			if st := s.Stats(); st.ByOpStatus[versori.OpListActivations+" 200"] != tt.calls {
				t.Errorf("list calls not counted: %v", st.ByOpStatus)
			}
		})
	}
}

// TestBadListDoesNotShiftPOSTFaults checks that list draws have an RNG of their own: turning
// BadListRate on, with list calls between the POSTs, leaves the POSTs meeting the same faults.
func TestBadListDoesNotShiftPOSTFaults(t *testing.T) {
	run := func(badList float64) []int {
		s := versoritest.New(t, versoritest.Options{Seed: 7, Faults: versoritest.Faults{ServerErrorRate: 0.3, ConflictRate: 0.3, BadListRate: badList}})
		var statuses []int
		for i := range 40 {
			status, _, _ := post(t, s, fmt.Sprint("u", i), testutil.IntegrationID)
			statuses = append(statuses, status)
			rawDo(t, "GET", s.URL()+"/embed/"+s.HubID()+"/users/u/activations", "Bearer "+s.APIKey(), "")
		}
		return statuses
	}
	if a, b := run(0), run(0.5); !slices.Equal(a, b) {
		t.Errorf("POST faults changed with BadListRate:\n%v\n%v", a, b)
	}
}

func TestLongRetryAfter(t *testing.T) {
	p := versori.Pair{UserID: "u", IntegrationID: testutil.IntegrationID}
	dayAhead := time.Now().Add(24 * time.Hour).UTC().Format(http.TimeFormat)
	tests := []struct {
		name   string
		faults versoritest.Faults
		script *versoritest.Fault
		header string
	}{
		{name: "rate, a day in seconds", faults: versoritest.Faults{RateLimitRate: 1, RetryAfter: "86400"}, header: "86400"},
		{name: "rate, HTTP-date a day ahead", faults: versoritest.Faults{RateLimitRate: 1, RetryAfter: dayAhead}, header: dayAhead},
		{name: "scripted, a day in seconds", script: &versoritest.Fault{Status: 429, RetryAfter: "86400"}, header: "86400"},
		{name: "scripted 503, HTTP-date a day ahead", script: &versoritest.Fault{Status: 503, RetryAfter: dayAhead}, header: dayAhead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.faults.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
			s := versoritest.New(t, versoritest.Options{Faults: tt.faults})
			if tt.script != nil {
				s.Script(p, *tt.script)
			}
			status, h, raw := post(t, s, p.UserID, p.IntegrationID)
			if status != 429 && status != 503 {
				t.Fatalf("POST: %d %s", status, raw)
			}
			if got := h.Get("Retry-After"); got != tt.header {
				t.Errorf("Retry-After = %q, want %q", got, tt.header)
			}
			if got := s.Calls()[0].RetryAfter; got < 24*time.Hour-time.Minute || got > 24*time.Hour {
				t.Errorf("recorded RetryAfter = %s, want about 24h", got)
			}
			if tt.script != nil {
				s.Script(p, *tt.script)
			}
			_, err := newClient(t, s, nil).Activate(context.Background(), request(p.UserID, p.IntegrationID))
			if wait, ok := versori.RetryAfterOf(err); !ok || wait < 24*time.Hour-time.Minute || wait > 24*time.Hour {
				t.Errorf("RetryAfterOf(%v) = %s, %v; want about 24h", err, wait, ok)
			}
		})
	}
}

func TestFaultsValidate(t *testing.T) {
	tests := []struct {
		name    string
		f       versoritest.Faults
		wantErr string
	}{
		{name: "zero"},
		{name: "every POST rate, adding up to 1", f: versoritest.Faults{
			ServerErrorRate: 0.1, RateLimitRate: 0.1, DropAfterCommitRate: 0.1, LateCommitRate: 0.1, HangCommitRate: 0.1,
			ForbiddenRate: 0.1, ConflictRate: 0.1, TooEarlyRate: 0.1, RedirectRate: 0.2, BadListRate: 1,
		}},
		{name: "gateway statuses", f: versoritest.Faults{LateCommitRate: 1, LateCommitStatus: 502, LateCommitDelay: time.Hour, HangFor: time.Hour}},
		{name: "a day of Retry-After", f: versoritest.Faults{RateLimitRate: 1, RetryAfter: "86400"}},
		{name: "new rates add above 1", f: versoritest.Faults{LateCommitRate: 0.4, HangCommitRate: 0.4, TooEarlyRate: 0.4}, wantErr: "more than 1"},
		{name: "old and new rates add above 1", f: versoritest.Faults{ServerErrorRate: 0.9, RedirectRate: 0.2}, wantErr: "more than 1"},
		{name: "bad list rate does not count towards the sum", f: versoritest.Faults{ServerErrorRate: 1, BadListRate: 1}},
		{name: "forbidden rate above 1", f: versoritest.Faults{ForbiddenRate: 1.1}, wantErr: "forbiddenRate"},
		{name: "conflict rate negative", f: versoritest.Faults{ConflictRate: -0.1}, wantErr: "conflictRate"},
		{name: "bad list rate above 1", f: versoritest.Faults{BadListRate: 2}, wantErr: "badListRate"},
		{name: "late commit status 404", f: versoritest.Faults{LateCommitStatus: 404}, wantErr: "lateCommitStatus"},
		{name: "late commit status 200", f: versoritest.Faults{LateCommitStatus: 200}, wantErr: "lateCommitStatus"},
		{name: "negative late commit delay", f: versoritest.Faults{LateCommitDelay: -1}, wantErr: "lateCommitDelay"},
		{name: "negative hang", f: versoritest.Faults{HangFor: -time.Second}, wantErr: "hangFor"},
		{name: "negative latency", f: versoritest.Faults{Latency: -1}, wantErr: "latency"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.f.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("Validate = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Validate = %v, want an error about %s", err, tt.wantErr)
			}
		})
	}
}

func TestFaultsJSON(t *testing.T) {
	full := versoritest.Faults{
		Latency: time.Millisecond, LatencyAfterCommit: 2 * time.Millisecond, ServerErrorRate: 0.01, RateLimitRate: 0.02,
		RetryAfter: "86400", DropAfterCommitRate: 0.03, LateCommitRate: 0.04, LateCommitStatus: 502,
		LateCommitDelay: 3 * time.Second, HangCommitRate: 0.05, HangFor: time.Minute, ForbiddenRate: 0.06,
		ConflictRate: 0.07, TooEarlyRate: 0.08, RedirectRate: 0.09, BadListRate: 0.1,
	}
	b, err := json.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		want any
	}{
		{"lateCommitRate", 0.04}, {"lateCommitStatus", 502.0}, {"lateCommitDelay", "3s"}, {"hangCommitRate", 0.05},
		{"hangFor", "1m0s"}, {"forbiddenRate", 0.06}, {"conflictRate", 0.07}, {"tooEarlyRate", 0.08},
		{"redirectRate", 0.09}, {"badListRate", 0.1}, {"retryAfter", "86400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if m[tt.name] != tt.want {
				t.Errorf("%s = %#v, want %#v (JSON %s)", tt.name, m[tt.name], tt.want, b)
			}
		})
	}
	var back versoritest.Faults
	if err := json.Unmarshal(b, &back); err != nil || back != full {
		t.Errorf("round trip = %+v, %v; want %+v", back, err, full)
	}
}

func TestAdminGatewayFaults(t *testing.T) {
	s := versoritest.New(t, versoritest.Options{})
	body := `{"lateCommitRate":1,"lateCommitStatus":503,"lateCommitDelay":"300ms","hangCommitRate":0,"hangFor":"5s",` +
		`"forbiddenRate":0,"conflictRate":0,"tooEarlyRate":0,"redirectRate":0,"badListRate":0.5}`
	status, _, raw := rawDo(t, "POST", s.URL()+"/_standin/faults", "", body)
	if status != 200 {
		t.Fatalf("POST faults: %d %s", status, raw)
	}
	want := versoritest.Faults{LateCommitRate: 1, LateCommitStatus: 503, LateCommitDelay: 300 * time.Millisecond, HangFor: 5 * time.Second, BadListRate: 0.5}
	if got := s.CurrentFaults(); got != want {
		t.Errorf("faults = %+v, want %+v", got, want)
	}
	_, _, raw = rawDo(t, "GET", s.URL()+"/_standin/faults", "", "")
	var got versoritest.Faults
	if err := json.Unmarshal(raw, &got); err != nil || got != want {
		t.Errorf("GET faults = %s (%v)", raw, err)
	}

	if status, _, raw := post(t, s, "u", testutil.IntegrationID); status != 503 {
		t.Fatalf("POST under lateCommitRate 1: %d %s", status, raw)
	}
	_, _, raw = rawDo(t, "GET", s.URL()+"/_standin/stats", "", "")
	var st map[string]any
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	if st["pendingCommits"] != 1.0 || st["activations"] != 0.0 {
		t.Errorf("stats right after a late-commit answer = %s", raw)
	}
	waitPending(t, s)
	_, _, raw = rawDo(t, "GET", s.URL()+"/_standin/stats", "", "")
	if !bytes.Contains(raw, []byte(`"pendingCommits":0`)) || !bytes.Contains(raw, []byte(`"activations":1`)) {
		t.Errorf("stats after the late commit = %s", raw)
	}

	for _, bad := range []string{
		`{"lateCommitStatus":404}`, `{"hangFor":"-1s"}`, `{"lateCommitDelay":"soon"}`, `{"badListRate":1.5}`,
		`{"forbiddenRate":0.5,"conflictRate":0.3,"tooEarlyRate":0.3}`,
	} {
		if status, _, raw := rawDo(t, "POST", s.URL()+"/_standin/faults", "", bad); status != 400 {
			t.Errorf("POST faults %s: %d %s, want 400", bad, status, raw)
		}
	}
}

// TestEveryRateTogether runs every POST rate at once and checks the invariant a client test relies
// on once the late commits have landed: a call is recorded Committed exactly when its pair has an
// activation.
func TestEveryRateTogether(t *testing.T) {
	s := versoritest.New(t, versoritest.Options{Seed: 3, Faults: versoritest.Faults{
		ServerErrorRate: 0.1, RateLimitRate: 0.1, DropAfterCommitRate: 0.1, LateCommitRate: 0.1, HangCommitRate: 0.1,
		ForbiddenRate: 0.1, ConflictRate: 0.1, TooEarlyRate: 0.1, RedirectRate: 0.1,
		HangFor: 20 * time.Millisecond, LateCommitDelay: 10 * time.Millisecond,
	}})
	const n = 300
	for i := range n {
		req, _ := http.NewRequest("POST", s.URL()+"/activations", strings.NewReader(activateBody(t, fmt.Sprint("u", i), intALower)))
		req.Header.Set("Authorization", "Bearer "+s.APIKey())
		if resp, err := noRedirects.Do(req); err == nil {
			resp.Body.Close()
		}
	}
	waitPending(t, s)
	counts := map[int]int{}
	committed := 0
	for _, c := range s.Calls() {
		counts[c.Status]++
		if c.Committed {
			committed++
		}
		has := s.ActivationCount(c.Pair) == 1
		if c.Committed != has {
			t.Errorf("call %+v: committed %v, activation exists %v", c, c.Committed, has)
		}
		wantCommitted := c.Status == 200 || c.Status == 504 || c.Dropped
		if c.Committed != wantCommitted {
			t.Errorf("call %+v: committed %v, want %v for its status", c, c.Committed, wantCommitted)
		}
	}
	for _, status := range []int{0, 200, 307, 403, 409, 425, 429, 503, 504} {
		if counts[status] < 5 {
			t.Errorf("status %d answered %d times in %d calls: %v", status, counts[status], n, counts)
		}
	}
	if len(s.Activations()) != committed {
		t.Errorf("%d activations, %d calls committed", len(s.Activations()), committed)
	}
	if len(s.Duplicates()) != 0 {
		t.Errorf("duplicates: %v", s.Duplicates())
	}
}
