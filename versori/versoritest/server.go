// Package versoritest is a stand-in for Versori's Embedded API v1, for tests, the demo and benchmarks.
//
// It serves the calls the versori client makes (POST /activations, the end user's activations list, GET
// and DELETE /activations/{id}, PUT /activations/{id}/variables, POST and GET /hubs/{hub}/users, GET
// /hubs/{hub}/users/{id}, /healthz) with bodies that validate against the published OpenAPI spec, and
// it can be told to misbehave at least as badly as the real API behind a real gateway:
// latency, 503s, 429s with any Retry-After (a day is allowed), connections dropped after the
// activation was committed, gateway errors and hung calls whose activation is committed afterwards
// anyway, 403s, 409s, 425s and 307 redirects about one request, list answers of the wrong shape, and
// scripted answers for one pair's next calls. Like the real API, POST /activations is not idempotent,
// so a client that retries blindly creates duplicates, which ActivationCount and Duplicates expose.
//
// End users: POST /hubs/{hub}/users creates one (201), and answers 409 when the external id exists, 400
// naming the field when externalId or the primaryConnection the spec requires (name, credentials,
// variables) is missing or malformed, and 404 for another hub; UserCreates counts the creates that
// committed, which a client that never creates a user twice keeps at most 1. GET
// /hubs/{hub}/users/{id} reads one by external id, or by internal id with identifier_type=internal;
// GET /hubs/{hub}/users lists them, paginated, with `search`.
// By default a user's first activation creates them; RequireKnownUsers makes an unknown user's
// activations answer 404 instead, as the real API does. PUT /activations/{id}/variables replaces an
// activation's dynamic variables (Variables reads them; a POST's dynamicVariables are the initial
// ones), and DELETE /activations/{id} removes the activation from GET and the list (Deletes counts
// them). Faults scripted with ScriptOp, and the rates for the operations Faults.WriteOps selects, make
// creates, PUTs and DELETEs commit and lose their answer as POST /activations does.
//
// ULIDs are Crockford base32, which is case-insensitive, and the real API reads "01hzy…" and
// "01HZY…" as one id. So does the stand-in: it upper-cases the integration, template, connection,
// activation and hub ids it receives, in requests and in the arguments of its methods (a versori.Pair
// given to Script or ActivationCount, say), and its records and answers hold that canonical form. End
// user ids (external ids) are not ULIDs and stay case-sensitive.
//
// Some faults commit an activation (or a create, PUT or DELETE) after the call has been answered, or
// while it is held without an answer, as a backend does when the gateway in front of it has given up (Faults.LateCommitRate,
// Faults.HangCommitRate, Fault.CommitAfter). Those commits happen in the background whatever the client
// does; PendingCommits says how many are still to come, so that a test waits for them before checking
// its invariants.
//
// Every call is recorded (Calls, Stats). When the stand-in runs as its own process
// (cmd/versori-standin), the same records and controls are served over HTTP, without auth and without
// being recorded as calls:
//
//	GET  /_standin/stats        Stats (pendingCommits: late commits still to come)
//	GET  /_standin/calls        []Call (Call.RetryAfter in nanoseconds)
//	GET  /_standin/activations  []Activation
//	GET  /_standin/users        []User (known end users, with their create counts)
//	POST /_standin/users?externalId=X                 AddUser(X)
//	GET  /_standin/faults       the Faults in force
//	POST /_standin/faults       replace the Faults with the JSON body; absent fields are zero, and
//	                            durations are Go duration strings ("250ms") or nanoseconds
//	POST /_standin/require?integration=X&template=Y   RequireConnection(X, Y)
//	POST /_standin/clear?integration=X                ClearRequirements(X)
//
// The Faults' JSON names are latency, latencyAfterCommit, serverErrorRate, rateLimitRate,
// retryAfter, dropAfterCommitRate, lateCommitRate, lateCommitStatus, lateCommitDelay,
// hangCommitRate, hangFor, forbiddenRate, conflictRate, tooEarlyRate, redirectRate, badListRate and
// writeOps ({"createEndUser": true, "updateVariables": true, "deleteActivation": true}).
package versoritest

import (
	"crypto/rsa"
	"encoding/json"
	"math/rand/v2"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/oklog/ulid/v2"

	"github.com/versori/activator/versori"
)

// DefaultAPIKey is the API key a Server accepts when Options.APIKey is empty.
const DefaultAPIKey = "test-api-key"

// DefaultHubID is the hub a Server serves when Options.HubID is empty; it is a valid ULID so that
// responses validate against the spec.
const DefaultHubID = "01J5TANDXN0000000000000HVB"

// DefaultPageSize is the most activations a list page holds when Options.PageSize is zero; it is the
// spec's default for `first`.
const DefaultPageSize = 20

// Options configures a Server.
type Options struct {
	// APIKey is accepted as "Authorization: Bearer <key>"; default DefaultAPIKey.
	APIKey string
	// HubID is the only hub whose users' activations can be listed; default DefaultHubID.
	HubID string
	// RequireKnownUsers makes POST /activations and the activations list answer 404 for an end user
	// the server does not know (see Server.RequireKnownUsers).
	RequireKnownUsers bool
	// SigningKeyID and PublicKey, when both set, make the server accept "Authorization: JWT <token>":
	// RS256 tokens with iss == versori.JWTIssuerPrefix+SigningKeyID, sub equal to the end user the
	// call is about (403 otherwise), and exp, nbf and iat checked against the server's clock with no
	// leeway: a token issued in the server's future is refused, as strict APIs do.
	SigningKeyID string
	PublicKey    *rsa.PublicKey
	// PageSize is the most activations one list page holds (default DefaultPageSize), so that a client
	// with more activations than that must follow `next`.
	PageSize int
	// Seed seeds the random draws of the fault rates and of the ULIDs' entropy (0 means 1), so that a
	// run with the same calls in the same order meets the same faults.
	Seed int64
	// Faults are in force from the start; SetFaults replaces them.
	Faults Faults
	// MaxCalls bounds how many calls Calls keeps, the most recent ones (0 keeps all). A long soak run
	// needs the bound; the counters in Stats stay exact regardless.
	MaxCalls int
}

// Server is the stand-in. It is an http.Handler, and New also serves it on a local port. It is safe
// for concurrent use.
type Server struct {
	hubID    string
	pageSize int
	maxCalls int
	issuer   string // empty when JWTs are not accepted
	pubKey   *rsa.PublicKey
	jwt      *jwt.Parser
	ts       *httptest.Server

	// mu guards everything below. It is never held while sleeping or doing I/O, so that latency
	// faults do not serialise calls.
	mu       sync.Mutex
	apiKey   string
	revoked  bool          // the signing key is revoked: every JWT gets 401
	skew     time.Duration // the server's clock runs this far ahead of the real one (negative: behind)
	faults   Faults
	rngs     map[string]*rand.Rand  // write fault-rate draws, one RNG per operation (writeOps)
	listRng  *rand.Rand             // BadListRate draws, apart so that list calls do not shift POST faults
	entropy  *ulid.MonotonicEntropy // ULID entropy; MonotonicEntropy is not safe for concurrent use
	lastMS   uint64                 // newest ULID timestamp, so ids never go backwards with the clock
	scripts  map[scriptKey][]Fault
	lists    map[versori.Pair][]string // ScriptList bodies
	forbid   map[versori.Pair]bool
	pending  int                 // background commits scheduled and not yet done
	quit     chan struct{}       // closed when New's test ends, to release hung calls
	requires map[string][]string // integration -> templates it needs a connection for
	goneUser map[string]bool
	// goneTokenStatus is what a JWT call about a forgotten end user answers, ahead of the 404: an API
	// may refuse the token of a user it does not know (403, or 401) as it refuses a bad key.
	goneTokenStatus int
	goneInt         map[string]bool
	users           map[string]*endUser // by external id
	userByID        map[string]string   // internal id -> external id
	requireKnown    bool                // RequireKnownUsers
	userCreates     map[string]int      // committed POST /hubs/{hub}/users, by external id
	userCreateCalls map[string]int      // POST /hubs/{hub}/users calls received, by external id
	nUserCreates    int
	vars            map[string]json.RawMessage // dynamic variables, by activation id
	varUpdates      map[versori.Pair]int       // committed PUT /activations/{id}/variables
	deletes         map[versori.Pair]int       // committed DELETE /activations/{id}
	acts            map[string]Activation      // by id
	byUser          map[string][]Activation    // in id order
	byPair          map[versori.Pair]int
	dupPairs        int // pairs in byPair with more than one activation, kept up to date for Stats
	calls           []Call
	dropped0        int // calls trimmed from the front of calls, so absolute indexes stay valid
	nCalls          int
	byOp            map[string]int
	nDropped        int
}

// Call is one request the server received, as recorded.
type Call struct {
	At time.Time `json:"at"`
	// Op is versori.OpActivate, OpListActivations, OpGetActivation, OpDeleteActivation,
	// OpUpdateVariables, OpCreateEndUser, OpGetEndUser, "list_end_users" (GET /hubs/{hub}/users,
	// which the client does not call), or "other".
	Op     string `json:"op"`
	Method string `json:"method"`
	Path   string `json:"path"`
	// Pair is the call's (user, integration): from the body for activate, from the path and the
	// integration_id query for list, from the activation found for get, delete and update_variables,
	// and the user alone (IntegrationID "") for create_end_user and get_end_user.
	Pair versori.Pair `json:"pair"`
	// Status is the status answered; 0 when the connection was dropped, when the client went away
	// before the answer, or while the call is still in flight.
	Status    int    `json:"status"`
	Committed bool   `json:"committed"` // the call's write took effect, perhaps after it was answered
	Dropped   bool   `json:"dropped"`   // the server closed the connection without answering, on purpose
	Auth      string `json:"auth"`      // "bearer" or "jwt"; "" when refused or not needed
	// RetryAfter is the Retry-After sent with a 429, as versori.ParseRetryAfter reads it (JSON: ns).
	RetryAfter time.Duration `json:"retryAfter"`
	// Credentials is what an activate call's body gave its connections, as a JSON array of their
	// credentials in order (null for an existing connection), so that tests can check what reached
	// the API; "" when no connection had any. A create_end_user call's is a one-element array of its
	// primary connection's credentials. A string keeps Call comparable.
	Credentials string `json:"credentials,omitempty"`
}

// Activation is a committed activation, as the server holds it.
type Activation struct {
	ID        string       `json:"id"`
	Pair      versori.Pair `json:"pair"`
	HubID     string       `json:"hubId"`
	CreatedAt time.Time    `json:"createdAt"`
}

// Stats are the server's counters. They count every call even when MaxCalls trims Calls.
type Stats struct {
	Calls int `json:"calls"`
	// ByOpStatus counts calls by operation and status, keyed "activate 200"; status 0 is a dropped
	// connection or a client that went away.
	ByOpStatus  map[string]int `json:"byOpStatus"`
	Activations int            `json:"activations"` // activations held now (deleted ones are gone)
	Duplicates  int            `json:"duplicates"`  // pairs holding more than one activation
	Dropped     int            `json:"dropped"`     // connections closed on purpose without an answer
	// PendingCommits counts the background commits still to come, as PendingCommits does; a run
	// driving a separate stand-in process waits for 0 before it checks the records.
	PendingCommits int `json:"pendingCommits"`
	Users          int `json:"users"`        // end users known now (forgotten ones are not)
	UsersCreated   int `json:"usersCreated"` // committed POST /hubs/{hub}/users, 409s not included
	// UsersCreatedTwice counts external ids created more than once by POST /hubs/{hub}/users (a
	// forgotten user created again counts too): 0 while a client never re-creates a user.
	UsersCreatedTwice int `json:"usersCreatedTwice"`
}

// endUser is what the server knows of an end user: created by POST /hubs/{hub}/users or AddUser, or
// by their first activation when RequireKnownUsers is off. A record is replaced, never changed, so
// that a pointer read under the lock can be rendered after it.
type endUser struct {
	id          string // internal id, a ULID
	externalID  string
	displayName string
	created     time.Time
	primary     json.RawMessage // the user's primary Connection, which the spec requires on EndUser
}

// NewServer returns a Server that is not listening: serve it as an http.Handler.
func NewServer(opts Options) *Server {
	if opts.APIKey == "" {
		opts.APIKey = DefaultAPIKey
	}
	if opts.HubID == "" {
		opts.HubID = DefaultHubID
	}
	if opts.PageSize <= 0 {
		opts.PageSize = DefaultPageSize
	}
	if opts.Seed == 0 {
		opts.Seed = 1
	}
	seed := uint64(opts.Seed)
	var chachaSeed [32]byte
	for i := range 8 {
		chachaSeed[i] = byte(seed >> (8 * i))
	}
	s := &Server{
		hubID:    opts.HubID,
		pageSize: opts.PageSize,
		maxCalls: max(opts.MaxCalls, 0),
		apiKey:   opts.APIKey,
		faults:   opts.Faults,
		rngs: map[string]*rand.Rand{
			// activate keeps the stream it always had, so that old seeds meet the same faults.
			versori.OpActivate:         rand.New(rand.NewPCG(seed, 0x5eed)),
			versori.OpCreateEndUser:    rand.New(rand.NewPCG(seed, 0xc4ea7e)),
			versori.OpUpdateVariables:  rand.New(rand.NewPCG(seed, 0x7a45)),
			versori.OpDeleteActivation: rand.New(rand.NewPCG(seed, 0xde1e7e)),
		},
		listRng:         rand.New(rand.NewPCG(seed, 0x1157)),
		entropy:         ulid.Monotonic(rand.NewChaCha8(chachaSeed), 0),
		scripts:         make(map[scriptKey][]Fault),
		lists:           make(map[versori.Pair][]string),
		forbid:          make(map[versori.Pair]bool),
		quit:            make(chan struct{}),
		requires:        make(map[string][]string),
		goneUser:        make(map[string]bool),
		goneInt:         make(map[string]bool),
		users:           make(map[string]*endUser),
		userByID:        make(map[string]string),
		requireKnown:    opts.RequireKnownUsers,
		userCreates:     make(map[string]int),
		userCreateCalls: make(map[string]int),
		vars:            make(map[string]json.RawMessage),
		varUpdates:      make(map[versori.Pair]int),
		deletes:         make(map[versori.Pair]int),
		acts:            make(map[string]Activation),
		byUser:          make(map[string][]Activation),
		byPair:          make(map[versori.Pair]int),
		byOp:            make(map[string]int),
	}
	if opts.SigningKeyID != "" && opts.PublicKey != nil {
		s.issuer = versori.JWTIssuerPrefix + opts.SigningKeyID
		s.pubKey = opts.PublicKey
		s.jwt = jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()}),
			jwt.WithIssuer(s.issuer),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithTimeFunc(s.now),
		)
	}
	return s
}

// New starts a Server on a local port for the rest of tb, and closes it when tb ends. Calls held by
// HangCommitRate are answered then, so that closing does not wait for HangFor; background commits
// still to come happen after the close.
func New(tb testing.TB, opts Options) *Server {
	tb.Helper()
	s := NewServer(opts)
	s.ts = httptest.NewServer(s)
	tb.Cleanup(func() {
		close(s.quit)
		s.ts.Close()
	})
	return s
}

// URL is the base URL to give versori.Config.BaseURL; it is empty unless the Server was started by New.
func (s *Server) URL() string {
	if s.ts == nil {
		return ""
	}
	return s.ts.URL
}

// APIKey returns the API key accepted now.
func (s *Server) APIKey() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.apiKey
}

// HubID returns the hub the server serves.
func (s *Server) HubID() string { return s.hubID }

// SetAPIKey rotates the accepted key: calls with the old one get 401 from now on.
func (s *Server) SetAPIKey(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apiKey = key
}

// RevokeSigningKey revokes (true) or restores (false) the signing key: while it is revoked, every
// call with a JWT gets 401, whoever it is for, as after an organisation deletes the key.
func (s *Server) RevokeSigningKey(revoked bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revoked = revoked
}

// SetClockSkew sets the server's clock d ahead of the real one (behind when negative). Tokens are
// checked against it, and the Date header of every answer shows it.
func (s *Server) SetClockSkew(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.skew = d
}

// now is the server's clock.
func (s *Server) now() time.Time {
	s.mu.Lock()
	d := s.skew
	s.mu.Unlock()
	return time.Now().Add(d)
}

// SetFaults replaces the faults in force; calls already waiting keep the faults they started with.
func (s *Server) SetFaults(f Faults) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = f
}

// CurrentFaults returns the faults in force.
func (s *Server) CurrentFaults() Faults {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults
}

// Script queues faults for p's next POST /activations calls, one per call, ahead of the fault rates.
// It is ScriptOp(versori.OpActivate, p, faults...).
func (s *Server) Script(p versori.Pair, faults ...Fault) {
	s.ScriptOp(versori.OpActivate, p, faults...)
}

// ScriptOp queues faults for the next calls of the write operation op about p, one per call, ahead of
// the fault rates: versori.OpActivate, OpCreateEndUser (p.UserID is the external id created, and
// p.IntegrationID is ""), OpUpdateVariables or OpDeleteActivation (p is the activation's pair). It
// panics on another op, which no call would ever consume.
func (s *Server) ScriptOp(op string, p versori.Pair, faults ...Fault) {
	if !slices.Contains(writeOps, op) {
		panic("versoritest: ScriptOp of " + strconv.Quote(op) + ", which is not a write operation")
	}
	p = canonPair(p)
	key := scriptKey{op, p}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scripts[key] = append(s.scripts[key], faults...)
}

// ScriptList queues raw bodies to answer, with 200, to p's next list calls instead of the page, one
// per call, ahead of Faults.BadListRate. A list call is for the pair of the user in its path and its
// integration_id query (IntegrationID "" when the query has none). The bodies are sent as they are,
// so they can be any shape, or not JSON at all.
func (s *Server) ScriptList(p versori.Pair, bodies ...string) {
	p = canonPair(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lists[p] = append(s.lists[p], bodies...)
}

// Forbid makes every POST /activations for p answer 403, ahead of scripts and fault rates, as the
// API does when this end user may not use this integration. The API key keeps working for every
// other call, p's list included.
func (s *Server) Forbid(p versori.Pair) {
	p = canonPair(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forbid[p] = true
}

// PendingCommits returns how many background commits (Faults.LateCommitRate, Faults.HangCommitRate,
// Fault.CommitAfter) are scheduled and not yet done. A test waits for 0 before counting activations.
func (s *Server) PendingCommits() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pending
}

// RequireConnection makes POSTs for integrationID fail with 400 "missing connections" unless one of
// their connections binds templateID. Requirements add up.
func (s *Server) RequireConnection(integrationID, templateID string) {
	integrationID, templateID = canonID(integrationID), canonID(templateID)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !slices.Contains(s.requires[integrationID], templateID) {
		s.requires[integrationID] = append(s.requires[integrationID], templateID)
	}
}

// ClearRequirements drops every connection requirement of integrationID.
func (s *Server) ClearRequirements(integrationID string) {
	integrationID = canonID(integrationID)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.requires, integrationID)
}

// ForgetUser makes userID unknown: POSTs for them, their activations list and GET
// /hubs/{hub}/users/{userID} answer 404, and POST /hubs/{hub}/users may create them again (which
// makes them known). Activations they already have are kept, so that tests can still count them.
func (s *Server) ForgetUser(userID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.goneUser[userID] = true
}

// RefuseUnknownUsersTokens makes every JWT call about a forgotten end user (ForgetUser) answer status,
// 401 or 403, instead of 404, as an API may that authenticates a token's subject before anything else:
// a token for a user it does not know is then refused like one signed by a revoked key. 0 restores 404.
func (s *Server) RefuseUnknownUsersTokens(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.goneTokenStatus = status
}

// ForgetIntegration makes integrationID unknown: POSTs for it answer 404.
func (s *Server) ForgetIntegration(integrationID string) {
	integrationID = canonID(integrationID)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.goneInt[integrationID] = true
}

// Seed creates an activation for p, as if an earlier run had activated it, and returns its id. It is
// not recorded as a call and ignores faults, requirements and forgotten users.
func (s *Server) Seed(p versori.Pair) string {
	p = canonPair(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	a, _ := s.commitLocked(p, time.Now())
	return a.ID
}

// Calls returns a copy of the calls recorded, in the order they arrived. A call still in flight is
// listed with Status 0.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	calls := s.calls
	if s.maxCalls > 0 && len(calls) > s.maxCalls {
		calls = calls[len(calls)-s.maxCalls:]
	}
	return slices.Clone(calls)
}

// Activations returns every activation held, duplicates included, oldest first.
func (s *Server) Activations() []Activation {
	s.mu.Lock()
	out := make([]Activation, 0, len(s.acts))
	for _, a := range s.acts {
		out = append(out, a)
	}
	s.mu.Unlock()
	// ULIDs sort by creation time, and the server never lets them go backwards.
	slices.SortFunc(out, func(a, b Activation) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// ActivationCount returns how many activations p has; more than 1 means a duplicate was created.
func (s *Server) ActivationCount(p versori.Pair) int {
	p = canonPair(p)
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byPair[p]
}

// Duplicates returns the pairs with more than one activation, sorted by user then integration.
func (s *Server) Duplicates() []versori.Pair {
	s.mu.Lock()
	var out []versori.Pair
	for p, n := range s.byPair {
		if n > 1 {
			out = append(out, p)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, comparePairs)
	return out
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{
		Calls:          s.nCalls,
		ByOpStatus:     make(map[string]int, len(s.byOp)),
		Activations:    len(s.acts),
		Duplicates:     s.dupPairs,
		Dropped:        s.nDropped,
		PendingCommits: s.pending,
		UsersCreated:   s.nUserCreates,
	}
	for id := range s.users {
		if !s.goneUser[id] {
			st.Users++
		}
	}
	for _, n := range s.userCreates {
		if n > 1 {
			st.UsersCreatedTwice++
		}
	}
	for k, v := range s.byOp {
		st.ByOpStatus[k] = v
	}
	return st
}

// canonID returns a ULID in the canonical, upper-case form the API answers with. Crockford base32 is
// case-insensitive, so "01hzy…" and "01HZY…" must be one id here as they are in the API.
func canonID(id string) string { return strings.ToUpper(id) }

// canonPair returns p with its integration id canonical; user ids are case-sensitive.
func canonPair(p versori.Pair) versori.Pair {
	p.IntegrationID = canonID(p.IntegrationID)
	return p
}

func comparePairs(a, b versori.Pair) int {
	if c := strings.Compare(a.UserID, b.UserID); c != 0 {
		return c
	}
	return strings.Compare(a.IntegrationID, b.IntegrationID)
}

// newIDLocked returns a ULID later than every one issued before, even if the clock steps back.
func (s *Server) newIDLocked(now time.Time) string {
	ms := max(ulid.Timestamp(now), s.lastMS)
	id, err := ulid.New(ms, s.entropy)
	if err != nil {
		// The entropy of this millisecond is spent (2^80 ids in it); move on to the next one.
		ms++
		id = ulid.MustNew(ms, s.entropy)
	}
	s.lastMS = ms
	return id.String()
}

// commitLocked creates an activation for p, and the end user if this is their first.
func (s *Server) commitLocked(p versori.Pair, now time.Time) (Activation, *endUser) {
	now = now.UTC()
	u := s.users[p.UserID]
	if u == nil {
		u = s.newUserLocked(p.UserID, p.UserID, "primary", nil, now)
	}
	a := Activation{ID: s.newIDLocked(now), Pair: p, HubID: s.hubID, CreatedAt: now}
	s.acts[a.ID] = a
	// Ids only grow, so appending keeps the user's list in id order.
	s.byUser[p.UserID] = append(s.byUser[p.UserID], a)
	if s.byPair[p]++; s.byPair[p] == 2 {
		s.dupPairs++
	}
	return a, u
}

// deleteLocked removes the activation id, reporting whether it existed.
func (s *Server) deleteLocked(id string) (Activation, bool) {
	a, ok := s.acts[id]
	if !ok {
		return Activation{}, false
	}
	delete(s.acts, id)
	list := s.byUser[a.Pair.UserID]
	if i, found := slices.BinarySearchFunc(list, id, func(x Activation, id string) int {
		return strings.Compare(x.ID, id)
	}); found {
		s.byUser[a.Pair.UserID] = slices.Delete(list, i, i+1)
	}
	switch s.byPair[a.Pair]--; s.byPair[a.Pair] {
	case 0:
		delete(s.byPair, a.Pair)
	case 1:
		s.dupPairs--
	}
	return a, true
}

// newUserLocked records a new end user, replacing any forgotten one of the same external id, with a
// primary connection named name holding vars.
func (s *Server) newUserLocked(externalID, displayName, name string, vars []versori.ConnectionVariable, now time.Time) *endUser {
	now = now.UTC()
	u := &endUser{id: s.newIDLocked(now), externalID: externalID, displayName: displayName, created: now}
	u.primary = primaryConnection(s.newIDLocked(now), name, vars, now)
	if old := s.users[externalID]; old != nil {
		delete(s.userByID, old.id)
	}
	s.users[externalID] = u
	s.userByID[u.id] = externalID
	delete(s.goneUser, externalID)
	return u
}

// knownLocked reports whether the end user externalID exists (and was not forgotten).
func (s *Server) knownLocked(externalID string) bool {
	return s.users[externalID] != nil && !s.goneUser[externalID]
}

// unknownLocked reports whether calls about externalID's activations answer 404: the user was
// forgotten, or RequireKnownUsers is on and the user does not exist.
func (s *Server) unknownLocked(externalID string) bool {
	return s.goneUser[externalID] || (s.requireKnown && s.users[externalID] == nil)
}

// primaryConnection renders the end user's primary Connection. The spec requires a full Connection
// with at least one credentials property, so it carries an empty action list: the credentials a
// create gave are never echoed.
func primaryConnection(id, name string, vars []versori.ConnectionVariable, now time.Time) json.RawMessage {
	if vars == nil {
		vars = []versori.ConnectionVariable{}
	}
	b, _ := json.Marshal(struct {
		ID          string                       `json:"id"`
		Name        string                       `json:"name"`
		Credentials map[string][]json.RawMessage `json:"credentials"`
		Variables   []versori.ConnectionVariable `json:"variables"`
		CreatedAt   time.Time                    `json:"createdAt"`
		UpdatedAt   time.Time                    `json:"updatedAt"`
	}{id, name, map[string][]json.RawMessage{"action": {}}, vars, now, now})
	return b
}

// startCall records a call on arrival and returns its absolute index, so that it is listed in arrival
// order even when calls finish out of order, and the latency it must wait.
func (s *Server) startCall(c Call) (int, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nCalls++
	idx := s.dropped0 + len(s.calls)
	s.calls = append(s.calls, c)
	if s.maxCalls > 0 && len(s.calls) >= 2*s.maxCalls {
		// Trim in batches so that recording stays O(1) amortised.
		n := len(s.calls) - s.maxCalls
		s.calls = slices.Clone(s.calls[n:])
		s.dropped0 += n
	}
	return idx, s.faults.Latency
}

// finishCall stores the call's outcome and counts it.
func (s *Server) finishCall(idx int, c Call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := idx - s.dropped0; i >= 0 && i < len(s.calls) {
		// A background commit may have marked the record while the handler still held its own copy.
		c.Committed = c.Committed || s.calls[i].Committed
		s.calls[i] = c
	}
	s.byOp[c.Op+" "+strconv.Itoa(c.Status)]++
	if c.Dropped {
		s.nDropped++
	}
}

// markCommittedLocked shows a commit on the call's record at once, so that Calls reflects it while the
// call is still waiting to answer, or after it was answered when the commit came late.
func (s *Server) markCommittedLocked(idx int, p versori.Pair) {
	if i := idx - s.dropped0; i >= 0 && i < len(s.calls) {
		s.calls[i].Committed = true
		s.calls[i].Pair = p
	}
}
