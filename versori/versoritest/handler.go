package versoritest

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/versori/activator/internal/background"
	"github.com/versori/activator/versori"
)

// maxBodyBytes bounds a request body; activation requests are a few hundred bytes.
const maxBodyBytes = 1 << 20

// opOther is the Call.Op of requests that are none of the client's operations.
const opOther = "other"

// opListUsers is the Call.Op of GET /hubs/{hub}/users, which the client does not call.
const opListUsers = "list_end_users"

// routeKind says which endpoint a request is for.
type routeKind int

const (
	routeNotFound routeKind = iota
	routeMethodNotAllowed
	routeHealth
	routeActivate
	routeList
	routeGet
	routeDelete
	routeUpdateVariables
	routeCreateUser
	routeGetUser
	routeListUsers
)

// route is a request's endpoint and its unescaped path parameters.
type route struct {
	kind   routeKind
	op     string
	allow  string // methods the path accepts, for 405s
	hubID  string
	userID string
	id     string
}

func parseRoute(method, escapedPath string) route {
	// Ignore the base paths of production and of the spec's development server, so that a base URL
	// copied from either works too.
	for _, p := range []string{"/api/embedded/v1", "/embedded/v1"} {
		if rest, ok := strings.CutPrefix(escapedPath, p); ok && (rest == "" || rest[0] == '/') {
			escapedPath = rest
			break
		}
	}
	segs := strings.Split(strings.Trim(escapedPath, "/"), "/")
	for i, seg := range segs {
		v, err := url.PathUnescape(seg)
		if err != nil {
			return route{kind: routeNotFound, op: opOther}
		}
		segs[i] = v
	}
	only := func(want string, r route) route {
		if method != want {
			return route{kind: routeMethodNotAllowed, op: opOther, allow: want}
		}
		return r
	}
	switch {
	case len(segs) == 1 && segs[0] == "healthz":
		return only(http.MethodGet, route{kind: routeHealth, op: opOther})
	case len(segs) == 1 && segs[0] == "activations":
		return only(http.MethodPost, route{kind: routeActivate, op: versori.OpActivate})
	case len(segs) == 2 && segs[0] == "activations" && segs[1] != "":
		switch method {
		case http.MethodGet:
			return route{kind: routeGet, op: versori.OpGetActivation, id: segs[1]}
		case http.MethodDelete:
			return route{kind: routeDelete, op: versori.OpDeleteActivation, id: segs[1]}
		}
		return route{kind: routeMethodNotAllowed, op: opOther, allow: "GET, DELETE"}
	case len(segs) == 3 && segs[0] == "activations" && segs[1] != "" && segs[2] == "variables":
		return only(http.MethodPut, route{kind: routeUpdateVariables, op: versori.OpUpdateVariables, id: segs[1]})
	case len(segs) == 3 && segs[0] == "hubs" && segs[1] != "" && segs[2] == "users":
		switch method {
		case http.MethodPost:
			return route{kind: routeCreateUser, op: versori.OpCreateEndUser, hubID: segs[1]}
		case http.MethodGet:
			return route{kind: routeListUsers, op: opListUsers, hubID: segs[1]}
		}
		return route{kind: routeMethodNotAllowed, op: opOther, allow: "GET, POST"}
	case len(segs) == 4 && segs[0] == "hubs" && segs[1] != "" && segs[2] == "users" && segs[3] != "":
		return only(http.MethodGet, route{kind: routeGetUser, op: versori.OpGetEndUser, hubID: segs[1], userID: segs[3]})
	case len(segs) == 5 && segs[0] == "embed" && segs[2] == "users" && segs[4] == "activations" &&
		segs[1] != "" && segs[3] != "":
		return only(http.MethodGet, route{kind: routeList, op: versori.OpListActivations, hubID: segs[1], userID: segs[3]})
	}
	return route{kind: routeNotFound, op: opOther}
}

// ServeHTTP serves the Embedded API and, under /_standin/, the admin endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, adminPrefix) {
		s.serveAdmin(w, r)
		return
	}
	// net/http writes its own Date only when none is set; the API's shows its (perhaps skewed) clock.
	w.Header().Set("Date", s.now().UTC().Format(http.TimeFormat))
	rt := parseRoute(r.Method, r.URL.EscapedPath())
	x := &exchange{s: s, w: w, r: r, call: Call{At: time.Now(), Op: rt.op, Method: r.Method, Path: r.URL.Path}}
	var latency time.Duration
	x.idx, latency = s.startCall(x.call)
	// Deferred for the calls that end without an answer (the client went away, or a drop had to abort
	// the handler by panicking).
	defer x.finish()
	if background.Sleep(r.Context(), latency) != nil {
		return
	}
	switch rt.kind {
	case routeHealth:
		x.writeJSON(http.StatusOK, map[string]string{"message": "ok"})
	case routeActivate:
		x.activate()
	case routeList:
		x.list(rt.hubID, rt.userID)
	case routeGet:
		x.get(rt.id)
	case routeDelete:
		x.delete(rt.id)
	case routeUpdateVariables:
		x.updateVariables(rt.id)
	case routeCreateUser:
		x.createUser(rt.hubID)
	case routeGetUser:
		x.getUser(rt.hubID, rt.userID)
	case routeListUsers:
		x.listUsers(rt.hubID)
	case routeMethodNotAllowed:
		w.Header().Set("Allow", rt.allow)
		x.fail(http.StatusMethodNotAllowed, "method "+r.Method+" is not allowed on "+r.URL.Path)
	default:
		x.fail(http.StatusNotFound, "no route for "+r.Method+" "+r.URL.Path)
	}
}

// exchange is one API call being served, with its record.
type exchange struct {
	s    *Server
	w    http.ResponseWriter
	r    *http.Request
	idx  int
	call Call
	done bool
}

// finish stores the call's record once. It runs before the answer is written or the connection
// closed, so that a client that has its answer finds the call in Calls and Stats.
func (x *exchange) finish() {
	if !x.done {
		x.done = true
		x.s.finishCall(x.idx, x.call)
	}
}

func (x *exchange) activate() {
	s := x.s
	body, err := io.ReadAll(http.MaxBytesReader(x.w, x.r.Body, maxBodyBytes))
	var req versori.ActivationRequest
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	if err == nil {
		req = canonRequest(req)
		// Known before auth is checked, so that refused calls are recorded against their pair too.
		x.call.Pair = req.Pair()
		x.call.Credentials = credentialsOf(req)
	}
	sub, ok := x.authenticate()
	if !ok {
		return
	}
	if err != nil {
		x.badBody(err)
		return
	}
	var fields []versori.ErrorField
	if req.UserID == "" {
		fields = append(fields, versori.ErrorField{Field: "userId", Message: "is required"})
	}
	if req.IntegrationID == "" {
		fields = append(fields, versori.ErrorField{Field: "integrationId", Message: "is required"})
	}
	if len(fields) > 0 {
		x.fail(http.StatusBadRequest, "invalid request: "+fields[0].Field+" "+fields[0].Message, fields...)
		return
	}
	if !x.allowUser(sub, req.UserID) {
		return
	}

	p := req.Pair()
	x.write(versori.OpActivate, p, func(now time.Time) (int, any) {
		if status, ebody := s.checkLocked(req); status != 0 {
			return status, ebody
		}
		a, u := s.commitLocked(p, now)
		if len(req.DynamicVariables) > 0 {
			s.vars[a.ID] = req.DynamicVariables
		}
		return http.StatusOK, s.render(a, u)
	})
}

// effect is a write call's work, run under s.mu when the call commits, at once or in the background
// for a late commit: it makes the API's own checks and, when they pass, changes the server's state.
// It returns the status to answer and the body: the result on a 2xx (nil for 204), an ErrorBody
// otherwise. It must not touch the exchange, which a late commit outlives.
type effect func(now time.Time) (status int, body any)

// write serves a write call of op about p whose request has been checked: it plans the call's faults
// (planLocked), commits eff when the plan says so (at once, or later in the background whatever the
// client does) and answers its result, the fault, or nothing.
func (x *exchange) write(op string, p versori.Pair, eff effect) {
	s := x.s
	s.mu.Lock()
	pl := s.planLocked(op, p, x.call.At)
	if pl.commitLater {
		// Scheduled before any wait, so that it lands whatever the client does meanwhile.
		s.commitLaterLocked(x.idx, p, eff, pl.commitAt)
	}
	s.mu.Unlock()
	ctx := x.r.Context()
	if pl.hangFor > 0 {
		if x.hold(pl.hangFor) {
			x.applyFault(pl.fault)
		}
		return
	}
	if background.Sleep(ctx, pl.beforeCommit) != nil {
		return
	}
	f := pl.fault
	if !f.commits() {
		x.applyFault(f)
		return
	}

	s.mu.Lock()
	status, body := eff(time.Now())
	committed := status/100 == 2
	if committed {
		s.markCommittedLocked(x.idx, p)
		x.call.Committed = true
	}
	s.mu.Unlock()
	if !committed {
		x.writeJSON(status, body)
		return
	}
	// The effect holds from here on, whatever the client hears.
	if background.Sleep(ctx, pl.afterCommit) != nil {
		return
	}
	if f.Drop || f.Status != 0 {
		x.applyFault(f)
		return
	}
	if status == http.StatusNoContent {
		x.call.Status = status
		x.finish()
		x.w.WriteHeader(status)
		return
	}
	x.writeJSON(status, body)
}

// canonRequest returns req with its ULIDs in canonical form. It changes req's connections in place,
// which is safe for a request decoded for this call alone.
func canonRequest(req versori.ActivationRequest) versori.ActivationRequest {
	req.IntegrationID = canonID(req.IntegrationID)
	for i := range req.Connections {
		c := &req.Connections[i]
		c.TemplateID, c.ConnectionID = canonID(c.TemplateID), canonID(c.ConnectionID)
	}
	return req
}

// hold keeps a call unanswered for d, as a gateway waiting on a stuck backend does. It reports
// whether the client is still there to answer: false when it went away first. A Server started by
// New lets go of held calls when its test ends, so that closing it does not wait d.
func (x *exchange) hold(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-x.r.Context().Done():
		return false
	case <-x.s.quit:
	case <-t.C:
	}
	return true
}

// checkLocked refuses a request whose user or integration is unknown or which lacks a connection the
// integration requires; it returns status 0 when the request may commit. req's ids are canonical.
func (s *Server) checkLocked(req versori.ActivationRequest) (int, versori.ErrorBody) {
	if s.unknownLocked(req.UserID) {
		return http.StatusNotFound, errorBody(http.StatusNotFound, "end user "+req.UserID+" not found")
	}
	if s.goneInt[req.IntegrationID] {
		return http.StatusNotFound, errorBody(http.StatusNotFound, "integration "+req.IntegrationID+" not found")
	}
	var missing []string
	for _, t := range s.requires[req.IntegrationID] {
		bound := false
		for _, c := range req.Connections {
			if c.TemplateID == t {
				bound = true
				break
			}
		}
		if !bound {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 {
		return 0, versori.ErrorBody{}
	}
	b := errorBody(http.StatusBadRequest, "missing connections: integration requires a connection for template "+strings.Join(missing, ", "))
	for _, t := range missing {
		b.Fields = append(b.Fields, versori.ErrorField{Field: "connections", Message: "missing connection for template " + t})
	}
	return http.StatusBadRequest, b
}

func (x *exchange) list(hubID, userID string) {
	s := x.s
	q := x.r.URL.Query()
	integrationID := canonID(q.Get("integration_id"))
	x.call.Pair = versori.Pair{UserID: userID, IntegrationID: integrationID}
	sub, ok := x.authenticate()
	if !ok {
		return
	}
	if !strings.EqualFold(hubID, s.hubID) {
		x.fail(http.StatusNotFound, "hub "+hubID+" not found")
		return
	}
	if !x.allowUser(sub, userID) {
		return
	}
	first, ok := x.pageFirst(q)
	if !ok {
		return
	}

	s.mu.Lock()
	if s.unknownLocked(userID) {
		s.mu.Unlock()
		x.fail(http.StatusNotFound, "end user "+userID+" not found")
		return
	}
	var acts []Activation
	for _, a := range s.byUser[userID] {
		if integrationID == "" || a.Pair.IntegrationID == integrationID {
			acts = append(acts, a)
		}
	}
	s.mu.Unlock()

	start, end, next, prev := pageBounds(len(acts), func(i int) string { return acts[i].ID }, q, first)
	page := versori.EndUserActivationPage{
		TotalCount:  len(acts),
		Next:        next,
		Prev:        prev,
		Activations: make([]versori.EndUserActivation, 0, end-start),
	}
	for _, a := range acts[start:end] {
		page.Activations = append(page.Activations, versori.EndUserActivation{
			ID: a.ID, HubID: a.HubID, Integration: summary(a.Pair.IntegrationID),
		})
	}

	s.mu.Lock()
	shape, raw := s.listFaultLocked(x.call.Pair)
	s.mu.Unlock()
	// The wrong shapes are off the spec on purpose: each is something a client must not read as "no
	// activation", or it would POST again.
	switch shape {
	case listScripted:
		x.writeRaw(http.StatusOK, []byte(raw))
	case listEmptyObject:
		x.writeJSON(http.StatusOK, struct{}{})
	case listNull:
		x.writeJSON(http.StatusOK, nil)
	case listWrapped:
		x.writeJSON(http.StatusOK, map[string]any{"data": map[string]any{"activations": page.Activations}})
	case listNullActivations:
		x.writeJSON(http.StatusOK, map[string]any{"activations": nil, "totalCount": page.TotalCount})
	default:
		x.writeJSON(http.StatusOK, page)
	}
}

// pageFirst reads a list's `first` (default and most: the page size), answering 400 when it is not a
// positive integer.
func (x *exchange) pageFirst(q url.Values) (int, bool) {
	first := x.s.pageSize
	if v := q.Get("first"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			x.fail(http.StatusBadRequest, "invalid request: first must be a positive integer",
				versori.ErrorField{Field: "first", Message: "must be a positive integer"})
			return 0, false
		}
		first = min(n, x.s.pageSize)
	}
	return first, true
}

// pageBounds returns the page [start, end) of n items in id order (id(i) is the i-th's ULID) that q's
// `after` and `before` cursors and first select, and the page's next and prev cursors.
func pageBounds(n int, id func(int) string, q url.Values, first int) (start, end int, next, prev string) {
	after, before := canonID(q.Get("after")), canonID(q.Get("before"))
	start, end = 0, n
	if after != "" {
		start = sort.Search(n, func(i int) bool { return id(i) > after })
	}
	if before != "" {
		end = max(start, sort.Search(n, func(i int) bool { return id(i) >= before }))
	}
	if before != "" && after == "" {
		start = max(start, end-first)
	} else {
		end = min(end, start+first)
	}
	if end > start {
		if end < n {
			next = id(end - 1)
		}
		if start > 0 {
			prev = id(start)
		}
	}
	return start, end, next, prev
}

func (x *exchange) get(id string) {
	s := x.s
	id = canonID(id)
	sub, ok := x.authenticate()
	if !ok {
		return
	}
	s.mu.Lock()
	a, found := s.acts[id]
	u := s.users[a.Pair.UserID]
	s.mu.Unlock()
	if !found {
		x.fail(http.StatusNotFound, "activation "+id+" not found")
		return
	}
	x.call.Pair = a.Pair
	if !x.allowUser(sub, a.Pair.UserID) {
		return
	}
	x.writeJSON(http.StatusOK, s.render(a, u))
}

// delete serves DELETE /activations/{id}: the activation is gone from the list and from GET at once.
// An activation deleted meanwhile (two deletes racing, or a late one landing) answers 404.
func (x *exchange) delete(id string) {
	s := x.s
	id = canonID(id)
	sub, ok := x.authenticate()
	if !ok {
		return
	}
	a, found := x.lookup(id)
	if !found || !x.allowUser(sub, a.Pair.UserID) {
		return
	}
	x.write(versori.OpDeleteActivation, a.Pair, func(time.Time) (int, any) {
		if _, ok := s.deleteLocked(id); !ok {
			return http.StatusNotFound, errorBody(http.StatusNotFound, "activation "+id+" not found")
		}
		delete(s.vars, id)
		s.deletes[a.Pair]++
		return http.StatusNoContent, nil
	})
}

// render is the API's view of an activation.
func (s *Server) render(a Activation, u *endUser) versori.Activation {
	return versori.Activation{
		ID:    a.ID,
		HubID: a.HubID,
		User: versori.EndUser{
			ID:                u.id,
			ExternalID:        a.Pair.UserID,
			DisplayName:       a.Pair.UserID,
			HubID:             a.HubID,
			PrimaryConnection: u.primary,
			CreatedAt:         u.created,
			UpdatedAt:         u.created,
		},
		Integration: summary(a.Pair.IntegrationID),
	}
}

// summary is the integration summary the spec requires in activations; the stand-in knows nothing of
// integrations beyond their ids, so the rest is made up from the id.
func summary(integrationID string) versori.IntegrationSummary {
	return versori.IntegrationSummary{
		ID:          integrationID,
		Name:        "Integration " + integrationID,
		ImageURL:    "https://example.com/versoritest/integrations/" + url.PathEscape(integrationID) + ".png",
		Description: "An integration served by the versoritest stand-in.",
		IsDeployed:  true,
		IsActivated: true,
	}
}

// The values of Call.Auth.
const (
	authBearer = "bearer"
	authJWT    = "jwt"
)

// authenticate checks the Authorization header, answering 401 when it fails. For a JWT it returns the
// token's subject, which the caller must match against the call's end user.
func (x *exchange) authenticate() (sub string, ok bool) {
	s := x.s
	scheme, cred, _ := strings.Cut(x.r.Header.Get("Authorization"), " ")
	cred = strings.TrimSpace(cred)
	switch {
	case scheme == "":
		x.fail(http.StatusUnauthorized, "missing Authorization header")
	case strings.EqualFold(scheme, "Bearer"):
		s.mu.Lock()
		key := s.apiKey
		s.mu.Unlock()
		if key != "" && subtle.ConstantTimeCompare([]byte(cred), []byte(key)) == 1 {
			x.call.Auth = authBearer
			return "", true
		}
		x.fail(http.StatusUnauthorized, "invalid API key")
	case strings.EqualFold(scheme, "JWT"):
		if s.jwt == nil {
			x.fail(http.StatusUnauthorized, "JWT authentication is not configured for this organisation")
			return "", false
		}
		s.mu.Lock()
		revoked := s.revoked
		s.mu.Unlock()
		if revoked {
			x.fail(http.StatusUnauthorized, "invalid token: signing key has been revoked")
			return "", false
		}
		var claims jwt.RegisteredClaims
		_, err := s.jwt.ParseWithClaims(cred, &claims, func(*jwt.Token) (any, error) { return s.pubKey, nil })
		if err != nil {
			x.fail(http.StatusUnauthorized, "invalid token: "+err.Error())
			return "", false
		}
		if claims.Subject == "" {
			x.fail(http.StatusUnauthorized, "invalid token: no subject")
			return "", false
		}
		x.call.Auth = authJWT
		return claims.Subject, true
	default:
		x.fail(http.StatusUnauthorized, "unsupported Authorization scheme "+scheme)
	}
	return "", false
}

// allowUser answers 403 when a JWT call is about another end user than the token's subject, and
// RefuseUnknownUsersTokens's status when it is about a forgotten user.
func (x *exchange) allowUser(sub, userID string) bool {
	if x.call.Auth == authJWT {
		x.s.mu.Lock()
		status := 0
		if x.s.goneUser[userID] {
			status = x.s.goneTokenStatus
		}
		x.s.mu.Unlock()
		if status != 0 {
			x.fail(status, "invalid token: end user "+userID+" is not known to this organisation")
			return false
		}
	}
	if x.call.Auth == authJWT && sub != userID {
		x.fail(http.StatusForbidden, "token subject "+sub+" may not act for end user "+userID)
		return false
	}
	return true
}

// badBody answers 400 for a body that could not be read or decoded, naming the field when it can.
func (x *exchange) badBody(err error) {
	field, msg := "body", "malformed JSON: "+err.Error()
	var te *json.UnmarshalTypeError
	var me *http.MaxBytesError
	switch {
	case errors.As(err, &te) && te.Field != "":
		field, msg = te.Field, "has the wrong type: expected "+te.Type.String()+", got "+te.Value
	case errors.As(err, &me):
		msg = "is larger than " + strconv.FormatInt(me.Limit, 10) + " bytes"
	}
	x.fail(http.StatusBadRequest, "invalid request: "+field+" "+msg, versori.ErrorField{Field: field, Message: msg})
}

// applyFault answers with f's status, or drops the connection.
func (x *exchange) applyFault(f Fault) {
	if f.Drop {
		x.drop()
		return
	}
	if loc := f.Location; loc != "" || f.Status/100 == 3 {
		if loc == "" {
			loc = RedirectBaseURL + x.r.URL.RequestURI()
		}
		x.w.Header().Set("Location", loc)
	}
	b := errorBody(f.Status, http.StatusText(f.Status))
	if f.Body != nil {
		fb := *f.Body
		// The spec requires both; a test that set only one still gets a valid body.
		if fb.Code == "" {
			fb.Code = b.Code
		}
		if fb.Message == "" {
			fb.Message = b.Message
		}
		b = fb
	}
	x.writeError(f.Status, b, f.RetryAfter)
}

// drop closes the connection without answering, as a crashed gateway would: the client cannot tell
// whether the call took effect.
func (x *exchange) drop() {
	x.call.Dropped = true
	x.call.Status = 0
	x.finish()
	if hj, ok := x.w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
			return
		}
	}
	// HTTP/2 cannot be hijacked; aborting the handler resets the stream, which is the same to a client.
	panic(http.ErrAbortHandler)
}

// fail answers status with an error body.
func (x *exchange) fail(status int, msg string, fields ...versori.ErrorField) {
	b := errorBody(status, msg)
	b.Fields = fields
	x.writeError(status, b, "")
}

func (x *exchange) writeError(status int, b versori.ErrorBody, retryAfter string) {
	if retryAfter != "" {
		x.w.Header().Set("Retry-After", retryAfter)
		x.call.RetryAfter, _ = versori.ParseRetryAfter(retryAfter, time.Now())
	}
	x.writeJSON(status, b)
}

func (x *exchange) writeJSON(status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(errorBody(status, "encoding response: "+err.Error()))
	}
	x.writeRaw(status, append(b, '\n'))
}

// writeRaw answers status with body as it is, labelled JSON whatever it holds.
func (x *exchange) writeRaw(status int, body []byte) {
	x.call.Status = status
	x.finish()
	x.w.Header().Set("Content-Type", "application/json")
	x.w.WriteHeader(status)
	_, _ = x.w.Write(body)
}

// errorBody is the API's error body for status, whose code is the status times 1000.
func errorBody(status int, msg string) versori.ErrorBody {
	return versori.ErrorBody{Code: strconv.Itoa(status * 1000), Message: msg}
}

// credentialsOf is Call.Credentials of req.
func credentialsOf(req versori.ActivationRequest) string {
	creds := make([]json.RawMessage, len(req.Connections))
	some := false
	for i, c := range req.Connections {
		if len(c.Credentials) > 0 {
			creds[i], some = c.Credentials, true
		}
	}
	if !some {
		return ""
	}
	b, _ := json.Marshal(creds)
	return string(b)
}
