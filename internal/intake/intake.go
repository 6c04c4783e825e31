// Package intake is an HTTP intake for signup events: a vendor's signup flow (or a webhook sender)
// posts activation requests, and the intake validates them and queues their jobs through a
// [producer.Producer], so that every way into the queue has the same duplicate safety.
//
// # Routes
//
//	POST /v1/activations                one activation request (the JSON of versori.ActivationRequest,
//	                                    with an optional endUser beside its fields: versori.DecodeRow)
//	POST /v1/activations:batch          a JSON array of up to Config.MaxBatch requests
//	POST /v1/deactivations              one deactivation: {"userId","integrationId"}
//	POST /v1/deactivations:batch        a JSON array of up to Config.MaxBatch deactivations
//	GET  /v1/activations/{taskId}       a job's state and, once completed, its activation id
//	GET  /healthz                       200 while the process serves
//	GET  /readyz                        200 when Redis answers PING, else 503
//	GET  /metrics                       Prometheus metrics of the intake alone
//
// The /v1 routes need credentials unless none is configured and Config.Insecure is set. A POST takes
// either a Standard Webhooks signature (headers webhook-id, webhook-timestamp, webhook-signature)
// made with any of Config.Secrets, or "Authorization: Bearer <token>" with any of Config.Tokens. A
// GET takes a bearer token only: a signature signs a body and a GET has none, so a signed GET,
// replayed within the signature's 5 minutes, would read any task's status. An intake with secrets
// and no tokens answers every GET 403, saying to configure INTAKE_TOKENS. /healthz, /readyz and
// /metrics need none.
//
// # Answers
//
//	202 {"taskId","batch","status":"enqueued"}         a new job was queued
//	200 {"taskId","batch","status":"duplicate"}        the pair is already queued, running or done
//	200 {"taskId","batch","status":"dead_lettered"}    the pair is in the dead-letter store
//	200 <the first answer's body>                      a replay: the same webhook-id, route, credential and body in the last 10 minutes
//	400 {"error","field"}                              malformed JSON or an invalid field ("index" too in a batch)
//	401 {"error"}                                      missing, forged or stale signature; missing or bad token
//	403 {"error"}                                      a GET to an intake with no bearer tokens (Config.Tokens) to check it against
//	404 {"error"}                                      GET of an unknown task id
//	405 {"error"}                                      a route with the wrong method
//	409 {"error","field"} + Retry-After                the same webhook-id (same route, credential and body) is being handled right now
//	409 {"error","field"}, no Retry-After              the webhook-id was already used, on this route with this credential, for a different body (signed: on any other route)
//	413 {"error"}                                      body over Config.MaxBodyBytes, or a batch over Config.MaxBatch
//	429 {"error"} + Retry-After                        more than Config.MaxConcurrent /v1 requests in flight
//	503 {"error"} + Retry-After                        Redis is unavailable: nothing was queued, retry
//
// Every 2xx means the sender must not retry. Every request is safe to retry whatever the answer:
// the job's task id is derived from the (userId, integrationId) pair and the operation's place among
// the pair's (internal/pairorder), so an activation (or a deactivation) is queued at most once
// however many times, and however concurrently, it is posted in a row.
//
// A deactivation (docs/lifecycle.md) is answered as an activation is, and its body is read as one
// (so a sender may post the activation's body as it is), but its job carries the pair alone: the
// other fields are checked, then dropped. Its job runs after the operations on the pair enqueued
// before it, and the pair's activation, if any, is deleted. A deactivation repeating the pair's
// last operation (a second deactivation) is "duplicate", as a repeated activation is. There is no
// update route: `enqueue file --update-variables` and producer.Update queue updates.
//
// A body is read as a JSONL row of enqueue file is (versori.DecodeRow): UTF-8, field names
// exactly as documented, none twice, none unknown, nothing after the value. A body that
// encoding/json would read one way and the API another ({"userId":"a","USERID":"b"}) is answered
// 400, never guessed at. ULIDs may come in either case; the task id and the queued request hold
// them in upper case, and GET /v1/activations/{taskId} takes the integration id in either case.
//
// # Webhook ids
//
// A request with a webhook-id header is handled once per scope: the id together with the route
// ("/v1/activations", "/v1/activations:batch", "/v1/deactivations" or "/v1/deactivations:batch"),
// or "/v1/*" for a signed request, and the credential that let the request in. A signature covers
// the id, timestamp and body, not the route: a signed id is claimed for every route at once and
// its record keeps the route ("route"), so that a captured signed activation posted to the
// deactivations route (or the other way round) is answered 409, nothing queued. A
// credential is named by its credential id, a hash that never holds the secret: "whsec:" and the
// hex SHA-256 of the decoded key of the webhook secret that verified the signature, "bearer:" and
// the hex SHA-256 of the bearer token, or "open" without authentication (Config.Insecure). So two
// senders, or a token holder's routes, that happen to use the same id are independent, and no token holder
// can claim ids ahead of a signed sender to have its events dropped.
//
// The scope is claimed in Redis (SET NX) under "activator:intake:whid:" followed by the hex SHA-256
// of "<route>|<credential id>|<webhook-id>" (rediskeys.WebhookID), with the JSON value {"bodySha256":"<hex SHA-256 of the
// body>","pending":true} while the request is handled, then {"bodySha256":…,"answer":<the answer's
// body>} for [WebhookIDTTL]. Neither the key nor the value holds a secret or the id's own bytes. A
// repeat in that time with the same body is answered 200 with the stored answer and the header
// Idempotent-Replayed: true, without enqueueing again; with another body it is answered 409 (the
// id was used for a different request; nothing is queued), as payment APIs answer an idempotency
// key reused with other parameters. A repeat while the first is still being handled waits up to 2
// seconds, then is answered 409 with Retry-After. Standard Webhooks senders retry with the same id
// and body; since the signature's timestamp tolerance is 5 minutes, 10 minutes covers every replay
// that could still verify. A sender whose secret is rotated between a request and its retry has
// the retry handled as a new request, which the pair's task id keeps from queueing twice.
//
// # Batches
//
// POST /v1/activations:batch (and /v1/deactivations:batch) is all-or-nothing as to validation: if any element is malformed the
// answer is 400 naming its index ("index": 3, "field": "[3].userId") and nothing is queued. A batch
// of more than Config.MaxBatch elements is answered 413 (split it). Otherwise each request is
// queued in order and the answer is an array of {"taskId","batch","status"}, one per element in
// the same order: 202 when at least one new job was queued, 200 when none was (every pair was
// already queued, done or dead-lettered). If Redis fails part-way the answer is 503 and the whole
// batch can be sent again: the requests already queued come back as "duplicate".
package intake

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/background"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/redisevict"
	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

// WebhookIDTTL is how long a webhook id is remembered, with the answer it got.
const WebhookIDTTL = 10 * time.Minute

// MaxWebhookIDBytes bounds a webhook-id header; a longer one is answered 400.
const MaxWebhookIDBytes = 256

// The routes a webhook id is scoped to: ids of the POST routes are independent, but for signed
// requests, whose ids are claimed in signedScope, one scope for every route.
const (
	routeOne             = "/v1/activations"
	routeBatch           = "/v1/activations:batch"
	routeDeactivate      = "/v1/deactivations"
	routeDeactivateBatch = "/v1/deactivations:batch"
	// signedScope is the scope of every signed request's webhook id, whatever its route.
	signedScope = "/v1/*"
)

const (
	opTimeout      = 10 * time.Second // Redis work of one request
	claimWait      = 2 * time.Second  // how long a repeat waits for an in-flight webhook id
	readyTimeout   = 2 * time.Second
	retryAfterBusy = "1"
	retryAfterDown = "5"
)

// Accepted is the body of a 202 or 200 answer to POST /v1/activations, and one element of the
// answer to POST /v1/activations:batch.
type Accepted struct {
	TaskID string          `json:"taskId"`
	Batch  string          `json:"batch"`
	Status producer.Status `json:"status"`
}

// ErrorBody is the body of every error answer.
type ErrorBody struct {
	Error string `json:"error"`
	// Field is the JSON path of the bad field ("connections[0].templateId"; "[3].userId" in a
	// batch), or the header ("webhook-id"), when one is to blame.
	Field string `json:"field,omitempty"`
	// Index is the position of the bad element of a batch.
	Index *int `json:"index,omitempty"`
	// Limit is the limit a 413 answer exceeded: bytes, or requests in a batch.
	Limit int64 `json:"limit,omitempty"`
}

// TaskStatus is the body of GET /v1/activations/{taskId}.
type TaskStatus struct {
	TaskID string `json:"taskId"`
	// State is asynq's state of the job (pending, active, scheduled, retry, archived, completed), or
	// dead_lettered when the dead-letter store holds it.
	State string `json:"state"`
	// ActivationID is the id of the activation, once the job is completed.
	ActivationID string    `json:"activationId,omitempty"`
	Batch        string    `json:"batch,omitempty"`
	Retried      int       `json:"retried,omitempty"`
	LastError    string    `json:"lastError,omitempty"`
	CompletedAt  time.Time `json:"completedAt,omitzero"`
	// Reason and Attempts are set for dead_lettered only.
	Reason   string `json:"reason,omitempty"`
	Attempts int    `json:"attempts,omitempty"`
}

// Server is the intake. Make one with New and run it with ListenAndServe or Serve, or mount Handler
// on a server of your own.
type Server struct {
	cfg     Config
	rdb     redis.UniversalClient
	prod    *producer.Producer
	insp    *asynq.Inspector
	dead    *deadletter.Store
	auth    *authenticator
	sem     chan struct{}
	metrics *metrics
	evict   *redisevict.Watcher
	handler http.Handler
	log     *slog.Logger
}

// New returns a Server that queues through p and remembers webhook ids in rdb, which must be the
// Redis p uses. It fails with ErrNoAuth when no secret or token is configured and cfg.Insecure is
// not set, and with an error naming the bad setting (never its value) when cfg is not usable.
func New(cfg Config, rdb redis.UniversalClient, p *producer.Producer) (*Server, error) {
	if rdb == nil || p == nil {
		return nil, errors.New("intake: New needs a Redis client and a producer")
	}
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	auth, err := newAuthenticator(cfg.Secrets, cfg.Tokens)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:     cfg,
		rdb:     rdb,
		prod:    p,
		insp:    asynq.NewInspectorFromRedisClient(rdb),
		dead:    deadletter.NewStore(rdb, p.Queue()),
		auth:    auth,
		sem:     make(chan struct{}, cfg.MaxConcurrent),
		metrics: newMetrics(),
		log:     cfg.Logger,
	}
	s.evict = redisevict.NewWatcher(rdb, s.log, func(st redisevict.Status) { s.metrics.setEvictionPolicy(st.Policy) })
	mux := http.NewServeMux()
	mux.Handle("POST "+routeOne, s.limit(s.oneHandler(routeOne, tasks.OpActivate)))
	mux.Handle("POST "+routeBatch, s.limit(s.batchHandler(routeBatch, tasks.OpActivate)))
	mux.Handle("POST "+routeDeactivate, s.limit(s.oneHandler(routeDeactivate, tasks.OpDeactivate)))
	mux.Handle("POST "+routeDeactivateBatch, s.limit(s.batchHandler(routeDeactivateBatch, tasks.OpDeactivate)))
	mux.Handle("GET /v1/activations/{taskId...}", s.limit(s.handleStatus))
	usePost := func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Allow", http.MethodPost)
		s.write(w, &response{code: http.StatusMethodNotAllowed, body: jsonBody(ErrorBody{Error: "use POST"})})
	}
	// Without it, GET /v1/activations would be redirected to the status route with an empty id.
	mux.HandleFunc(routeOne, usePost)
	mux.HandleFunc(routeDeactivate, usePost)
	mux.HandleFunc("GET /healthz", s.handleHealth)
	mux.HandleFunc("GET /readyz", s.handleReady)
	mux.Handle("GET /metrics", s.metrics.handler())
	s.handler = s.metrics.instrument(mux)
	return s, nil
}

// Handler is the server's HTTP handler, with every route.
func (s *Server) Handler() http.Handler { return s.handler }

// Config is the server's configuration, defaults filled in.
func (s *Server) Config() Config { return s.cfg }

// ListenAndServe listens on Config.Addr and serves until ctx is done, then shuts down gracefully.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("intake: %w", err)
	}
	return s.Serve(ctx, ln)
}

// CheckEviction reads Redis's maxmemory-policy, sets activator_redis_eviction_policy and logs a
// policy that evicts (once per change). A failure to reach Redis is returned and changes nothing.
// Serve calls it every Config.EvictionCheckInterval.
func (s *Server) CheckEviction(ctx context.Context) error { return s.evict.Check(ctx) }

// Serve serves on ln until ctx is done, then stops taking connections and waits up to
// Config.ShutdownTimeout for the requests in flight to finish. It returns nil after a clean
// shutdown. It closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if s.auth.open() {
		s.log.Warn("intake is running without authentication (--insecure): anyone who can reach it can queue activations", "addr", ln.Addr().String())
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	bg := background.NewGroup(s.log)
	// Re-read, as the worker does: the policy can change at any time, and the gauge must follow.
	bg.Every("Redis eviction policy check", s.cfg.EvictionCheckInterval, background.AtOnce, s.CheckEviction)
	defer bg.Stop()
	if err := background.Serve(ctx, srv, ln, s.cfg.ShutdownTimeout); err != nil {
		return fmt.Errorf("intake: %w", err)
	}
	return nil
}

// response is an answer, ready to write.
type response struct {
	code       int
	body       []byte
	retryAfter string
	header     map[string]string
	remember   bool // store the body under the request's webhook id
}

// jsonBody is v as an answer's JSON body, ending in a newline. Without HTML escaping: an answer is
// read by programs and people, never put into a page, and "Bearer <token>" should not reach them as
// "Bearer \u003ctoken\u003e".
func jsonBody(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return []byte(`{"error":"internal error"}` + "\n")
	}
	return buf.Bytes()
}

func errorResponse(code int, e ErrorBody) *response {
	return &response{code: code, body: jsonBody(e)}
}

func badRequest(msg, field string) *response {
	return errorResponse(http.StatusBadRequest, ErrorBody{Error: msg, Field: field})
}

func (s *Server) write(w http.ResponseWriter, r *response) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if r.retryAfter != "" {
		h.Set("Retry-After", r.retryAfter)
	}
	for k, v := range r.header {
		h.Set(k, v)
	}
	w.WriteHeader(r.code)
	w.Write(r.body)
}

// unavailable is the answer when Redis fails: nothing was done, the sender retries later.
func (s *Server) unavailable(what string, err error) *response {
	s.log.Warn("intake: Redis is unavailable", "doing", what, "error", err.Error())
	return &response{code: http.StatusServiceUnavailable, retryAfter: retryAfterDown,
		body: jsonBody(ErrorBody{Error: "the queue is unavailable: nothing was queued; retry later"})}
}

// limit answers 429 at once when MaxConcurrent /v1 requests are in flight, rather than queueing.
func (s *Server) limit(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case s.sem <- struct{}{}:
		default:
			// Close the connection rather than read the body of a request that is refused anyway.
			s.write(w, &response{code: http.StatusTooManyRequests, retryAfter: retryAfterBusy,
				header: map[string]string{"Connection": "close"},
				body:   jsonBody(ErrorBody{Error: "too many requests in flight; retry shortly"})})
			return
		}
		s.metrics.inFlight.Inc()
		defer func() {
			s.metrics.inFlight.Dec()
			<-s.sem
		}()
		h(w, r)
	})
}

// readAuthed checks the request's credentials and returns its body and the id of the credential
// that let it in, or the answer to give instead. A bearer token is checked before the body is read;
// a signature needs the body.
func (s *Server) readAuthed(w http.ResponseWriter, r *http.Request) ([]byte, string, *response) {
	a := s.auth
	if a.open() {
		body, resp := s.readBody(w, r)
		return body, credentialOpen, resp
	}
	if tok, ok := bearer(r.Header); ok && len(a.tokens) > 0 {
		cred, ok := a.checkToken(tok)
		if !ok {
			return nil, "", s.unauthorized(errBadToken)
		}
		body, resp := s.readBody(w, r)
		return body, cred, resp
	}
	if len(a.hooks) == 0 {
		return nil, "", s.unauthorized(errNoBearer)
	}
	if r.Header.Get(HeaderWebhookSignature) == "" && r.Header.Get(HeaderWebhookTimestamp) == "" {
		if len(a.tokens) > 0 {
			return nil, "", s.unauthorized(errNoCredentials)
		}
		return nil, "", s.unauthorized(errMissingHeaders)
	}
	body, resp := s.readBody(w, r)
	if resp != nil {
		return nil, "", resp
	}
	cred, err := a.verify(body, r.Header)
	if err != nil {
		return nil, "", s.unauthorized(err)
	}
	return body, cred, nil
}

func (s *Server) unauthorized(err error) *response {
	resp := errorResponse(http.StatusUnauthorized, ErrorBody{Error: err.Error()})
	if len(s.auth.tokens) > 0 {
		resp.header = map[string]string{"WWW-Authenticate": `Bearer realm="intake"`}
	}
	return resp
}

func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *response) {
	limit := s.cfg.MaxBodyBytes
	tooLarge := errorResponse(http.StatusRequestEntityTooLarge,
		ErrorBody{Error: fmt.Sprintf("body is larger than %d bytes", limit), Limit: limit})
	if r.ContentLength > limit {
		return nil, tooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, tooLarge
	case err != nil:
		return nil, badRequest("could not read the body", "")
	}
	return body, nil
}

// replayRecord is the value under a replay key: the digest of the body that claimed the key, and
// the answer once there is one. Keeping the digest is what tells a sender's retry (same body) from
// a reuse of its id for another request (another body), which must not get the first answer.
type replayRecord struct {
	BodySHA256 string `json:"bodySha256"`
	// Route is the route a signed request's id was claimed on (signedScope), whose other routes
	// refuse it; empty in a route's own scope.
	Route   string          `json:"route,omitempty"`
	Pending bool            `json:"pending,omitempty"`
	Answer  json.RawMessage `json:"answer,omitempty"`
}

// once runs do once per webhook id, route and credential: a repeat of the same body in the last
// WebhookIDTTL gets the first answer's body, with 200, and another body under the same id gets 409.
// Requests without a webhook-id header always run do.
func (s *Server) once(r *http.Request, route, credential string, body []byte, do func(context.Context) *response) *response {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), opTimeout)
	defer cancel()
	id := r.Header.Get(HeaderWebhookID)
	if id == "" {
		return do(ctx)
	}
	if len(id) > MaxWebhookIDBytes {
		return badRequest(fmt.Sprintf("webhook-id is longer than %d bytes", MaxWebhookIDBytes), HeaderWebhookID)
	}
	// A signature covers the id, timestamp and body, not the route: a signed id is claimed for
	// every route at once, so that a captured activation posted to the deactivations route (or the
	// other way round) is refused, not handled as a new request.
	scope, claimRoute := route, ""
	if strings.HasPrefix(credential, credentialSecretPrefix) {
		scope, claimRoute = signedScope, route
	}
	key := rediskeys.WebhookID(scope, credential, id)
	sum := sha256.Sum256(body)
	digest := hex.EncodeToString(sum[:])
	pending, err := json.Marshal(replayRecord{BodySHA256: digest, Route: claimRoute, Pending: true})
	if err != nil {
		return s.unavailable("claiming a webhook id", fmt.Errorf("encoding the claim: %w", err))
	}
	pendingTTL := max(time.Minute, s.cfg.WriteTimeout)
	deadline := time.Now().Add(claimWait)
	for {
		claimed, err := s.rdb.SetNX(ctx, key, pending, pendingTTL).Result()
		if err != nil {
			return s.unavailable("claiming a webhook id", err)
		}
		if claimed {
			break
		}
		v, err := s.rdb.Get(ctx, key).Bytes()
		if errors.Is(err, redis.Nil) {
			// The request that held it failed and let go: claim it again, below the deadline.
		} else if err != nil {
			return s.unavailable("reading a webhook id", err)
		} else {
			var rec replayRecord
			// A record that does not read (another version's) is treated as another request's: the
			// one answer that can never give this request someone else's result.
			bad := json.Unmarshal(v, &rec) != nil
			if !bad && rec.Route != claimRoute {
				return errorResponse(http.StatusConflict, ErrorBody{Field: HeaderWebhookID,
					Error: "webhook-id was already used for a different request, on another route (a signature does not cover the route); send a new webhook-id for a new request"})
			}
			if bad || rec.BodySHA256 != digest {
				return errorResponse(http.StatusConflict, ErrorBody{Field: HeaderWebhookID,
					Error: "webhook-id was already used for a different request (another body); send a new webhook-id for a new request"})
			}
			if !rec.Pending {
				return &response{code: http.StatusOK, body: append(rec.Answer, '\n'), header: map[string]string{"Idempotent-Replayed": "true"}}
			}
		}
		if time.Now().After(deadline) {
			return &response{code: http.StatusConflict, retryAfter: retryAfterBusy,
				body: jsonBody(ErrorBody{Error: "a request with this webhook-id is being handled; retry shortly", Field: HeaderWebhookID})}
		}
		select {
		case <-time.After(50 * time.Millisecond):
		case <-r.Context().Done():
			return s.unavailable("waiting for a webhook id", r.Context().Err())
		}
	}
	resp := do(ctx)
	if resp.remember {
		rec, err := json.Marshal(replayRecord{BodySHA256: digest, Route: claimRoute, Answer: bytes.TrimSuffix(resp.body, []byte("\n"))})
		if err == nil {
			err = s.rdb.Set(ctx, key, rec, WebhookIDTTL).Err()
		}
		if err != nil {
			// The job is queued; a replay of the id finds the pair a duplicate instead, once the
			// claim expires.
			s.log.Warn("intake: could not remember a webhook id", "error", err.Error())
		}
	} else if err := s.rdb.Del(ctx, key).Err(); err != nil {
		s.log.Warn("intake: could not release a webhook id", "error", err.Error())
	}
	return resp
}

// row is one request of a body: the activation request, and its end user or the job's operation.
type row struct {
	req  versori.ActivationRequest
	opts []producer.Option
}

// enqueue queues r's job, tagged with the server's batch id.
func (s *Server) enqueue(ctx context.Context, r row) (Accepted, error) {
	start := time.Now()
	res, err := s.prod.Enqueue(ctx, r.req, append(r.opts, producer.WithBatch(s.cfg.Batch))...)
	if err != nil {
		s.metrics.observeEnqueue(outcomeError, start)
		return Accepted{TaskID: res.TaskID, Batch: s.cfg.Batch}, err
	}
	s.metrics.observeEnqueue(string(res.Status), start)
	return Accepted{TaskID: res.TaskID, Batch: s.cfg.Batch, Status: res.Status}, nil
}

// enqueueFailed is the answer to a failed enqueue of the request at index (-1: not in a batch).
func (s *Server) enqueueFailed(err error, index int) *response {
	var ve *versori.ValidationError
	if !errors.As(err, &ve) {
		return s.unavailable("enqueueing", err)
	}
	// Requests are validated before they are enqueued (their credentials too), so this is not
	// expected.
	if index < 0 {
		return badRequest(ve.Error(), ve.Field)
	}
	prefix := "[" + strconv.Itoa(index) + "]."
	return errorResponse(http.StatusBadRequest, ErrorBody{Error: prefix + ve.Error(), Field: prefix + ve.Field, Index: &index})
}

// oneHandler handles POST route, one request whose job does op.
func (s *Server) oneHandler(route string, op tasks.Op) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, credential, resp := s.readAuthed(w, r)
		if resp == nil {
			var one row
			one, resp = decodeOne(body, op)
			if resp == nil {
				if err := s.prod.CheckSecrets(one.req, one.opts...); err != nil {
					resp = s.enqueueFailed(err, -1)
				}
			}
			if resp == nil {
				resp = s.once(r, route, credential, body, func(ctx context.Context) *response {
					acc, err := s.enqueue(ctx, one)
					if err != nil {
						return s.enqueueFailed(err, -1)
					}
					code := http.StatusOK
					if acc.Status == producer.Enqueued {
						code = http.StatusAccepted
					}
					return &response{code: code, body: jsonBody(acc), remember: true}
				})
			}
		}
		s.write(w, resp)
	}
}

// batchHandler handles POST route, a batch of requests whose jobs do op.
func (s *Server) batchHandler(route string, op tasks.Op) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, credential, resp := s.readAuthed(w, r)
		if resp == nil {
			var rows []row
			rows, resp = s.decodeBatch(body, op)
			for i := 0; resp == nil && i < len(rows); i++ {
				// All of them before any is queued, as decodeBatch validates them.
				if err := s.prod.CheckSecrets(rows[i].req, rows[i].opts...); err != nil {
					resp = s.enqueueFailed(err, i)
				}
			}
			if resp == nil {
				resp = s.once(r, route, credential, body, func(ctx context.Context) *response {
					out := make([]Accepted, len(rows))
					code := http.StatusOK
					for i, one := range rows {
						acc, err := s.enqueue(ctx, one)
						if err != nil {
							return s.enqueueFailed(err, i)
						}
						if acc.Status == producer.Enqueued {
							code = http.StatusAccepted
						}
						out[i] = acc
					}
					return &response{code: code, body: jsonBody(out), remember: true}
				})
			}
		}
		s.write(w, resp)
	}
}

// readerAuthed checks the credentials of a request that reads (GET): a bearer token, never a
// signature, which signs only a body. It returns the answer to give instead, or nil.
func (s *Server) readerAuthed(r *http.Request) *response {
	a := s.auth
	tok, ok := bearer(r.Header)
	switch {
	case a.open():
		return nil
	case len(a.tokens) == 0:
		return errorResponse(http.StatusForbidden, ErrorBody{Error: string(errReadsNeedTokens)})
	case !ok:
		return s.unauthorized(errReadNoBearer)
	}
	if _, ok := a.checkToken(tok); !ok {
		return s.unauthorized(errBadToken)
	}
	return nil
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	if resp := s.readerAuthed(r); resp != nil {
		s.write(w, resp)
		return
	}
	id := r.PathValue("taskId")
	canon := tasks.CanonicalTaskID(id)
	resp := s.status(r.Context(), canon)
	if resp.code == http.StatusNotFound && canon != id {
		// A job queued before task ids were canonical keeps the id it was queued under.
		resp = s.status(r.Context(), id)
	}
	s.write(w, resp)
}

func (s *Server) status(ctx context.Context, id string) *response {
	notFound := errorResponse(http.StatusNotFound, ErrorBody{Error: "no such task", Field: "taskId"})
	if id == "" {
		return notFound
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	entries, err := s.dead.Get(ctx, id)
	if err != nil {
		return s.unavailable("reading the dead-letter store", err)
	}
	if len(entries) > 0 {
		e := entries[0]
		return &response{code: http.StatusOK, body: jsonBody(TaskStatus{TaskID: id, State: string(producer.DeadLettered),
			Batch: e.Batch, LastError: e.Error, Reason: string(e.Reason), Attempts: e.Attempts})}
	}
	info, err := s.insp.GetTaskInfo(s.prod.Queue(), id)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return notFound
	case err != nil:
		return s.unavailable("inspecting a task", err)
	}
	st := TaskStatus{TaskID: id, State: info.State.String(), Retried: info.Retried, LastError: info.LastErr}
	var pl struct {
		Batch string `json:"batch"`
	}
	if json.Unmarshal(info.Payload, &pl) == nil { // only the batch: the payload holds credentials
		st.Batch = pl.Batch
	}
	if info.State == asynq.TaskStateCompleted {
		st.ActivationID = string(info.Result)
		st.CompletedAt = info.CompletedAt.UTC()
	}
	return &response{code: http.StatusOK, body: jsonBody(st)}
}

func (s *Server) handleHealth(w http.ResponseWriter, _ *http.Request) {
	s.write(w, &response{code: http.StatusOK, body: []byte("{\"status\":\"ok\"}\n")})
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		s.write(w, &response{code: http.StatusServiceUnavailable, retryAfter: retryAfterDown,
			body: jsonBody(ErrorBody{Error: "Redis does not answer"})})
		return
	}
	s.write(w, &response{code: http.StatusOK, body: []byte("{\"status\":\"ok\"}\n")})
}

// decodeOne decodes and validates the body of a POST of one request whose job does op, with the
// one strict decoder every way into the queue shares (versori.DecodeRow), so that a body that
// could be read two ways is refused rather than guessed at.
func decodeOne(body []byte, op tasks.Op) (row, *response) {
	if !utf8.Valid(body) {
		// encoding/json would read a bad byte as U+FFFD, so that two user ids could become one.
		return row{}, badRequest(notUTF8, "")
	}
	one, err := decodeRow(body, op)
	if err != nil {
		field, msg := describe(err, "")
		return one, badRequest(msg, field)
	}
	return one, nil
}

// decodeRow reads one request of a body, for a job that does op. A deactivation's other fields are
// read and checked, and dropped (producer.Deactivate), so that a sender may post the activation's
// body as it is.
func decodeRow(b []byte, op tasks.Op) (row, error) {
	req, end, err := versori.DecodeRow(b)
	if err != nil {
		return row{req: req}, err
	}
	one := row{req: req}
	switch op {
	case tasks.OpDeactivate:
		one.opts = append(one.opts, producer.Deactivate())
	case tasks.OpUpdate:
		one.opts = append(one.opts, producer.Update())
	}
	if end != nil && op != tasks.OpDeactivate {
		one.opts = append(one.opts, producer.WithEndUser(*tasks.EndUserFrom(end)))
	}
	return one, nil
}

const notUTF8 = "body is not valid UTF-8"

// describe returns the field to blame for a decoding error and the answer's message, with the
// field prefixed by prefix ("[3]" in a batch).
func describe(err error, prefix string) (field, msg string) {
	var ve *versori.ValidationError
	if !errors.As(err, &ve) {
		ve = &versori.ValidationError{Reason: err.Error()}
	}
	field = ve.Field
	switch {
	case prefix == "":
	case field == "":
		field = prefix
	default:
		field = prefix + "." + field
	}
	if field == "" {
		return "", "body: " + ve.Reason
	}
	return field, field + ": " + ve.Reason
}

// decodeBatch decodes and validates the body of POST /v1/activations:batch: all of it, before
// anything is queued. The array is split into its elements first, so that its shape and size are
// refused before any element, and each element is then read as POST /v1/activations reads a body.
func (s *Server) decodeBatch(body []byte, op tasks.Op) ([]row, *response) {
	if !utf8.Valid(body) {
		return nil, badRequest(notUTF8, "")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	notArray := badRequest("body must be a JSON array of activation requests", "")
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
		return nil, notArray
	}
	bad := func(i int, field, msg string) *response {
		return errorResponse(http.StatusBadRequest, ErrorBody{Error: msg, Field: field, Index: &i})
	}
	var elems []json.RawMessage
	for dec.More() {
		i := len(elems)
		if i == s.cfg.MaxBatch {
			return nil, errorResponse(http.StatusRequestEntityTooLarge, ErrorBody{
				Error: fmt.Sprintf("batch has more than %d requests: split it", s.cfg.MaxBatch), Limit: int64(s.cfg.MaxBatch)})
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			prefix := "[" + strconv.Itoa(i) + "]"
			return nil, bad(i, prefix, prefix+": invalid JSON: "+strings.TrimPrefix(err.Error(), "json: "))
		}
		elems = append(elems, raw)
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim(']') {
		return nil, notArray
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, badRequest("body holds more than one JSON value", "")
	}
	if len(elems) == 0 {
		return nil, badRequest("batch is empty", "")
	}
	rows := make([]row, len(elems))
	for i, raw := range elems {
		one, err := decodeRow(raw, op)
		if err != nil {
			field, msg := describe(err, "["+strconv.Itoa(i)+"]")
			return nil, bad(i, field, msg)
		}
		rows[i] = one
	}
	return rows, nil
}
