package versoritest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/versori/activator/versori"
)

// User is an end user as the server holds it, with the counts a test checks invariants with.
type User struct {
	ExternalID string `json:"externalId"`
	ID         string `json:"id"` // the internal id, a ULID
	// Creates counts the POST /hubs/{hub}/users that committed for this external id; more than 1
	// means a client created the user again after it was forgotten (409s are not counted).
	Creates int `json:"creates"`
	// CreateCalls counts the POST /hubs/{hub}/users calls about this external id, whatever they
	// answered.
	CreateCalls int `json:"createCalls"`
}

// RequireKnownUsers turns on (or off) the real API's rule that an end user must exist before they can
// activate: POST /activations for a user the server does not know answers 404 naming the user (checked
// when the activation would commit, as for a forgotten user), and so does the user's activations list,
// since the API resolves the user in the path before it looks at activations: a client must read that
// 404 as "this user has no activation". Users become known by POST /hubs/{hub}/users, AddUser or Seed.
// Off (the default), a user's first activation creates them, as the stand-in always did.
func (s *Server) RequireKnownUsers(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requireKnown = on
}

// AddUser makes the end user externalID known, as if an earlier run had created them, and returns
// their internal id. It is not recorded as a call, is not counted by UserCreates, and does nothing but
// return the id when the user is known already.
func (s *Server) AddUser(externalID string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.knownLocked(externalID) {
		return s.users[externalID].id
	}
	return s.newUserLocked(externalID, externalID, "primary", nil, time.Now()).id
}

// HasUser reports whether the end user externalID exists (external ids are case-sensitive).
func (s *Server) HasUser(externalID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.knownLocked(externalID)
}

// UserCreates returns how many POST /hubs/{hub}/users committed a user with externalID, late commits
// included. A client that never creates a user twice keeps it at most 1; 409 answers are not counted.
func (s *Server) UserCreates(externalID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.userCreates[externalID]
}

// UserCreateCalls returns how many POST /hubs/{hub}/users calls were about externalID, whatever they
// answered.
func (s *Server) UserCreateCalls(externalID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.userCreateCalls[externalID]
}

// Users returns the end users known now, by external id.
func (s *Server) Users() []User {
	s.mu.Lock()
	out := make([]User, 0, len(s.users))
	for ext, u := range s.users {
		if !s.goneUser[ext] {
			out = append(out, User{ExternalID: ext, ID: u.id, Creates: s.userCreates[ext], CreateCalls: s.userCreateCalls[ext]})
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b User) int { return strings.Compare(a.ExternalID, b.ExternalID) })
	return out
}

// Variables returns the dynamic variables of p's newest activation: those its POST /activations gave,
// or those of the last PUT /activations/{id}/variables that committed; nil when it was given none. ok
// is false when p has no activation.
func (s *Server) Variables(p versori.Pair) (vars json.RawMessage, ok bool) {
	p = canonPair(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	acts := s.byUser[p.UserID]
	for i := len(acts) - 1; i >= 0; i-- {
		if acts[i].Pair == p {
			return bytes.Clone(s.vars[acts[i].ID]), true
		}
	}
	return nil, false
}

// VariableUpdates returns how many PUT /activations/{id}/variables committed for p's activations.
func (s *Server) VariableUpdates(p versori.Pair) int {
	p = canonPair(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.varUpdates[p]
}

// Deletes returns how many DELETE /activations/{id} committed for p's activations; a delete of an
// activation already gone answers 404 and is not counted.
func (s *Server) Deletes(p versori.Pair) int {
	p = canonPair(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deletes[p]
}

// renderUser is the API's view of an end user.
func (s *Server) renderUser(u *endUser) versori.EndUser {
	return versori.EndUser{
		ID:                u.id,
		ExternalID:        u.externalID,
		DisplayName:       u.displayName,
		HubID:             s.hubID,
		PrimaryConnection: u.primary,
		CreatedAt:         u.created,
		UpdatedAt:         u.created,
	}
}

// endUserCreate is the body of POST /hubs/{hub}/users as the server reads it: pointers and raw values
// tell a missing or null field from an empty one.
type endUserCreate struct {
	ExternalID        string `json:"externalId"`
	DisplayName       string `json:"displayName"`
	PrimaryConnection *struct {
		Name        *string                       `json:"name"`
		Credentials json.RawMessage               `json:"credentials"`
		Variables   *[]versori.ConnectionVariable `json:"variables"`
	} `json:"primaryConnection"`
}

// fieldErrors lists what the spec's EndUserCreate and ConnectionCreate require and req lacks.
func (req endUserCreate) fieldErrors() []versori.ErrorField {
	var fields []versori.ErrorField
	add := func(field, msg string) { fields = append(fields, versori.ErrorField{Field: field, Message: msg}) }
	if req.ExternalID == "" {
		add("externalId", "is required")
	}
	pc := req.PrimaryConnection
	if pc == nil {
		add("primaryConnection", "is required")
		return fields
	}
	if pc.Name == nil || *pc.Name == "" {
		add("primaryConnection.name", "is required")
	}
	switch creds := bytes.TrimSpace(pc.Credentials); {
	case len(creds) == 0 || string(creds) == "null":
		add("primaryConnection.credentials", "is required")
	case creds[0] != '{':
		add("primaryConnection.credentials", "must be an object")
	}
	if pc.Variables == nil {
		add("primaryConnection.variables", "is required")
	} else {
		for _, v := range *pc.Variables {
			if v.Name == "" {
				add("primaryConnection.variables", "every variable needs a name")
				break
			}
		}
	}
	return fields
}

// createUser serves POST /hubs/{hub}/users.
func (x *exchange) createUser(hubID string) {
	s := x.s
	body, err := io.ReadAll(http.MaxBytesReader(x.w, x.r.Body, maxBodyBytes))
	var req endUserCreate
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err == nil {
		// Known before auth is checked, so that refused calls are recorded against their user too.
		x.call.Pair = versori.Pair{UserID: req.ExternalID}
		if pc := req.PrimaryConnection; pc != nil && len(pc.Credentials) > 0 {
			// As for an activation's connections, so that tests can check what reached the API.
			if b, err := json.Marshal([]json.RawMessage{pc.Credentials}); err == nil {
				x.call.Credentials = string(b)
			}
		}
		s.mu.Lock()
		s.userCreateCalls[req.ExternalID]++
		s.mu.Unlock()
	}
	sub, ok := x.authenticate()
	if !ok {
		return
	}
	if !strings.EqualFold(hubID, s.hubID) {
		x.fail(http.StatusNotFound, "hub "+hubID+" not found")
		return
	}
	if err != nil {
		x.badBody(err)
		return
	}
	if fields := req.fieldErrors(); len(fields) > 0 {
		x.fail(http.StatusBadRequest, "invalid request: "+fields[0].Field+" "+fields[0].Message, fields...)
		return
	}
	ext := req.ExternalID
	if !x.allowUser(sub, ext) {
		return
	}
	name, vars := *req.PrimaryConnection.Name, *req.PrimaryConnection.Variables
	x.write(versori.OpCreateEndUser, x.call.Pair, func(now time.Time) (int, any) {
		if s.knownLocked(ext) {
			return http.StatusConflict, errorBody(http.StatusConflict, "end user "+ext+" already exists")
		}
		u := s.newUserLocked(ext, req.DisplayName, name, vars, now)
		s.userCreates[ext]++
		s.nUserCreates++
		return http.StatusCreated, s.renderUser(u)
	})
}

// getUser serves GET /hubs/{hub}/users/{id}: id is an external id unless identifier_type=internal.
func (x *exchange) getUser(hubID, id string) {
	s := x.s
	kind := x.r.URL.Query().Get("identifier_type")
	if kind != "internal" {
		x.call.Pair = versori.Pair{UserID: id}
	}
	sub, ok := x.authenticate()
	if !ok {
		return
	}
	if !strings.EqualFold(hubID, s.hubID) {
		x.fail(http.StatusNotFound, "hub "+hubID+" not found")
		return
	}
	ext := id
	switch kind {
	case "", "external":
	case "internal":
		s.mu.Lock()
		e, found := s.userByID[canonID(id)]
		s.mu.Unlock()
		if !found {
			x.fail(http.StatusNotFound, "end user "+id+" not found")
			return
		}
		ext = e
		x.call.Pair = versori.Pair{UserID: ext}
	default:
		x.fail(http.StatusBadRequest, "invalid request: identifier_type must be internal or external",
			versori.ErrorField{Field: "identifier_type", Message: "must be internal or external"})
		return
	}
	// Checked before the user is looked up, so that a token of another user learns nothing.
	if !x.allowUser(sub, ext) {
		return
	}
	s.mu.Lock()
	var u *endUser
	if s.knownLocked(ext) {
		u = s.users[ext]
	}
	s.mu.Unlock()
	if u == nil {
		x.fail(http.StatusNotFound, "end user "+id+" not found")
		return
	}
	x.writeJSON(http.StatusOK, s.renderUser(u))
}

// userSummary is the spec's EndUserSummary.
type userSummary struct {
	ID          string    `json:"id"`
	ExternalID  string    `json:"externalId"`
	DisplayName string    `json:"displayName"`
	HubID       string    `json:"hubId"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

// userPage is the spec's EndUserPage.
type userPage struct {
	TotalCount int           `json:"totalCount"`
	Next       string        `json:"next,omitempty"`
	Prev       string        `json:"prev,omitempty"`
	Users      []userSummary `json:"users"`
}

// listUsers serves GET /hubs/{hub}/users: the hub's end users in id (creation) order, paginated like
// the activations list, those whose id, external id or display name contains `search` (ignoring
// case) when it is set. The list is the organisation's, not one user's, so a JWT call is refused with
// 403: no end user's token may list the others.
func (x *exchange) listUsers(hubID string) {
	s := x.s
	q := x.r.URL.Query()
	if _, ok := x.authenticate(); !ok {
		return
	}
	if !strings.EqualFold(hubID, s.hubID) {
		x.fail(http.StatusNotFound, "hub "+hubID+" not found")
		return
	}
	if x.call.Auth == authJWT {
		x.fail(http.StatusForbidden, "an end user's token may not list the hub's users")
		return
	}
	first, ok := x.pageFirst(q)
	if !ok {
		return
	}
	search := strings.ToLower(q.Get("search"))
	s.mu.Lock()
	var users []*endUser
	for ext, u := range s.users {
		if s.goneUser[ext] {
			continue
		}
		if search == "" || strings.Contains(strings.ToLower(u.id), search) ||
			strings.Contains(strings.ToLower(u.externalID), search) || strings.Contains(strings.ToLower(u.displayName), search) {
			users = append(users, u)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(users, func(a, b *endUser) int { return strings.Compare(a.id, b.id) })
	start, end, next, prev := pageBounds(len(users), func(i int) string { return users[i].id }, q, first)
	page := userPage{TotalCount: len(users), Next: next, Prev: prev, Users: make([]userSummary, 0, end-start)}
	for _, u := range users[start:end] {
		page.Users = append(page.Users, userSummary{ID: u.id, ExternalID: u.externalID, DisplayName: u.displayName,
			HubID: s.hubID, CreatedAt: u.created, UpdatedAt: u.created})
	}
	x.writeJSON(http.StatusOK, page)
}

// dynamicVariables is the body of PUT /activations/{id}/variables and of its answer.
type dynamicVariables struct {
	DynamicVariables json.RawMessage `json:"dynamicVariables"`
}

// updateVariables serves PUT /activations/{id}/variables, replacing the activation's variables. An
// absent or null dynamicVariables clears them to {}.
func (x *exchange) updateVariables(id string) {
	s := x.s
	id = canonID(id)
	body, err := io.ReadAll(http.MaxBytesReader(x.w, x.r.Body, maxBodyBytes))
	var req dynamicVariables
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	sub, ok := x.authenticate()
	if !ok {
		return
	}
	if err != nil {
		x.badBody(err)
		return
	}
	vars := bytes.TrimSpace(req.DynamicVariables)
	switch {
	case len(vars) == 0 || string(vars) == "null":
		vars = []byte("{}")
	case vars[0] != '{':
		x.fail(http.StatusBadRequest, "invalid request: dynamicVariables must be an object",
			versori.ErrorField{Field: "dynamicVariables", Message: "must be an object"})
		return
	}
	a, found := x.lookup(id)
	if !found || !x.allowUser(sub, a.Pair.UserID) {
		return
	}
	vars = bytes.Clone(vars)
	x.write(versori.OpUpdateVariables, a.Pair, func(time.Time) (int, any) {
		if _, ok := s.acts[id]; !ok {
			return http.StatusNotFound, errorBody(http.StatusNotFound, "activation "+id+" not found")
		}
		s.vars[id] = vars
		s.varUpdates[a.Pair]++
		return http.StatusOK, dynamicVariables{DynamicVariables: vars}
	})
}

// lookup finds the activation id for a call about it, recording its pair on the call, and answers 404
// when there is none.
func (x *exchange) lookup(id string) (Activation, bool) {
	x.s.mu.Lock()
	a, found := x.s.acts[id]
	x.s.mu.Unlock()
	if !found {
		x.fail(http.StatusNotFound, "activation "+id+" not found")
		return a, false
	}
	x.call.Pair = a.Pair
	return a, true
}
