package intake_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/versori/activator/deadletter"
	"github.com/versori/activator/intake"
	"github.com/versori/activator/internal/redistest"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

const (
	queue       = "activations"
	integration = "01JDCRM0000000000000000000"
	template    = "01JDCRM0000000000000000001"
	connection  = "01JDCRM0000000000000000002"
	tokenA      = "tok-aaaaaaaaaaaaaaaaaaaaaaaa"
	tokenB      = "tok-bbbbbbbbbbbbbbbbbbbbbbbb"
)

// newSecret returns a fresh Standard Webhooks secret, whsec_ and a base64 32-byte key.
func newSecret(t testing.TB) string {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(key)
}

// syncBuffer is a bytes.Buffer safe for concurrent writes, for capturing logs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is one test's intake: a server over real HTTP, on its own Redis database.
type env struct {
	t    *testing.T
	db   *redistest.DB
	prod *producer.Producer
	srv  *intake.Server
	http *httptest.Server
	logs *syncBuffer
}

// start runs an intake on a fresh database. cfg gets a logger that captures its output.
func start(t *testing.T, cfg intake.Config) *env {
	t.Helper()
	db := redistest.New(t)
	return startOn(t, db, db.Client, cfg)
}

// startOn runs an intake whose producer and webhook-id store use rdb.
func startOn(t *testing.T, db *redistest.DB, rdb redis.UniversalClient, cfg intake.Config) *env {
	t.Helper()
	logs := &syncBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	prod := producer.New(rdb, producer.Config{Queue: queue})
	srv, err := intake.New(cfg, rdb, prod)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &env{t: t, db: db, prod: prod, srv: srv, http: hs, logs: logs}
}

func request(user string) versori.ActivationRequest {
	return versori.ActivationRequest{UserID: user, IntegrationID: integration,
		Connections: []versori.ActivationConnection{{TemplateID: template, ConnectionID: connection}}}
}

func body(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// answer is one HTTP answer.
type answer struct {
	code   int
	header http.Header
	body   []byte
}

func (a answer) String() string { return fmt.Sprintf("%d %s", a.code, a.body) }

// do sends a request to the intake with the given headers.
func (e *env) do(method, path string, b []byte, h http.Header) answer {
	e.t.Helper()
	req, err := http.NewRequest(method, e.http.URL+path, bytes.NewReader(b))
	if err != nil {
		e.t.Fatal(err)
	}
	for k, vs := range h {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.http.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return answer{code: resp.StatusCode, header: resp.Header, body: rb}
}

func (e *env) post(path string, b []byte, h http.Header) answer {
	e.t.Helper()
	return e.do(http.MethodPost, path, b, h)
}

// signed returns Standard Webhooks headers for b, signed with secret as of ts.
func signed(t testing.TB, secret, id string, ts time.Time, b []byte) http.Header {
	t.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := wh.Sign(id, ts, b)
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set(intake.HeaderWebhookID, id)
	h.Set(intake.HeaderWebhookTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(intake.HeaderWebhookSignature, sig)
	return h
}

func bearerHeader(tok string) http.Header {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+tok)
	return h
}

func decode[T any](t testing.TB, a answer) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(a.body, &v); err != nil {
		t.Fatalf("answer %s: %v", a, err)
	}
	return v
}

// wantAccepted checks a 202 or 200 answer of POST /v1/activations.
func wantAccepted(t testing.TB, a answer, code int, user string, status producer.Status) intake.Accepted {
	t.Helper()
	if a.code != code {
		t.Fatalf("answer %s, want %d", a, code)
	}
	acc := decode[intake.Accepted](t, a)
	want := intake.Accepted{TaskID: tasks.TaskID(request(user).Pair()), Batch: intake.DefaultBatch, Status: status}
	if acc != want {
		t.Fatalf("body %+v, want %+v", acc, want)
	}
	return acc
}

func wantError(t testing.TB, a answer, code int, field string) intake.ErrorBody {
	t.Helper()
	if a.code != code {
		t.Fatalf("answer %s, want %d", a, code)
	}
	eb := decode[intake.ErrorBody](t, a)
	if eb.Error == "" {
		t.Fatalf("answer %s has no error message", a)
	}
	if eb.Field != field {
		t.Fatalf("answer %s: field %q, want %q", a, eb.Field, field)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	return eb
}

// taskIDs lists every task in the queue, whatever its state.
func (e *env) taskIDs() []string {
	e.t.Helper()
	insp := asynq.NewInspectorFromRedisClient(e.db.Client)
	var ids []string
	for _, list := range []func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error){
		insp.ListPendingTasks, insp.ListActiveTasks, insp.ListScheduledTasks, insp.ListRetryTasks,
		insp.ListArchivedTasks, insp.ListCompletedTasks,
	} {
		infos, err := list(queue, asynq.PageSize(1000))
		if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
			e.t.Fatal(err)
		}
		for _, in := range infos {
			ids = append(ids, in.ID)
		}
	}
	return ids
}

func (e *env) wantTasks(ids ...string) {
	e.t.Helper()
	got := e.taskIDs()
	if fmt.Sprint(got) != fmt.Sprint(ids) {
		e.t.Fatalf("tasks in the queue: %q, want %q", got, ids)
	}
}

func taskID(user string) string { return tasks.TaskID(request(user).Pair()) }

func TestNewRefusesToStartWithoutCredentials(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	p := producer.New(db.Client, producer.Config{Queue: queue})
	if _, err := intake.New(intake.Config{}, db.Client, p); !errors.Is(err, intake.ErrNoAuth) {
		t.Fatalf("New without secret, token or Insecure: %v, want ErrNoAuth", err)
	}
	if _, err := intake.New(intake.Config{Insecure: true}, db.Client, p); err != nil {
		t.Fatalf("New with Insecure: %v", err)
	}
	if _, err := intake.New(intake.Config{Secrets: []string{newSecret(t)}}, db.Client, p); err != nil {
		t.Fatalf("New with a secret: %v", err)
	}
	if _, err := intake.New(intake.Config{Tokens: []string{tokenA}}, db.Client, p); err != nil {
		t.Fatalf("New with a token: %v", err)
	}
	// Bad secrets and tokens are refused by position, never by value.
	for _, tc := range []struct {
		name string
		cfg  intake.Config
		leak string
	}{
		{"no whsec_ prefix", intake.Config{Secrets: []string{newSecret(t), "c2VjcmV0LXNlY3JldC1zZWNyZXQ="}}, "c2VjcmV0LXNlY3JldC1zZWNyZXQ="},
		{"not base64", intake.Config{Secrets: []string{"whsec_not*base64*at*all-SECRETVALUE"}}, "SECRETVALUE"},
		{"short key", intake.Config{Secrets: []string{"whsec_" + base64.StdEncoding.EncodeToString([]byte("SHORTKEY"))}}, "U0hPUlRLRVk"},
		{"short token", intake.Config{Tokens: []string{"SHORTTOKEN"}}, "SHORTTOKEN"},
		{"token with space", intake.Config{Tokens: []string{"SPACED TOKEN VALUE 123456"}}, "SPACED"},
	} {
		_, err := intake.New(tc.cfg, db.Client, p)
		if err == nil {
			t.Errorf("%s: New succeeded", tc.name)
			continue
		}
		if strings.Contains(err.Error(), tc.leak) {
			t.Errorf("%s: error %q shows the secret", tc.name, err)
		}
	}
	if _, err := intake.New(intake.Config{Insecure: true}, nil, nil); err == nil {
		t.Error("New without Redis or producer succeeded")
	}
}

func TestConfigPrintsWithoutSecrets(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	cfg := intake.Config{Secrets: []string{secret}, Tokens: []string{tokenA}, Addr: "127.0.0.1:9"}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "cfg", cfg)
	j, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprintf("%s", cfg), fmt.Sprintf("%x", cfg), logs.String(), string(j)} {
		if strings.Contains(out, secret) || strings.Contains(out, tokenA) || strings.Contains(out, "whsec_") {
			t.Errorf("config printed with a secret: %s", out)
		}
		if !strings.Contains(out, "127.0.0.1:9") {
			t.Errorf("config printed without its address: %s", out)
		}
	}
}

func TestSplitList(t *testing.T) {
	t.Parallel()
	for in, want := range map[string][]string{
		"":                  nil,
		" , ,":              nil,
		"a":                 {"a"},
		" a , b,,c ":        {"a", "b", "c"},
		"whsec_x=,whsec_y=": {"whsec_x=", "whsec_y="},
	} {
		if got := intake.SplitList(in); fmt.Sprint(got) != fmt.Sprint(want) || len(got) != len(want) {
			t.Errorf("SplitList(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSignatures(t *testing.T) {
	t.Parallel()
	secret1, secret2, secret3 := newSecret(t), newSecret(t), newSecret(t)
	e := start(t, intake.Config{Secrets: []string{secret1, secret2}})
	now := time.Now()
	n := 0
	next := func() (string, []byte) { // a fresh user, so that every accepted request queues a job
		n++
		user := "sig-" + strconv.Itoa(n)
		return user, body(t, request(user))
	}
	id := func() string { return "msg_" + strconv.Itoa(n) }

	t.Run("valid", func(t *testing.T) {
		user, b := next()
		wantAccepted(t, e.post("/v1/activations", b, signed(t, secret1, id(), now, b)), 202, user, producer.Enqueued)
	})
	t.Run("rotation: the second secret verifies too", func(t *testing.T) {
		user, b := next()
		wantAccepted(t, e.post("/v1/activations", b, signed(t, secret2, id(), now, b)), 202, user, producer.Enqueued)
	})
	t.Run("rotation: a third secret does not", func(t *testing.T) {
		_, b := next()
		wantError(t, e.post("/v1/activations", b, signed(t, secret3, id(), now, b)), 401, "")
	})
	t.Run("forged", func(t *testing.T) {
		_, b := next()
		h := signed(t, secret1, id(), now, b)
		h.Set(intake.HeaderWebhookSignature, "v1,"+base64.StdEncoding.EncodeToString(make([]byte, 32)))
		wantError(t, e.post("/v1/activations", b, h), 401, "")
	})
	t.Run("body changed after signing", func(t *testing.T) {
		_, b := next()
		h := signed(t, secret1, id(), now, b)
		other, _ := next()
		wantError(t, e.post("/v1/activations", body(t, request(other)), h), 401, "")
	})
	t.Run("webhook-id changed after signing", func(t *testing.T) {
		_, b := next()
		h := signed(t, secret1, id(), now, b)
		h.Set(intake.HeaderWebhookID, "msg_other")
		wantError(t, e.post("/v1/activations", b, h), 401, "")
	})
	t.Run("stale timestamp", func(t *testing.T) {
		_, b := next()
		eb := wantError(t, e.post("/v1/activations", b, signed(t, secret1, id(), now.Add(-6*time.Minute), b)), 401, "")
		if !strings.Contains(eb.Error, "5 minutes") {
			t.Errorf("error %q does not say the timestamp is out of tolerance", eb.Error)
		}
	})
	t.Run("future timestamp", func(t *testing.T) {
		_, b := next()
		wantError(t, e.post("/v1/activations", b, signed(t, secret1, id(), now.Add(6*time.Minute), b)), 401, "")
	})
	t.Run("timestamp within tolerance", func(t *testing.T) {
		user, b := next()
		wantAccepted(t, e.post("/v1/activations", b, signed(t, secret1, id(), now.Add(-4*time.Minute), b)), 202, user, producer.Enqueued)
	})
	t.Run("timestamp not a number", func(t *testing.T) {
		_, b := next()
		h := signed(t, secret1, id(), now, b)
		h.Set(intake.HeaderWebhookTimestamp, now.Format(time.RFC3339))
		wantError(t, e.post("/v1/activations", b, h), 401, "")
	})
	for _, missing := range []string{intake.HeaderWebhookID, intake.HeaderWebhookTimestamp, intake.HeaderWebhookSignature} {
		t.Run("missing "+missing, func(t *testing.T) {
			_, b := next()
			h := signed(t, secret1, id(), now, b)
			h.Del(missing)
			wantError(t, e.post("/v1/activations", b, h), 401, "")
		})
	}
	t.Run("no headers at all", func(t *testing.T) {
		_, b := next()
		wantError(t, e.post("/v1/activations", b, nil), 401, "")
	})
	t.Run("several signatures, one valid", func(t *testing.T) {
		user, b := next()
		h := signed(t, secret1, id(), now, b)
		good := h.Get(intake.HeaderWebhookSignature)
		forged := signed(t, secret3, id(), now, b).Get(intake.HeaderWebhookSignature)
		h.Set(intake.HeaderWebhookSignature, forged+" v2,abc "+good)
		wantAccepted(t, e.post("/v1/activations", b, h), 202, user, producer.Enqueued)
	})
	t.Run("several signatures, none valid", func(t *testing.T) {
		_, b := next()
		h := signed(t, secret1, id(), now, b)
		forged := signed(t, secret3, id(), now, b).Get(intake.HeaderWebhookSignature)
		h.Set(intake.HeaderWebhookSignature, forged+" "+strings.Replace(forged, "v1,", "v1,A", 1))
		wantError(t, e.post("/v1/activations", b, h), 401, "")
	})
	t.Run("a bearer token is no signature", func(t *testing.T) {
		_, b := next()
		wantError(t, e.post("/v1/activations", b, bearerHeader(tokenA)), 401, "")
	})
	// Only the accepted requests queued a job.
	e.wantTasks(taskID("sig-1"), taskID("sig-2"), taskID("sig-10"), taskID("sig-16"))
	for _, s := range []string{secret1, secret2, secret3, strings.TrimPrefix(secret1, "whsec_")} {
		if strings.Contains(e.logs.String(), s) {
			t.Error("a secret is in the logs")
		}
	}
}

func TestBearerTokens(t *testing.T) {
	t.Parallel()
	e := start(t, intake.Config{Tokens: []string{tokenA, tokenB}})
	b := body(t, request("u-1"))
	wantAccepted(t, e.post("/v1/activations", b, bearerHeader(tokenA)), 202, "u-1", producer.Enqueued)
	b2 := body(t, request("u-2"))
	h := http.Header{}
	h.Set("Authorization", "bearer "+tokenB) // the scheme is case-insensitive
	wantAccepted(t, e.post("/v1/activations", b2, h), 202, "u-2", producer.Enqueued)

	for name, h := range map[string]http.Header{
		"bad token":       bearerHeader("tok-cccccccccccccccccccccccc"),
		"prefix of token": bearerHeader(tokenA[:len(tokenA)-1]),
		"token plus":      bearerHeader(tokenA + "x"),
		"empty token":     bearerHeader(""),
		"no header":       nil,
		"basic scheme":    {"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("u:"+tokenA))}},
		"signature only":  signed(t, newSecret(t), "msg_1", time.Now(), b),
	} {
		a := e.post("/v1/activations", body(t, request("u-bad")), h)
		wantError(t, a, 401, "")
		if !strings.HasPrefix(a.header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: WWW-Authenticate %q", name, a.header.Get("WWW-Authenticate"))
		}
		if strings.Contains(string(a.body), tokenA) {
			t.Errorf("%s: answer shows a token", name)
		}
	}
	e.wantTasks(taskID("u-1"), taskID("u-2"))
	if strings.Contains(e.logs.String(), tokenA) || strings.Contains(e.logs.String(), tokenB) {
		t.Error("a token is in the logs")
	}
}

func TestSecretAndTokenTogether(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	e := start(t, intake.Config{Secrets: []string{secret}, Tokens: []string{tokenA}})
	b1, b2 := body(t, request("u-1")), body(t, request("u-2"))
	wantAccepted(t, e.post("/v1/activations", b1, signed(t, secret, "msg_1", time.Now(), b1)), 202, "u-1", producer.Enqueued)
	wantAccepted(t, e.post("/v1/activations", b2, bearerHeader(tokenA)), 202, "u-2", producer.Enqueued)
	wantError(t, e.post("/v1/activations", b2, nil), 401, "")
	// A bad token is refused even when the request is also signed.
	h := signed(t, secret, "msg_3", time.Now(), b2)
	h.Set("Authorization", "Bearer tok-cccccccccccccccccccccccc")
	wantError(t, e.post("/v1/activations", b2, h), 401, "")
}

func TestInsecureAcceptsAnything(t *testing.T) {
	t.Parallel()
	e := start(t, intake.Config{Insecure: true})
	wantAccepted(t, e.post("/v1/activations", body(t, request("u-1")), nil), 202, "u-1", producer.Enqueued)
	// Insecure has no effect once a token is set.
	e2 := start(t, intake.Config{Insecure: true, Tokens: []string{tokenA}})
	wantError(t, e2.post("/v1/activations", body(t, request("u-1")), nil), 401, "")
}

func TestSameWebhookIDIsAcceptedOnce(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	e := start(t, intake.Config{Secrets: []string{secret}})
	b := body(t, request("u-1"))
	first := e.post("/v1/activations", b, signed(t, secret, "msg_once", time.Now(), b))
	wantAccepted(t, first, 202, "u-1", producer.Enqueued)
	// Standard Webhooks senders retry with the same id and a new timestamp and signature.
	again := e.post("/v1/activations", b, signed(t, secret, "msg_once", time.Now().Add(time.Second), b))
	if again.code != 200 || !bytes.Equal(again.body, first.body) {
		t.Fatalf("replay: %s, want 200 with the first body %s", again, first.body)
	}
	if again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay without Idempotent-Replayed: true")
	}
	e.wantTasks(taskID("u-1"))

	// The id is remembered with the answer, for 10 minutes.
	ctx := context.Background()
	key := intake.WebhookIDKeyPrefix + "msg_once"
	if v, err := e.db.Client.Get(ctx, key).Result(); err != nil || v != string(first.body) {
		t.Fatalf("stored answer %q, %v", v, err)
	}
	if ttl := e.db.Client.TTL(ctx, key).Val(); ttl <= 9*time.Minute || ttl > intake.WebhookIDTTL {
		t.Errorf("TTL %s, want about %s", ttl, intake.WebhookIDTTL)
	}

	// Once the job is gone (here deleted; in production, past retention), a replay of the id still
	// answers from memory and queues nothing.
	if err := asynq.NewInspectorFromRedisClient(e.db.Client).DeleteTask(queue, taskID("u-1")); err != nil {
		t.Fatal(err)
	}
	again = e.post("/v1/activations", b, signed(t, secret, "msg_once", time.Now(), b))
	if again.code != 200 || !bytes.Equal(again.body, first.body) {
		t.Fatalf("replay after the job is gone: %s", again)
	}
	e.wantTasks()

	// The same pair under a new webhook id is a duplicate of nothing now: queued again.
	wantAccepted(t, e.post("/v1/activations", b, signed(t, secret, "msg_new", time.Now(), b)), 202, "u-1", producer.Enqueued)
}

func TestConcurrentSameWebhookID(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	e := start(t, intake.Config{Secrets: []string{secret}})
	b := body(t, request("u-1"))
	answers := make([]answer, 10)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Go(func() { answers[i] = e.post("/v1/activations", b, signed(t, secret, "msg_same", time.Now(), b)) })
	}
	wg.Wait()
	accepted := 0
	for _, a := range answers {
		switch a.code {
		case 202:
			accepted++
			wantAccepted(t, a, 202, "u-1", producer.Enqueued)
		case 200:
			decode[intake.Accepted](t, a)
		default:
			t.Errorf("answer %s", a)
		}
	}
	if accepted != 1 {
		t.Errorf("%d answers 202, want 1", accepted)
	}
	e.wantTasks(taskID("u-1"))
}

func TestDuplicatePairWithoutWebhookID(t *testing.T) {
	t.Parallel()
	e := start(t, intake.Config{Tokens: []string{tokenA}})
	b := body(t, request("u-1"))
	wantAccepted(t, e.post("/v1/activations", b, bearerHeader(tokenA)), 202, "u-1", producer.Enqueued)
	wantAccepted(t, e.post("/v1/activations", b, bearerHeader(tokenA)), 200, "u-1", producer.Duplicate)
	e.wantTasks(taskID("u-1"))
}

func TestDeadLetteredPair(t *testing.T) {
	t.Parallel()
	e := start(t, intake.Config{Tokens: []string{tokenA}})
	req := request("u-dead")
	if _, err := e.prod.Store().Add(context.Background(), deadletter.Entry{ID: taskID("u-dead"), Reason: deadletter.NotFound,
		Error: "no such end user", Attempts: 1, Batch: "b-1", Request: req}); err != nil {
		t.Fatal(err)
	}
	wantAccepted(t, e.post("/v1/activations", body(t, req), bearerHeader(tokenA)), 200, "u-dead", producer.DeadLettered)
	e.wantTasks()
	st := decode[intake.TaskStatus](t, e.do("GET", "/v1/activations/"+taskID("u-dead"), nil, bearerHeader(tokenA)))
	want := intake.TaskStatus{TaskID: taskID("u-dead"), State: "dead_lettered", Batch: "b-1", LastError: "no such end user",
		Reason: "not_found", Attempts: 1}
	if st != want {
		t.Errorf("status %+v, want %+v", st, want)
	}
}

// TestBurstOfOnePair posts one pair 50 times at once, each under its own webhook id: one job.
func TestBurstOfOnePair(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	e := start(t, intake.Config{Secrets: []string{secret}})
	b := body(t, request("u-burst"))
	answers := make([]answer, 50)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Go(func() {
			answers[i] = e.post("/v1/activations", b, signed(t, secret, "msg_"+strconv.Itoa(i), time.Now(), b))
		})
	}
	wg.Wait()
	accepted := 0
	for _, a := range answers {
		switch a.code {
		case 202:
			accepted++
			wantAccepted(t, a, 202, "u-burst", producer.Enqueued)
		case 200:
			wantAccepted(t, a, 200, "u-burst", producer.Duplicate)
		default:
			t.Fatalf("answer %s", a)
		}
	}
	if accepted != 1 {
		t.Errorf("%d answers 202, want exactly 1", accepted)
	}
	e.wantTasks(taskID("u-burst"))
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	e := start(t, intake.Config{Tokens: []string{tokenA}})
	for _, tc := range []struct {
		name, body, field string
	}{
		{"empty body", ``, ""},
		{"not JSON", `{"userId": "u-1",`, ""},
		{"syntax error", `{"userId" "u-1"}`, ""},
		{"array", `[{"userId":"u-1"}]`, ""},
		{"two values", `{"userId":"u-1","integrationId":"` + integration + `"} {}`, ""},
		{"unknown field", `{"userId":"u-1","integrationId":"` + integration + `","email":"a@b.c"}`, "email"},
		{"unknown nested field", `{"userId":"u-1","integrationId":"` + integration + `","connections":[{"templateId":"` + template + `","connectionId":"` + connection + `","extra":1}]}`, "extra"},
		{"wrong type", `{"userId":42,"integrationId":"` + integration + `"}`, "userId"},
		{"wrong nested type", `{"userId":"u-1","integrationId":"` + integration + `","connections":[{"templateId":7}]}`, "connections.templateId"},
		{"missing userId", `{"integrationId":"` + integration + `"}`, "userId"},
		{"bad integrationId", `{"userId":"u-1","integrationId":"nope"}`, "integrationId"},
		{"bad connection", `{"userId":"u-1","integrationId":"` + integration + `","connections":[{"templateId":"` + template + `"}]}`, "connections[0]"},
		{"dynamicVariables not an object", `{"userId":"u-1","integrationId":"` + integration + `","dynamicVariables":[1]}`, "dynamicVariables"},
		{"null", `null`, "userId"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, e.post("/v1/activations", []byte(tc.body), bearerHeader(tokenA)), 400, tc.field)
		})
	}
	e.wantTasks()
}

func TestBodyTooLarge(t *testing.T) {
	t.Parallel()
	e := start(t, intake.Config{Tokens: []string{tokenA}, MaxBodyBytes: 1024})
	req := request("u-big")
	req.DynamicVariables = json.RawMessage(`{"pad":"` + strings.Repeat("x", 2000) + `"}`)
	b := body(t, req)
	eb := wantError(t, e.post("/v1/activations", b, bearerHeader(tokenA)), 413, "")
	if eb.Limit != 1024 {
		t.Errorf("limit %d", eb.Limit)
	}
	// Without a Content-Length (chunked), the limit holds too.
	hreq, err := http.NewRequest("POST", e.http.URL+"/v1/activations", io.MultiReader(bytes.NewReader(b)))
	if err != nil {
		t.Fatal(err)
	}
	hreq.Header.Set("Authorization", "Bearer "+tokenA)
	resp, err := e.http.Client().Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("chunked: %d, want 413", resp.StatusCode)
	}
	// Just under the limit is fine.
	req.DynamicVariables = json.RawMessage(`{"pad":"x"}`)
	wantAccepted(t, e.post("/v1/activations", body(t, req), bearerHeader(tokenA)), 202, "u-big", producer.Enqueued)
}

func TestBatch(t *testing.T) {
	t.Parallel()
	e := start(t, intake.Config{Tokens: []string{tokenA}, MaxBatch: 3, Batch: "signup"})
	reqs := []versori.ActivationRequest{request("b-1"), request("b-2"), request("b-3")}
	a := e.post("/v1/activations:batch", body(t, reqs), bearerHeader(tokenA))
	if a.code != 202 {
		t.Fatalf("batch: %s", a)
	}
	got := decode[[]intake.Accepted](t, a)
	for i, acc := range got {
		want := intake.Accepted{TaskID: taskID(reqs[i].UserID), Batch: "signup", Status: producer.Enqueued}
		if acc != want {
			t.Errorf("element %d: %+v, want %+v", i, acc, want)
		}
	}
	if len(got) != 3 {
		t.Fatalf("%d elements", len(got))
	}
	// Every job carries the batch id.
	info, err := asynq.NewInspectorFromRedisClient(e.db.Client).GetTaskInfo(queue, taskID("b-2"))
	if err != nil {
		t.Fatal(err)
	}
	if pl, err := tasks.DecodePayload(info.Payload); err != nil || pl.Batch != "signup" {
		t.Errorf("payload batch %q, %v", pl.Batch, err)
	}

	// Again, with one new pair: 202, and the others are duplicates.
	reqs = append(reqs[1:], request("b-4"))
	a = e.post("/v1/activations:batch", body(t, reqs), bearerHeader(tokenA))
	if a.code != 202 {
		t.Fatalf("second batch: %s", a)
	}
	statuses := []producer.Status{}
	for _, acc := range decode[[]intake.Accepted](t, a) {
		statuses = append(statuses, acc.Status)
	}
	if fmt.Sprint(statuses) != "[duplicate duplicate enqueued]" {
		t.Errorf("statuses %v", statuses)
	}
	// Nothing new: 200.
	a = e.post("/v1/activations:batch", body(t, reqs[:2]), bearerHeader(tokenA))
	if a.code != 200 {
		t.Fatalf("batch of duplicates: %s", a)
	}
	e.wantTasks(taskID("b-1"), taskID("b-2"), taskID("b-3"), taskID("b-4"))

	// One bad element refuses the whole batch, naming it.
	bad := []versori.ActivationRequest{request("b-5"), {UserID: "b-6"}, request("b-7")}
	eb := wantError(t, e.post("/v1/activations:batch", body(t, bad), bearerHeader(tokenA)), 400, "[1].integrationId")
	if eb.Index == nil || *eb.Index != 1 {
		t.Errorf("index %v, want 1", eb.Index)
	}
	eb = wantError(t, e.post("/v1/activations:batch", []byte(`[`+string(body(t, request("b-5")))+`,{"userId":"b-6","bogus":1}]`), bearerHeader(tokenA)), 400, "[1].bogus")
	if eb.Index == nil || *eb.Index != 1 {
		t.Errorf("index %v, want 1", eb.Index)
	}
	wantError(t, e.post("/v1/activations:batch", []byte(`[`+string(body(t, request("b-5")))+`,42]`), bearerHeader(tokenA)), 400, "[1]")
	// Over the limit: 413.
	over := []versori.ActivationRequest{request("b-5"), request("b-6"), request("b-7"), request("b-8")}
	eb = wantError(t, e.post("/v1/activations:batch", body(t, over), bearerHeader(tokenA)), 413, "")
	if eb.Limit != 3 {
		t.Errorf("limit %d, want 3", eb.Limit)
	}
	wantError(t, e.post("/v1/activations:batch", []byte(`[]`), bearerHeader(tokenA)), 400, "")
	wantError(t, e.post("/v1/activations:batch", body(t, request("b-5")), bearerHeader(tokenA)), 400, "")
	wantError(t, e.post("/v1/activations:batch", []byte(`[`+string(body(t, request("b-5")))+`] []`), bearerHeader(tokenA)), 400, "")
	wantError(t, e.post("/v1/activations:batch", []byte(`[`+string(body(t, request("b-5")))), bearerHeader(tokenA)), 400, "")
	wantError(t, e.post("/v1/activations:batch", body(t, over[:1]), nil), 401, "")
	e.wantTasks(taskID("b-1"), taskID("b-2"), taskID("b-3"), taskID("b-4"))
}

func TestBatchWebhookIDReplay(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	e := start(t, intake.Config{Secrets: []string{secret}})
	b := body(t, []versori.ActivationRequest{request("b-1"), request("b-2")})
	first := e.post("/v1/activations:batch", b, signed(t, secret, "msg_batch", time.Now(), b))
	if first.code != 202 {
		t.Fatalf("batch: %s", first)
	}
	again := e.post("/v1/activations:batch", b, signed(t, secret, "msg_batch", time.Now(), b))
	if again.code != 200 || !bytes.Equal(again.body, first.body) {
		t.Fatalf("replay: %s, want 200 %s", again, first.body)
	}
}

func TestTaskStatus(t *testing.T) {
	t.Parallel()
	e := start(t, intake.Config{Tokens: []string{tokenA}})
	get := func(id string) answer { return e.do("GET", "/v1/activations/"+id, nil, bearerHeader(tokenA)) }

	wantError(t, get(taskID("u-1")), 404, "taskId") // not even a queue yet
	wantAccepted(t, e.post("/v1/activations", body(t, request("u-1")), bearerHeader(tokenA)), 202, "u-1", producer.Enqueued)
	wantError(t, get(taskID("u-unknown")), 404, "taskId")
	wantError(t, get(""), 404, "taskId")
	wantError(t, e.do("GET", "/v1/activations/"+taskID("u-1"), nil, nil), 401, "")

	a := get(taskID("u-1"))
	if a.code != 200 {
		t.Fatalf("GET: %s", a)
	}
	if st := decode[intake.TaskStatus](t, a); st != (intake.TaskStatus{TaskID: taskID("u-1"), State: "pending", Batch: intake.DefaultBatch}) {
		t.Errorf("pending: %+v", st)
	}
	if strings.Contains(string(a.body), connection) {
		t.Errorf("status shows the request: %s", a.body)
	}

	// A user id with a slash, escaped in the path.
	wantAccepted(t, e.post("/v1/activations", body(t, request("org/u-2")), bearerHeader(tokenA)), 202, "org/u-2", producer.Enqueued)
	if st := decode[intake.TaskStatus](t, get(strings.ReplaceAll(taskID("org/u-2"), "/", "%2F"))); st.State != "pending" || st.TaskID != taskID("org/u-2") {
		t.Errorf("escaped slash: %+v", st)
	}
	if st := decode[intake.TaskStatus](t, get(taskID("org/u-2"))); st.State != "pending" {
		t.Errorf("raw slash: %+v", st)
	}

	// A worker stand-in completes the job with an activation id.
	srv := asynq.NewServerFromRedisClient(e.db.Client, asynq.Config{Queues: map[string]int{queue: 1}, Concurrency: 1,
		LogLevel: asynq.FatalLevel, TaskCheckInterval: 50 * time.Millisecond})
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeActivate, func(ctx context.Context, task *asynq.Task) error {
		_, err := task.ResultWriter().Write([]byte("act-" + task.ResultWriter().TaskID()[4:8]))
		return err
	})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	var st intake.TaskStatus
	for deadline := time.Now().Add(10 * time.Second); ; {
		st = decode[intake.TaskStatus](t, get(taskID("u-1")))
		if st.State == "completed" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	srv.Shutdown()
	if st.State != "completed" || st.ActivationID != "act-"+integration[:4] || st.CompletedAt.IsZero() {
		t.Errorf("completed: %+v", st)
	}

	// Archived, then dead-lettered.
	wantAccepted(t, e.post("/v1/activations", body(t, request("u-3")), bearerHeader(tokenA)), 202, "u-3", producer.Enqueued)
	if err := asynq.NewInspectorFromRedisClient(e.db.Client).ArchiveTask(queue, taskID("u-3")); err != nil {
		t.Fatal(err)
	}
	if st := decode[intake.TaskStatus](t, get(taskID("u-3"))); st.State != "archived" {
		t.Errorf("archived: %+v", st)
	}
	if _, err := e.prod.Store().Add(context.Background(), deadletter.Entry{ID: taskID("u-3"), Reason: deadletter.RetriesExhausted,
		Error: "boom", Attempts: 25, Request: request("u-3")}); err != nil {
		t.Fatal(err)
	}
	if st := decode[intake.TaskStatus](t, get(taskID("u-3"))); st.State != "dead_lettered" || st.Reason != "retries_exhausted" || st.Attempts != 25 {
		t.Errorf("dead-lettered: %+v", st)
	}
}

func TestRedisDown(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { down.Close() })
	e := startOn(t, nil, down, intake.Config{Secrets: []string{secret}, Tokens: []string{tokenA}})
	b := body(t, request("u-1"))
	for name, h := range map[string]http.Header{
		"bearer, no webhook id": bearerHeader(tokenA),
		"signed":                signed(t, secret, "msg_1", time.Now(), b),
	} {
		a := e.post("/v1/activations", b, h)
		wantError(t, a, 503, "")
		if a.header.Get("Retry-After") == "" {
			t.Errorf("%s: 503 without Retry-After", name)
		}
	}
	a := e.post("/v1/activations:batch", body(t, []versori.ActivationRequest{request("u-1")}), bearerHeader(tokenA))
	wantError(t, a, 503, "")
	wantError(t, e.do("GET", "/v1/activations/"+taskID("u-1"), nil, bearerHeader(tokenA)), 503, "")
	if a := e.do("GET", "/readyz", nil, nil); a.code != 503 || a.header.Get("Retry-After") == "" {
		t.Errorf("readyz: %s", a)
	}
	if a := e.do("GET", "/healthz", nil, nil); a.code != 200 {
		t.Errorf("healthz: %s", a)
	}
	// Validation and authentication come first: they need no Redis.
	wantError(t, e.post("/v1/activations", []byte(`{}`), bearerHeader(tokenA)), 400, "userId")
	wantError(t, e.post("/v1/activations", b, nil), 401, "")
	if strings.Contains(e.logs.String(), secret) || strings.Contains(e.logs.String(), tokenA) {
		t.Error("a secret is in the logs")
	}
	if !strings.Contains(e.logs.String(), "Redis is unavailable") {
		t.Errorf("logs do not say Redis is unavailable:\n%s", e.logs)
	}
}

func TestReady(t *testing.T) {
	t.Parallel()
	e := start(t, intake.Config{Tokens: []string{tokenA}})
	for _, p := range []string{"/healthz", "/readyz"} {
		if a := e.do("GET", p, nil, nil); a.code != 200 {
			t.Errorf("%s: %s", p, a)
		}
	}
}

// TestTooManyInFlight holds MaxConcurrent requests mid-body: the next one is refused at once.
func TestTooManyInFlight(t *testing.T) {
	t.Parallel()
	e := start(t, intake.Config{Tokens: []string{tokenA}, MaxConcurrent: 1})
	b := body(t, request("u-1"))
	pr, pw := io.Pipe()
	held := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest("POST", e.http.URL+"/v1/activations", pr)
		req.Header.Set("Authorization", "Bearer "+tokenA)
		resp, err := e.http.Client().Do(req)
		if err != nil {
			held <- answer{code: -1, body: []byte(err.Error())}
			return
		}
		defer resp.Body.Close()
		rb, _ := io.ReadAll(resp.Body)
		held <- answer{code: resp.StatusCode, body: rb}
	}()
	t.Cleanup(func() { pw.Close() })
	if _, err := pw.Write(b[:10]); err != nil {
		t.Fatal(err)
	}
	// Wait until the held request is in its handler, reading the body.
	for deadline := time.Now().Add(5 * time.Second); ; {
		if m := e.do("GET", "/metrics", nil, nil); strings.Contains(string(m.body), "\nintake_in_flight_requests 1\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the held request never reached its handler")
		}
		time.Sleep(10 * time.Millisecond)
	}
	a := e.post("/v1/activations", body(t, request("u-2")), bearerHeader(tokenA))
	wantError(t, a, 429, "")
	if a.header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	// Probes are not limited.
	if a := e.do("GET", "/healthz", nil, nil); a.code != 200 {
		t.Errorf("healthz while busy: %s", a)
	}
	pw.Write(b[10:])
	pw.Close()
	wantAccepted(t, <-held, 202, "u-1", producer.Enqueued)
	wantAccepted(t, e.post("/v1/activations", body(t, request("u-2")), bearerHeader(tokenA)), 202, "u-2", producer.Enqueued)
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	e := start(t, intake.Config{Tokens: []string{tokenA}})
	b := body(t, request("u-1"))
	e.post("/v1/activations", b, bearerHeader(tokenA))
	e.post("/v1/activations", b, bearerHeader(tokenA))
	e.post("/v1/activations", b, nil)
	e.do("GET", "/nowhere", nil, nil)
	a := e.do("GET", "/metrics", nil, nil)
	if a.code != 200 {
		t.Fatalf("metrics: %s", a)
	}
	for _, want := range []string{
		`intake_requests_total{code="202",route="/v1/activations"} 1`,
		`intake_requests_total{code="200",route="/v1/activations"} 1`,
		`intake_requests_total{code="401",route="/v1/activations"} 1`,
		`intake_requests_total{code="404",route="unmatched"} 1`,
		`intake_enqueue_duration_seconds_count{outcome="enqueued"} 1`,
		`intake_enqueue_duration_seconds_count{outcome="duplicate"} 1`,
		`intake_enqueue_duration_seconds_count{outcome="error"} 0`,
		`intake_in_flight_requests 0`,
	} {
		if !strings.Contains(string(a.body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(string(a.body), "go_goroutines") {
		t.Error("metrics are not on a registry of their own")
	}
}

func TestMethodNotAllowed(t *testing.T) {
	t.Parallel()
	e := start(t, intake.Config{Tokens: []string{tokenA}})
	if a := e.do("GET", "/v1/activations", nil, bearerHeader(tokenA)); a.code != 405 {
		t.Errorf("GET /v1/activations: %s", a)
	}
	if a := e.do("DELETE", "/v1/activations/x", nil, bearerHeader(tokenA)); a.code != 405 {
		t.Errorf("DELETE: %s", a)
	}
}

// TestServeShutsDownGracefully runs the real server on 127.0.0.1:0 and cancels it with a request in
// flight: the request is answered, then Serve returns nil.
func TestServeShutsDownGracefully(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	p := producer.New(db.Client, producer.Config{Queue: queue})
	srv, err := intake.New(intake.Config{Tokens: []string{tokenA}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		MaxHeaderBytes: 4096}, db.Client, p)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	url := "http://" + ln.Addr().String()

	resp, err := http.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthz: %d", resp.StatusCode)
	}
	// Headers over MaxHeaderBytes are refused by the http.Server itself.
	req, _ := http.NewRequest("GET", url+"/healthz", nil)
	req.Header.Set("X-Big", strings.Repeat("x", 8192))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("big headers: %d", resp.StatusCode)
		}
	}

	// A request in flight (its body still coming) when the server is told to stop.
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.Close() })
	inflight := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("POST", url+"/v1/activations", pr)
		req.Header.Set("Authorization", "Bearer "+tokenA)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			inflight <- -1
			return
		}
		resp.Body.Close()
		inflight <- resp.StatusCode
	}()
	b := body(t, request("u-1"))
	pw.Write(b[:5])
	time.Sleep(100 * time.Millisecond)
	cancel()
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("Serve returned %v with a request in flight", err)
	default:
	}
	pw.Write(b[5:])
	pw.Close()
	if code := <-inflight; code != 202 {
		t.Errorf("in-flight request: %d, want 202", code)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after shutdown")
	}
	if _, err := http.Get(url + "/healthz"); err == nil {
		t.Error("server still answers after shutdown")
	}
}

func TestWebhookIDBeingHandled(t *testing.T) {
	t.Parallel()
	e := start(t, intake.Config{Tokens: []string{tokenA}})
	b := body(t, request("u-1"))
	// Another request holds the id (claimed, no answer yet): this one waits a while, then gets 409.
	key := intake.WebhookIDKeyPrefix + "msg_busy"
	if err := e.db.Client.Set(context.Background(), key, "pending", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	h := bearerHeader(tokenA)
	h.Set(intake.HeaderWebhookID, "msg_busy")
	a := e.post("/v1/activations", b, h)
	wantError(t, a, 409, intake.HeaderWebhookID)
	if a.header.Get("Retry-After") == "" {
		t.Error("409 without Retry-After")
	}
	e.wantTasks()
	// The holder failed and let go: the retry goes through.
	e.db.Client.Del(context.Background(), key)
	wantAccepted(t, e.post("/v1/activations", b, h), 202, "u-1", producer.Enqueued)
	// A webhook-id works as an idempotency key with a bearer token too.
	again := e.post("/v1/activations", b, h)
	if again.code != 200 || again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay: %s", again)
	}
	h.Set(intake.HeaderWebhookID, strings.Repeat("x", intake.MaxWebhookIDBytes+1))
	wantError(t, e.post("/v1/activations", b, h), 400, intake.HeaderWebhookID)
}
