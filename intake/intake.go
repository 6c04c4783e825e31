// Package intake is an HTTP intake for signup events: a vendor's signup flow (or a webhook sender)
// posts activation requests, and the intake validates them and queues their jobs through a
// [producer.Producer], so that every way into the queue has the same duplicate safety.
//
// # Routes
//
//	POST /v1/activations                one activation request (the JSON of versori.ActivationRequest)
//	POST /v1/activations:batch          a JSON array of up to Config.MaxBatch requests
//	GET  /v1/activations/{taskId}       a job's state and, once completed, its activation id
//	GET  /healthz                       200 while the process serves
//	GET  /readyz                        200 when Redis answers PING, else 503
//	GET  /metrics                       Prometheus metrics of the intake alone
//
// The /v1 routes need credentials unless none is configured and Config.Insecure is set: either a
// Standard Webhooks signature (headers webhook-id, webhook-timestamp, webhook-signature) made with
// any of Config.Secrets, or "Authorization: Bearer <token>" with any of Config.Tokens. A GET signed
// the Standard Webhooks way is signed over the empty body. /healthz, /readyz and /metrics need none.
//
// # Answers
//
//	202 {"taskId","batch","status":"enqueued"}         a new job was queued
//	200 {"taskId","batch","status":"duplicate"}        the pair is already queued, running or done
//	200 {"taskId","batch","status":"dead_lettered"}    the pair is in the dead-letter store
//	200 <the first answer's body>                      a replay of a webhook-id seen in the last 10 minutes
//	400 {"error","field"}                              malformed JSON or an invalid field ("index" too in a batch)
//	401 {"error"}                                      missing, forged or stale signature; missing or bad token
//	404 {"error"}                                      GET of an unknown task id
//	405 {"error"}                                      a route with the wrong method
//	409 {"error"} + Retry-After                        the same webhook-id is being handled right now
//	413 {"error"}                                      body over Config.MaxBodyBytes, or a batch over Config.MaxBatch
//	429 {"error"} + Retry-After                        more than Config.MaxConcurrent /v1 requests in flight
//	503 {"error"} + Retry-After                        Redis is unavailable: nothing was queued, retry
//
// Every 2xx means the sender must not retry. Every request is safe to retry whatever the answer:
// the job's task id is derived from the (userId, integrationId) pair, so a pair is queued at most
// once however many times, and however concurrently, it is posted.
//
// # Webhook ids
//
// A request with a webhook-id header is handled once: the id is claimed in Redis (SET NX) under
// [WebhookIDKeyPrefix]+id, and the answer's body is stored there for [WebhookIDTTL]. A repeat of
// the id in that time is answered 200 with the stored body and the header Idempotent-Replayed: true,
// without enqueueing again. Standard Webhooks senders retry with the same id; since the signature's
// timestamp tolerance is 5 minutes, 10 minutes covers every replay that could still verify.
//
// # Batches
//
// POST /v1/activations:batch is all-or-nothing as to validation: if any element is malformed the
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
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/producer"
	"github.com/versori/activator/versori"
)

// WebhookIDKeyPrefix is the Redis key prefix under which seen webhook ids are remembered.
const WebhookIDKeyPrefix = "activator:intake:whid:"

// WebhookIDTTL is how long a webhook id is remembered, with the answer it got.
const WebhookIDTTL = 10 * time.Minute

// MaxWebhookIDBytes bounds a webhook-id header; a longer one is answered 400.
const MaxWebhookIDBytes = 256

// pendingMarker is the value of a claimed webhook id whose request is still being handled. An
// answer body is JSON, so it can never be mistaken for one.
const pendingMarker = "pending"

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
	// Field is the JSON path of the bad field ("connections.templateId"; "[3].userId" in a batch),
	// or the header ("webhook-id"), when one is to blame.
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
	auth    *authenticator
	sem     chan struct{}
	metrics *metrics
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
	if err := cfg.check(); err != nil {
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
		auth:    auth,
		sem:     make(chan struct{}, cfg.MaxConcurrent),
		metrics: newMetrics(),
		log:     cfg.Logger,
	}
	mux := http.NewServeMux()
	mux.Handle("POST /v1/activations", s.limit(s.handleActivation))
	mux.Handle("POST /v1/activations:batch", s.limit(s.handleBatch))
	mux.Handle("GET /v1/activations/{taskId...}", s.limit(s.handleStatus))
	// Without it, GET /v1/activations would be redirected to the status route with an empty id.
	mux.HandleFunc("/v1/activations", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Allow", http.MethodPost)
		s.write(w, &response{code: http.StatusMethodNotAllowed, body: jsonBody(ErrorBody{Error: "use POST"})})
	})
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
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("intake: serving: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	<-errc // http.ErrServerClosed
	if err != nil {
		srv.Close()
		return fmt.Errorf("intake: requests still in flight after %s: %w", s.cfg.ShutdownTimeout, err)
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

func jsonBody(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(`{"error":"internal error"}`)
	}
	return append(b, '\n')
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

// readAuthed checks the request's credentials and returns its body, or the answer to give instead.
// A bearer token is checked before the body is read; a signature needs the body.
func (s *Server) readAuthed(w http.ResponseWriter, r *http.Request) ([]byte, *response) {
	a := s.auth
	if a.open() {
		return s.readBody(w, r)
	}
	if tok, ok := bearer(r.Header); ok && len(a.tokens) > 0 {
		if !a.checkToken(tok) {
			return nil, s.unauthorized(errBadToken)
		}
		return s.readBody(w, r)
	}
	if len(a.hooks) == 0 {
		return nil, s.unauthorized(errNoBearer)
	}
	if r.Header.Get(HeaderWebhookSignature) == "" && r.Header.Get(HeaderWebhookTimestamp) == "" {
		if len(a.tokens) > 0 {
			return nil, s.unauthorized(errNoCredentials)
		}
		return nil, s.unauthorized(errMissingHeaders)
	}
	body, resp := s.readBody(w, r)
	if resp != nil {
		return nil, resp
	}
	if err := a.verify(body, r.Header); err != nil {
		return nil, s.unauthorized(err)
	}
	return body, nil
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

// once runs do once per webhook id: a request whose id was seen in the last WebhookIDTTL gets the
// first answer's body, with 200. Requests without a webhook-id header always run do.
func (s *Server) once(r *http.Request, do func(context.Context) *response) *response {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), opTimeout)
	defer cancel()
	id := r.Header.Get(HeaderWebhookID)
	if id == "" {
		return do(ctx)
	}
	if len(id) > MaxWebhookIDBytes {
		return badRequest(fmt.Sprintf("webhook-id is longer than %d bytes", MaxWebhookIDBytes), HeaderWebhookID)
	}
	key := WebhookIDKeyPrefix + id
	pendingTTL := max(time.Minute, s.cfg.WriteTimeout)
	deadline := time.Now().Add(claimWait)
	for {
		claimed, err := s.rdb.SetNX(ctx, key, pendingMarker, pendingTTL).Result()
		if err != nil {
			return s.unavailable("claiming a webhook id", err)
		}
		if claimed {
			break
		}
		v, err := s.rdb.Get(ctx, key).Result()
		switch {
		case errors.Is(err, redis.Nil):
			// The request that held it failed and let go: claim it again, below the deadline.
		case err != nil:
			return s.unavailable("reading a webhook id", err)
		case v != pendingMarker:
			return &response{code: http.StatusOK, body: []byte(v), header: map[string]string{"Idempotent-Replayed": "true"}}
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
		if err := s.rdb.Set(ctx, key, resp.body, WebhookIDTTL).Err(); err != nil {
			// The job is queued; a replay of the id finds the pair a duplicate instead.
			s.log.Warn("intake: could not remember a webhook id", "error", err.Error())
		}
	} else if err := s.rdb.Del(ctx, key).Err(); err != nil {
		s.log.Warn("intake: could not release a webhook id", "error", err.Error())
	}
	return resp
}

// enqueue queues req's job, tagged with the server's batch id.
func (s *Server) enqueue(ctx context.Context, req versori.ActivationRequest) (Accepted, error) {
	start := time.Now()
	res, err := s.prod.Enqueue(ctx, req, producer.WithBatch(s.cfg.Batch))
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
	// Requests are validated before they are enqueued, so this is not expected.
	if index < 0 {
		return badRequest(ve.Error(), ve.Field)
	}
	prefix := "[" + strconv.Itoa(index) + "]."
	return errorResponse(http.StatusBadRequest, ErrorBody{Error: prefix + ve.Error(), Field: prefix + ve.Field, Index: &index})
}

func (s *Server) handleActivation(w http.ResponseWriter, r *http.Request) {
	body, resp := s.readAuthed(w, r)
	if resp == nil {
		var req versori.ActivationRequest
		req, resp = decodeOne(body)
		if resp == nil {
			resp = s.once(r, func(ctx context.Context) *response {
				acc, err := s.enqueue(ctx, req)
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

func (s *Server) handleBatch(w http.ResponseWriter, r *http.Request) {
	body, resp := s.readAuthed(w, r)
	if resp == nil {
		var reqs []versori.ActivationRequest
		reqs, resp = s.decodeBatch(body)
		if resp == nil {
			resp = s.once(r, func(ctx context.Context) *response {
				out := make([]Accepted, len(reqs))
				code := http.StatusOK
				for i, req := range reqs {
					acc, err := s.enqueue(ctx, req)
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

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	if _, resp := s.readAuthed(w, r); resp != nil {
		s.write(w, resp)
		return
	}
	s.write(w, s.status(r.Context(), r.PathValue("taskId")))
}

func (s *Server) status(ctx context.Context, id string) *response {
	notFound := errorResponse(http.StatusNotFound, ErrorBody{Error: "no such task", Field: "taskId"})
	if id == "" {
		return notFound
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	entries, err := s.prod.Store().Get(ctx, id)
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

// decodeOne decodes and validates the body of POST /v1/activations.
func decodeOne(body []byte) (versori.ActivationRequest, *response) {
	var req versori.ActivationRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		msg, field := describeDecodeError(err, "")
		return req, badRequest(msg, field)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return req, badRequest("body holds more than one JSON value", "")
	}
	if err := req.Validate(); err != nil {
		var ve *versori.ValidationError
		if errors.As(err, &ve) {
			return req, badRequest(ve.Error(), ve.Field)
		}
		return req, badRequest(err.Error(), "")
	}
	return req, nil
}

// decodeBatch decodes and validates the body of POST /v1/activations:batch: all of it, before
// anything is queued.
func (s *Server) decodeBatch(body []byte) ([]versori.ActivationRequest, *response) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	notArray := badRequest("body must be a JSON array of activation requests", "")
	if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
		return nil, notArray
	}
	bad := func(i int, msg, field string) *response {
		return errorResponse(http.StatusBadRequest, ErrorBody{Error: msg, Field: field, Index: &i})
	}
	var reqs []versori.ActivationRequest
	for dec.More() {
		i := len(reqs)
		if i == s.cfg.MaxBatch {
			return nil, errorResponse(http.StatusRequestEntityTooLarge, ErrorBody{
				Error: fmt.Sprintf("batch has more than %d requests: split it", s.cfg.MaxBatch), Limit: int64(s.cfg.MaxBatch)})
		}
		prefix := "[" + strconv.Itoa(i) + "]"
		var req versori.ActivationRequest
		if err := dec.Decode(&req); err != nil {
			msg, field := describeDecodeError(err, prefix)
			return nil, bad(i, msg, field)
		}
		reqs = append(reqs, req)
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim(']') {
		return nil, notArray
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, badRequest("body holds more than one JSON value", "")
	}
	if len(reqs) == 0 {
		return nil, badRequest("batch is empty", "")
	}
	for i, req := range reqs {
		if err := req.Validate(); err != nil {
			prefix := "[" + strconv.Itoa(i) + "]"
			var ve *versori.ValidationError
			if errors.As(err, &ve) {
				return nil, bad(i, prefix+"."+ve.Error(), prefix+"."+ve.Field)
			}
			return nil, bad(i, prefix+": "+err.Error(), prefix)
		}
	}
	return reqs, nil
}

// describeDecodeError turns a JSON decoding error into a message and the field to blame, prefixed
// with prefix ("[3]" in a batch). encoding/json reports a nested field's path without array
// indices ("connections.templateId") and an unknown field by its name alone.
func describeDecodeError(err error, prefix string) (msg, field string) {
	join := func(f string) string {
		switch {
		case prefix == "":
			return f
		case f == "":
			return prefix
		}
		return prefix + "." + f
	}
	what := "body"
	if prefix != "" {
		what = "request " + prefix
	}
	var (
		se *json.SyntaxError
		te *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, io.EOF):
		return what + " is empty", join("")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return what + " is not valid JSON: it ends early", join("")
	case errors.As(err, &se):
		return fmt.Sprintf("%s is not valid JSON: %v (at byte %d)", what, se, se.Offset), join("")
	case errors.As(err, &te):
		if te.Field == "" {
			return what + " must be a JSON object (an activation request)", join("")
		}
		f := join(te.Field)
		return fmt.Sprintf("%s: is a JSON %s, want %s", f, te.Value, kindWord(te.Type)), f
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if n, uerr := strconv.Unquote(name); uerr == nil {
			name = n
		}
		f := join(name)
		return f + ": unknown field", f
	}
	return what + " is not valid JSON: " + err.Error(), join("")
}

// kindWord names what JSON value a Go type takes.
func kindWord(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	if t == reflect.TypeFor[json.RawMessage]() {
		return "a JSON object"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "an array"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "a number"
	}
	return "another type"
}
