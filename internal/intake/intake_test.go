package intake_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
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

	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/intake"
	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

const (
	queue  = "activations"
	tokenA = "tok-aaaaaaaaaaaaaaaaaaaaaaaa"
	tokenB = "tok-bbbbbbbbbbbbbbbbbbbbbbbb"
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

// env is one test's intake: a server over real HTTP, on its own Redis database.
type env struct {
	t    *testing.T
	db   *testutil.RedisDB
	prod *producer.Producer
	srv  *intake.Server
	http *httptest.Server
	logs *testutil.SyncBuffer
}

// start runs an intake on a fresh database. cfg gets a logger that captures its output.
func start(t *testing.T, cfg intake.Config) *env {
	t.Helper()
	db := testutil.Redis(t)
	return startOn(t, db, db.Client, cfg)
}

// startOn runs an intake whose producer and webhook-id store use rdb.
func startOn(t *testing.T, db *testutil.RedisDB, rdb redis.UniversalClient, cfg intake.Config) *env {
	t.Helper()
	return startWith(t, db, rdb, cfg, producer.Config{Queue: queue})
}

// startWith runs an intake whose producer has the configuration pcfg.
func startWith(t *testing.T, db *testutil.RedisDB, rdb redis.UniversalClient, cfg intake.Config, pcfg producer.Config) *env {
	t.Helper()
	logs := &testutil.SyncBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	prod := producer.New(rdb, pcfg)
	srv, err := intake.New(cfg, rdb, prod)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &env{t: t, db: db, prod: prod, srv: srv, http: hs, logs: logs}
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
	want := intake.Accepted{TaskID: tasks.TaskID(testutil.Request(user).Pair()), Batch: intake.DefaultBatch, Status: status}
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

func taskID(user string) string { return tasks.TaskID(testutil.Request(user).Pair()) }

// The routes and credential ids of the documented replay key space.
const (
	routeOne   = "/v1/activations"
	routeBatch = "/v1/activations:batch"
	credOpen   = "open"
	// signedScope stands for the route in the key of a signed request's id: all of them.
	signedScope = "/v1/*"
)

// credSecret is the documented credential id of a webhook secret: the hex SHA-256 of its key.
func credSecret(t testing.TB, secret string) string {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(key)
	return "whsec:" + hex.EncodeToString(sum[:])
}

// credToken is the documented credential id of a bearer token: the hex SHA-256 of the token.
func credToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return "bearer:" + hex.EncodeToString(sum[:])
}

// replayRecord is the documented value under a replay key.
type replayRecord struct {
	BodySHA256 string          `json:"bodySha256"`
	Pending    bool            `json:"pending"`
	Answer     json.RawMessage `json:"answer"`
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func TestNewRefusesToStartWithoutCredentials(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
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
		return user, body(t, testutil.Request(user))
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
		wantError(t, e.post("/v1/activations", body(t, testutil.Request(other)), h), 401, "")
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
	b := body(t, testutil.Request("u-1"))
	wantAccepted(t, e.post("/v1/activations", b, bearerHeader(tokenA)), 202, "u-1", producer.Enqueued)
	b2 := body(t, testutil.Request("u-2"))
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
		a := e.post("/v1/activations", body(t, testutil.Request("u-bad")), h)
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
	b1, b2 := body(t, testutil.Request("u-1")), body(t, testutil.Request("u-2"))
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
	wantAccepted(t, e.post("/v1/activations", body(t, testutil.Request("u-1")), nil), 202, "u-1", producer.Enqueued)
	// Insecure has no effect once a token is set.
	e2 := start(t, intake.Config{Insecure: true, Tokens: []string{tokenA}})
	wantError(t, e2.post("/v1/activations", body(t, testutil.Request("u-1")), nil), 401, "")
}

func TestSameWebhookIDIsAcceptedOnce(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	e := start(t, intake.Config{Secrets: []string{secret}})
	b := body(t, testutil.Request("u-1"))
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

	// The id is remembered with the body's digest and the answer, for 10 minutes, under a key that
	// scopes it to its sender (a signed id: on every route).
	ctx := context.Background()
	key := rediskeys.WebhookID(signedScope, credSecret(t, secret), "msg_once")
	v, err := e.db.Client.Get(ctx, key).Result()
	if err != nil {
		t.Fatalf("stored answer: %v", err)
	}
	var rec replayRecord
	if err := json.Unmarshal([]byte(v), &rec); err != nil || rec.Pending || rec.BodySHA256 != sha256Hex(b) ||
		string(rec.Answer)+"\n" != string(first.body) {
		t.Fatalf("stored record %s (%v), want the digest of the body and the answer %s", v, err, first.body)
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
	b := body(t, testutil.Request("u-1"))
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
	b := body(t, testutil.Request("u-1"))
	wantAccepted(t, e.post("/v1/activations", b, bearerHeader(tokenA)), 202, "u-1", producer.Enqueued)
	wantAccepted(t, e.post("/v1/activations", b, bearerHeader(tokenA)), 200, "u-1", producer.Duplicate)
	e.wantTasks(taskID("u-1"))
}

func TestDeadLetteredPair(t *testing.T) {
	t.Parallel()
	e := start(t, intake.Config{Tokens: []string{tokenA}})
	req := testutil.Request("u-dead")
	if _, err := deadletter.NewStore(e.db.Client, queue).Add(context.Background(), deadletter.Entry{ID: taskID("u-dead"), Reason: tasks.ReasonNotFound,
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
	b := body(t, testutil.Request("u-burst"))
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
	ok := `"userId":"u-1","integrationId":"` + testutil.IntegrationID + `"`
	for _, tc := range []struct {
		name, body, field string
	}{
		{"empty body", ``, ""},
		{"blank body", "  \n", ""},
		{"not JSON", `{"userId": "u-1",`, ""},
		{"syntax error", `{"userId" "u-1"}`, ""},
		{"array", `[{"userId":"u-1"}]`, ""},
		{"two values", `{` + ok + `} {}`, ""},
		{"unknown field", `{` + ok + `,"email":"a@b.c"}`, "email"},
		{"unknown nested field", `{` + ok + `,"connections":[{"templateId":"` + testutil.TemplateID + `","connectionId":"` + testutil.ConnectionID + `","extra":1}]}`, "connections[0].extra"},
		{"wrong type", `{"userId":42,"integrationId":"` + testutil.IntegrationID + `"}`, "userId"},
		{"wrong nested type", `{` + ok + `,"connections":[{"templateId":7}]}`, "connections[0].templateId"},
		{"missing userId", `{"integrationId":"` + testutil.IntegrationID + `"}`, "userId"},
		{"bad integrationId", `{"userId":"u-1","integrationId":"nope"}`, "integrationId"},
		{"bad connection", `{` + ok + `,"connections":[{"templateId":"` + testutil.TemplateID + `"}]}`, "connections[0]"},
		{"dynamicVariables not an object", `{` + ok + `,"dynamicVariables":[1]}`, "dynamicVariables"},
		{"null", `null`, ""},
		// encoding/json would take these as {"userId":"u-2"}: which user was meant is a guess.
		{"field name in another case", `{` + ok + `,"USERID":"u-2"}`, "USERID"},
		{"field name in another case first", `{"USERID":"u-2",` + ok + `}`, "USERID"},
		{"repeated field", `{` + ok + `,"userId":"u-2"}`, "userId"},
		{"repeated nested field", `{` + ok + `,"connections":[{"templateId":"` + testutil.TemplateID + `","connectionId":"` + testutil.ConnectionID + `","connectionId":"` + testutil.TemplateID + `"}]}`, "connections[0].connectionId"},
		{"nested field name in another case", `{` + ok + `,"connections":[{"templateId":"` + testutil.TemplateID + `","ConnectionId":"` + testutil.ConnectionID + `"}]}`, "connections[0].ConnectionId"},
		// encoding/json would read the bad byte as U+FFFD, so two users could become one.
		{"not UTF-8", "{\"userId\":\"u-\xff\",\"integrationId\":\"" + testutil.IntegrationID + "\"}", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eb := wantError(t, e.post("/v1/activations", []byte(tc.body), bearerHeader(tokenA)), 400, tc.field)
			if tc.field != "" && !strings.HasPrefix(eb.Error, tc.field+": ") {
				t.Errorf("error %q does not start with the field", eb.Error)
			}
			if eb.Index != nil {
				t.Errorf("index %d outside a batch", *eb.Index)
			}
		})
	}
	e.wantTasks()
}

func TestBodyTooLarge(t *testing.T) {
	t.Parallel()
	e := start(t, intake.Config{Tokens: []string{tokenA}, MaxBodyBytes: 1024})
	req := testutil.Request("u-big")
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
	reqs := []versori.ActivationRequest{testutil.Request("b-1"), testutil.Request("b-2"), testutil.Request("b-3")}
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
	reqs = append(reqs[1:], testutil.Request("b-4"))
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
	bad := []versori.ActivationRequest{testutil.Request("b-5"), {UserID: "b-6"}, testutil.Request("b-7")}
	eb := wantError(t, e.post("/v1/activations:batch", body(t, bad), bearerHeader(tokenA)), 400, "[1].integrationId")
	if eb.Index == nil || *eb.Index != 1 {
		t.Errorf("index %v, want 1", eb.Index)
	}
	eb = wantError(t, e.post("/v1/activations:batch", []byte(`[`+string(body(t, testutil.Request("b-5")))+`,{"userId":"b-6","bogus":1}]`), bearerHeader(tokenA)), 400, "[1].bogus")
	if eb.Index == nil || *eb.Index != 1 {
		t.Errorf("index %v, want 1", eb.Index)
	}
	wantError(t, e.post("/v1/activations:batch", []byte(`[`+string(body(t, testutil.Request("b-5")))+`,42]`), bearerHeader(tokenA)), 400, "[1]")
	// Over the limit: 413.
	over := []versori.ActivationRequest{testutil.Request("b-5"), testutil.Request("b-6"), testutil.Request("b-7"), testutil.Request("b-8")}
	eb = wantError(t, e.post("/v1/activations:batch", body(t, over), bearerHeader(tokenA)), 413, "")
	if eb.Limit != 3 {
		t.Errorf("limit %d, want 3", eb.Limit)
	}
	wantError(t, e.post("/v1/activations:batch", []byte(`[]`), bearerHeader(tokenA)), 400, "")
	wantError(t, e.post("/v1/activations:batch", body(t, testutil.Request("b-5")), bearerHeader(tokenA)), 400, "")
	wantError(t, e.post("/v1/activations:batch", []byte(`[`+string(body(t, testutil.Request("b-5")))+`] []`), bearerHeader(tokenA)), 400, "")
	wantError(t, e.post("/v1/activations:batch", []byte(`[`+string(body(t, testutil.Request("b-5")))), bearerHeader(tokenA)), 400, "")
	wantError(t, e.post("/v1/activations:batch", body(t, over[:1]), nil), 401, "")
	e.wantTasks(taskID("b-1"), taskID("b-2"), taskID("b-3"), taskID("b-4"))
}

func TestBatchWebhookIDReplay(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	e := start(t, intake.Config{Secrets: []string{secret}})
	b := body(t, []versori.ActivationRequest{testutil.Request("b-1"), testutil.Request("b-2")})
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
	wantAccepted(t, e.post("/v1/activations", body(t, testutil.Request("u-1")), bearerHeader(tokenA)), 202, "u-1", producer.Enqueued)
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
	if strings.Contains(string(a.body), testutil.ConnectionID) {
		t.Errorf("status shows the request: %s", a.body)
	}

	// A user id with a slash, escaped in the path.
	wantAccepted(t, e.post("/v1/activations", body(t, testutil.Request("org/u-2")), bearerHeader(tokenA)), 202, "org/u-2", producer.Enqueued)
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
	if st.State != "completed" || st.ActivationID != "act-"+testutil.IntegrationID[:4] || st.CompletedAt.IsZero() {
		t.Errorf("completed: %+v", st)
	}

	// Archived, then dead-lettered.
	wantAccepted(t, e.post("/v1/activations", body(t, testutil.Request("u-3")), bearerHeader(tokenA)), 202, "u-3", producer.Enqueued)
	if err := asynq.NewInspectorFromRedisClient(e.db.Client).ArchiveTask(queue, taskID("u-3")); err != nil {
		t.Fatal(err)
	}
	if st := decode[intake.TaskStatus](t, get(taskID("u-3"))); st.State != "archived" {
		t.Errorf("archived: %+v", st)
	}
	if _, err := deadletter.NewStore(e.db.Client, queue).Add(context.Background(), deadletter.Entry{ID: taskID("u-3"), Reason: tasks.ReasonRetriesExhausted,
		Error: "boom", Attempts: 25, Request: testutil.Request("u-3")}); err != nil {
		t.Fatal(err)
	}
	if st := decode[intake.TaskStatus](t, get(taskID("u-3"))); st.State != "dead_lettered" || st.Reason != "retries_exhausted" || st.Attempts != 25 {
		t.Errorf("dead-lettered: %+v", st)
	}
}

// TestStatusReadsNeedBearer checks that GET /v1/activations/{id} takes a bearer token only: a
// Standard Webhooks signature over the empty body, which could be replayed for any task id within
// its 5 minutes, is refused, fresh or replayed; an intake with secrets and no tokens answers 403
// saying to configure INTAKE_TOKENS. Signed POSTs are accepted as before.
func TestStatusReadsNeedBearer(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	tests := []struct {
		name string
		cfg  intake.Config
		// answers of a signed GET (fresh, then replayed), a GET without credentials, and a bearer GET
		signed, none, bearer int
		signedErr            string
	}{
		{"secrets only", intake.Config{Secrets: []string{secret}}, 403, 403, 403, "configure INTAKE_TOKENS"},
		{"secrets and tokens", intake.Config{Secrets: []string{secret}, Tokens: []string{tokenA}}, 401, 401, 200, "a webhook signature is not accepted for reads"},
		{"tokens only", intake.Config{Tokens: []string{tokenA}}, 401, 401, 200, "Authorization: Bearer"},
		{"insecure", intake.Config{Insecure: true}, 200, 200, 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := start(t, tt.cfg)
			b := body(t, testutil.Request("u-1"))
			post := bearerHeader(tokenA)
			if len(tt.cfg.Secrets) > 0 {
				post = signed(t, secret, "msg_post", time.Now(), b)
			}
			wantAccepted(t, e.post("/v1/activations", b, post), 202, "u-1", producer.Enqueued)

			path := "/v1/activations/" + taskID("u-1")
			h := signed(t, secret, "msg_get", time.Now(), nil)
			for _, try := range []string{"fresh", "replayed"} {
				a := e.do(http.MethodGet, path, nil, h)
				if a.code != tt.signed || !strings.Contains(string(a.body), tt.signedErr) {
					t.Errorf("%s signed GET = %s, want %d with %q", try, a, tt.signed, tt.signedErr)
				}
			}
			if a := e.do(http.MethodGet, path, nil, nil); a.code != tt.none {
				t.Errorf("GET without credentials = %s, want %d", a, tt.none)
			}
			a := e.do(http.MethodGet, path, nil, bearerHeader(tokenA))
			if a.code != tt.bearer {
				t.Fatalf("bearer GET = %s, want %d", a, tt.bearer)
			}
			if a.code == 200 {
				if st := decode[intake.TaskStatus](t, a); st.TaskID != taskID("u-1") || st.State != "pending" {
					t.Errorf("bearer GET: %+v", st)
				}
			}
			if len(tt.cfg.Tokens) > 0 {
				wantError(t, e.do(http.MethodGet, path, nil, bearerHeader(tokenB)), 401, "")
			}
		})
	}
}

func TestRedisDown(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	down := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { down.Close() })
	e := startOn(t, nil, down, intake.Config{Secrets: []string{secret}, Tokens: []string{tokenA}})
	b := body(t, testutil.Request("u-1"))
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
	a := e.post("/v1/activations:batch", body(t, []versori.ActivationRequest{testutil.Request("u-1")}), bearerHeader(tokenA))
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
	b := body(t, testutil.Request("u-1"))
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
	a := e.post("/v1/activations", body(t, testutil.Request("u-2")), bearerHeader(tokenA))
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
	wantAccepted(t, e.post("/v1/activations", body(t, testutil.Request("u-2")), bearerHeader(tokenA)), 202, "u-2", producer.Enqueued)
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	e := start(t, intake.Config{Tokens: []string{tokenA}})
	b := body(t, testutil.Request("u-1"))
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
	db := testutil.Redis(t)
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
	b := body(t, testutil.Request("u-1"))
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

// TestWebhookIDBeingHandled holds a webhook id as another request would while it is handled: only
// requests of the same scope (route and credential) wait for it.
func TestWebhookIDBeingHandled(t *testing.T) {
	t.Parallel()
	b := body(t, testutil.Request("u-1"))
	for _, tc := range []struct {
		name        string
		route, tok  string
		body        []byte
		code        int // 409 busy (Retry-After), 409 conflict (none), or 202
		retryAfter  bool
		errContains string
	}{
		{"same route, token and body: busy", routeOne, tokenA, b, 409, true, "being handled"},
		{"same route and token, other body: conflict", routeOne, tokenA, body(t, testutil.Request("u-2")), 409, false, "different request"},
		{"another token is not held up", routeOne, tokenB, b, 202, false, ""},
		{"another route is not held up", routeBatch, tokenA, body(t, []versori.ActivationRequest{testutil.Request("u-1")}), 202, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := start(t, intake.Config{Tokens: []string{tokenA, tokenB}})
			// Another request holds the id (claimed, no answer yet).
			key := rediskeys.WebhookID(routeOne, credToken(tokenA), "msg_busy")
			held := `{"bodySha256":"` + sha256Hex(b) + `","pending":true}`
			if err := e.db.Client.Set(context.Background(), key, held, time.Minute).Err(); err != nil {
				t.Fatal(err)
			}
			h := bearerHeader(tc.tok)
			h.Set(intake.HeaderWebhookID, "msg_busy")
			a := e.post(tc.route, tc.body, h)
			if tc.code != 409 {
				if a.code != tc.code || a.header.Get("Idempotent-Replayed") != "" {
					t.Fatalf("answer %s, want %d", a, tc.code)
				}
				e.wantTasks(taskID("u-1"))
				return
			}
			eb := wantError(t, a, 409, intake.HeaderWebhookID)
			if !strings.Contains(eb.Error, tc.errContains) {
				t.Errorf("error %q, want one saying %q", eb.Error, tc.errContains)
			}
			if got := a.header.Get("Retry-After") != ""; got != tc.retryAfter {
				t.Errorf("Retry-After %q, want one: %t", a.header.Get("Retry-After"), tc.retryAfter)
			}
			e.wantTasks()
			if v := e.db.Client.Get(context.Background(), key).Val(); v != held {
				t.Errorf("the holder's claim is now %q", v)
			}
		})
	}

	e := start(t, intake.Config{Tokens: []string{tokenA}})
	h := bearerHeader(tokenA)
	h.Set(intake.HeaderWebhookID, "msg_busy")
	// The holder failed and let go: the retry goes through.
	key := rediskeys.WebhookID(routeOne, credToken(tokenA), "msg_busy")
	if err := e.db.Client.Set(context.Background(), key, `{"bodySha256":"`+sha256Hex(b)+`","pending":true}`, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	wantError(t, e.post(routeOne, b, h), 409, intake.HeaderWebhookID)
	e.db.Client.Del(context.Background(), key)
	wantAccepted(t, e.post(routeOne, b, h), 202, "u-1", producer.Enqueued)
	// A webhook-id works as an idempotency key with a bearer token too.
	again := e.post(routeOne, b, h)
	if again.code != 200 || again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay: %s", again)
	}
	h.Set(intake.HeaderWebhookID, strings.Repeat("x", intake.MaxWebhookIDBytes+1))
	wantError(t, e.post(routeOne, b, h), 400, intake.HeaderWebhookID)
}

// TestWebhookIDIsScopedToRouteAndCredential sends two requests under one webhook id: only the same
// route, credential and body get the first answer back. The same route and credential with another
// body is a conflict; another route or credential is a request of its own, so that no sender can
// suppress another's events by claiming their ids first.
func TestWebhookIDIsScopedToRouteAndCredential(t *testing.T) {
	t.Parallel()
	secret1, secret2 := newSecret(t), newSecret(t)
	type send struct {
		route string   // routeOne or routeBatch
		cred  string   // "s1", "s2", "A", "B" or "open"
		users []string // one for routeOne
	}
	const (
		replayed = "replayed"
		conflict = "conflict"
		handled  = "handled" // handled as a new request: 202 or 200 from the producer, not replayed
	)
	for _, tc := range []struct {
		name          string
		first, second send
		want          string
		wantStatus    producer.Status // of a handled second request
		tasks         []string
	}{
		{"same signer, same body", send{routeOne, "s1", []string{"u-1"}}, send{routeOne, "s1", []string{"u-1"}}, replayed, "", []string{"u-1"}},
		{"same signer, other body", send{routeOne, "s1", []string{"u-1"}}, send{routeOne, "s1", []string{"u-2"}}, conflict, "", []string{"u-1"}},
		{"another secret, other body", send{routeOne, "s1", []string{"u-1"}}, send{routeOne, "s2", []string{"u-2"}}, handled, producer.Enqueued, []string{"u-1", "u-2"}},
		{"another secret, same body", send{routeOne, "s1", []string{"u-1"}}, send{routeOne, "s2", []string{"u-1"}}, handled, producer.Duplicate, []string{"u-1"}},
		{"a token after a signature", send{routeOne, "s1", []string{"u-1"}}, send{routeOne, "A", []string{"u-2"}}, handled, producer.Enqueued, []string{"u-1", "u-2"}},
		{"a token holder cannot pre-claim a signer's id", send{routeOne, "A", []string{"u-1"}}, send{routeOne, "s1", []string{"u-2"}}, handled, producer.Enqueued, []string{"u-1", "u-2"}},
		{"another token", send{routeOne, "A", []string{"u-1"}}, send{routeOne, "B", []string{"u-2"}}, handled, producer.Enqueued, []string{"u-1", "u-2"}},
		{"same token, same body", send{routeOne, "A", []string{"u-1"}}, send{routeOne, "A", []string{"u-1"}}, replayed, "", []string{"u-1"}},
		{"same token, other body", send{routeOne, "A", []string{"u-1"}}, send{routeOne, "A", []string{"u-2"}}, conflict, "", []string{"u-1"}},
		// A signed id is the sender's for one message, whatever the route: a signature does not cover it.
		{"a signed batch after a single request", send{routeOne, "s1", []string{"u-1"}}, send{routeBatch, "s1", []string{"u-2"}}, conflict, "", []string{"u-1"}},
		{"a batch after a single request", send{routeOne, "A", []string{"u-1"}}, send{routeBatch, "A", []string{"u-2"}}, handled, producer.Enqueued, []string{"u-1", "u-2"}},
		{"a single request after a batch", send{routeBatch, "A", []string{"u-1"}}, send{routeOne, "A", []string{"u-2"}}, handled, producer.Enqueued, []string{"u-1", "u-2"}},
		{"same batch again", send{routeBatch, "s1", []string{"u-1", "u-2"}}, send{routeBatch, "s1", []string{"u-1", "u-2"}}, replayed, "", []string{"u-1", "u-2"}},
		{"other batch, same signer", send{routeBatch, "s1", []string{"u-1", "u-2"}}, send{routeBatch, "s1", []string{"u-2", "u-3"}}, conflict, "", []string{"u-1", "u-2"}},
		{"insecure, same body", send{routeOne, "open", []string{"u-1"}}, send{routeOne, "open", []string{"u-1"}}, replayed, "", []string{"u-1"}},
		{"insecure, other body", send{routeOne, "open", []string{"u-1"}}, send{routeOne, "open", []string{"u-2"}}, conflict, "", []string{"u-1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := intake.Config{Secrets: []string{secret1, secret2}, Tokens: []string{tokenA, tokenB}}
			if tc.first.cred == "open" {
				cfg = intake.Config{Insecure: true}
			}
			e := start(t, cfg)
			post := func(s send) answer {
				var b []byte
				if s.route == routeOne {
					b = body(t, testutil.Request(s.users[0]))
				} else {
					reqs := make([]versori.ActivationRequest, len(s.users))
					for i, u := range s.users {
						reqs[i] = testutil.Request(u)
					}
					b = body(t, reqs)
				}
				var h http.Header
				switch s.cred {
				case "s1":
					h = signed(t, secret1, "msg_1", time.Now(), b)
				case "s2":
					h = signed(t, secret2, "msg_1", time.Now(), b)
				case "A", "B":
					h = bearerHeader(map[string]string{"A": tokenA, "B": tokenB}[s.cred])
					h.Set(intake.HeaderWebhookID, "msg_1")
				default:
					h = http.Header{intake.HeaderWebhookID: {"msg_1"}}
				}
				return e.post(s.route, b, h)
			}
			first := post(tc.first)
			if first.code != 202 {
				t.Fatalf("first request: %s", first)
			}
			second := post(tc.second)
			isReplay := second.header.Get("Idempotent-Replayed") == "true"
			switch tc.want {
			case replayed:
				if second.code != 200 || !isReplay || !bytes.Equal(second.body, first.body) {
					t.Fatalf("second request: %s (replayed %t), want 200 with the first answer %s", second, isReplay, first.body)
				}
			case conflict:
				eb := wantError(t, second, 409, intake.HeaderWebhookID)
				if !strings.Contains(eb.Error, "different request") {
					t.Errorf("error %q does not say the id was used for a different request", eb.Error)
				}
				if second.header.Get("Retry-After") != "" || isReplay {
					t.Errorf("conflict with Retry-After %q, replayed %t: retrying cannot help", second.header.Get("Retry-After"), isReplay)
				}
			case handled:
				if isReplay {
					t.Fatalf("second request was answered with the first's result: %s", second)
				}
				code := 200
				if tc.wantStatus == producer.Enqueued {
					code = 202
				}
				if tc.second.route == routeOne {
					wantAccepted(t, second, code, tc.second.users[0], tc.wantStatus)
				} else if second.code != code {
					t.Fatalf("second batch: %s, want %d", second, code)
				} else if got := decode[[]intake.Accepted](t, second); len(got) != len(tc.second.users) || got[0].TaskID != taskID(tc.second.users[0]) {
					t.Fatalf("second batch answered %+v", got)
				}
			}
			var ids []string
			for _, u := range tc.tasks {
				ids = append(ids, taskID(u))
			}
			e.wantTasks(ids...)
			e.wantNoSecretsStored(secret1, secret2, tokenA, tokenB)
		})
	}

	// The report's scenario: five senders and routes reuse msg_1; every pair is queued.
	t.Run("five requests under one id", func(t *testing.T) {
		t.Parallel()
		e := start(t, intake.Config{Secrets: []string{secret1, secret2}, Tokens: []string{tokenA, tokenB}})
		withID := func(h http.Header) http.Header { h.Set(intake.HeaderWebhookID, "msg_1"); return h }
		b1, b2, b3, b5 := body(t, testutil.Request("u-1")), body(t, testutil.Request("u-2")), body(t, testutil.Request("u-3")), body(t, testutil.Request("u-5"))
		b4 := body(t, []versori.ActivationRequest{testutil.Request("u-4")})
		wantAccepted(t, e.post(routeOne, b1, signed(t, secret1, "msg_1", time.Now(), b1)), 202, "u-1", producer.Enqueued)
		wantAccepted(t, e.post(routeOne, b2, signed(t, secret2, "msg_1", time.Now(), b2)), 202, "u-2", producer.Enqueued)
		wantAccepted(t, e.post(routeOne, b3, withID(bearerHeader(tokenA))), 202, "u-3", producer.Enqueued)
		if a := e.post(routeBatch, b4, withID(bearerHeader(tokenA))); a.code != 202 {
			t.Errorf("batch: %s", a)
		}
		wantAccepted(t, e.post(routeOne, b5, withID(bearerHeader(tokenB))), 202, "u-5", producer.Enqueued)
		e.wantTasks(taskID("u-1"), taskID("u-2"), taskID("u-3"), taskID("u-4"), taskID("u-5"))
	})
}

// wantNoSecretsStored checks that no Redis key or value holds a secret or token, in any form.
func (e *env) wantNoSecretsStored(secrets ...string) {
	e.t.Helper()
	ctx := context.Background()
	keys, err := e.db.Client.Keys(ctx, "*").Result()
	if err != nil {
		e.t.Fatal(err)
	}
	for _, k := range keys {
		dump, _ := e.db.Client.Dump(ctx, k).Result()
		for _, s := range secrets {
			for _, form := range []string{s, strings.TrimPrefix(s, "whsec_")} {
				if strings.Contains(k, form) || strings.Contains(dump, form) {
					e.t.Errorf("Redis key %q holds a secret", k)
				}
			}
		}
		if rest, ok := rediskeys.WebhookIDDigest(k); ok {
			if _, err := hex.DecodeString(rest); err != nil || len(rest) != 64 {
				e.t.Errorf("webhook id key %q is not the prefix and a hex SHA-256", k)
			}
		}
	}
}

// TestBatchDecodesEachElementStrictly refuses a batch whose element is ambiguous or malformed,
// naming the element, and queues nothing of it.
func TestBatchDecodesEachElementStrictly(t *testing.T) {
	t.Parallel()
	e := start(t, intake.Config{Tokens: []string{tokenA}})
	good := string(body(t, testutil.Request("b-1")))
	ok := `"userId":"b-2","integrationId":"` + testutil.IntegrationID + `"`
	for _, tc := range []struct {
		name, body, field string
		index             int // -1: none
	}{
		{"field name in another case", `[` + good + `,{` + ok + `,"USERID":"b-3"}]`, "[1].USERID", 1},
		{"repeated field", `[{` + ok + `,"userId":"b-3"},` + good + `]`, "[0].userId", 0},
		{"unknown nested field", `[` + good + `,` + good + `,{` + ok + `,"connections":[{"templateId":"` + testutil.TemplateID + `","connectionId":"` + testutil.ConnectionID + `","extra":1}]}]`, "[2].connections[0].extra", 2},
		{"invalid field", `[` + good + `,{"userId":"b-2","integrationId":"nope"}]`, "[1].integrationId", 1},
		{"null element", `[` + good + `,null]`, "[1]", 1},
		{"string element", `[` + good + `,"b-2"]`, "[1]", 1},
		{"nested array", `[[` + good + `]]`, "[0]", 0},
		{"syntax error in an element", `[` + good + `,{"userId" "b-2"}]`, "[1]", 1},
		{"not UTF-8", "[{\"userId\":\"b-\xff\",\"integrationId\":\"" + testutil.IntegrationID + "\"}]", "", -1},
		{"not an array", good, "", -1},
		{"empty", `[]`, "", -1},
		{"two values", `[` + good + `] []`, "", -1},
		{"unterminated", `[` + good, "", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eb := wantError(t, e.post(routeBatch, []byte(tc.body), bearerHeader(tokenA)), 400, tc.field)
			switch {
			case tc.index < 0 && eb.Index != nil:
				t.Errorf("index %d, want none", *eb.Index)
			case tc.index >= 0 && (eb.Index == nil || *eb.Index != tc.index):
				t.Errorf("index %v, want %d", eb.Index, tc.index)
			}
			if tc.field != "" && !strings.HasPrefix(eb.Error, tc.field) {
				t.Errorf("error %q does not start with the field", eb.Error)
			}
		})
	}
	e.wantTasks()
}

// TestLowerCaseULIDs posts requests whose ULIDs are in lower case: they are queued under the
// canonical task id, so that one pair is one job whatever its case, and its status can be read
// under either spelling.
func TestLowerCaseULIDs(t *testing.T) {
	t.Parallel()
	lower := func(user string) versori.ActivationRequest {
		r := testutil.Request(user)
		r.IntegrationID = strings.ToLower(r.IntegrationID)
		r.Connections[0].TemplateID = strings.ToLower(r.Connections[0].TemplateID)
		r.Connections[0].ConnectionID = strings.ToLower(r.Connections[0].ConnectionID)
		return r
	}
	mixed := func(user string) versori.ActivationRequest {
		r := lower(user)
		r.IntegrationID = r.IntegrationID[:13] + strings.ToUpper(r.IntegrationID[13:])
		return r
	}
	for _, tc := range []struct {
		name  string
		route string
		req   versori.ActivationRequest
	}{
		{"one request, lower case", routeOne, lower("u-1")},
		{"one request, mixed case", routeOne, mixed("u-1")},
		{"batch, lower case", routeBatch, lower("u-1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := start(t, intake.Config{Tokens: []string{tokenA}})
			b := body(t, tc.req)
			if tc.route == routeBatch {
				b = body(t, []versori.ActivationRequest{tc.req})
			}
			a := e.post(tc.route, b, bearerHeader(tokenA))
			if tc.route == routeOne {
				wantAccepted(t, a, 202, "u-1", producer.Enqueued)
			} else if got := decode[[]intake.Accepted](t, a); a.code != 202 || len(got) != 1 || got[0].TaskID != taskID("u-1") {
				t.Fatalf("batch: %s, want task %s", a, taskID("u-1"))
			}
			e.wantTasks(taskID("u-1"))
			info, err := asynq.NewInspectorFromRedisClient(e.db.Client).GetTaskInfo(queue, taskID("u-1"))
			if err != nil {
				t.Fatal(err)
			}
			if pl, err := tasks.DecodePayload(info.Payload); err != nil || fmt.Sprint(pl.Request) != fmt.Sprint(testutil.Request("u-1")) {
				t.Errorf("queued request %+v (%v), want the canonical %+v", pl.Request, err, testutil.Request("u-1"))
			}
			// The same pair in upper case is the same job.
			wantAccepted(t, e.post(routeOne, body(t, testutil.Request("u-1")), bearerHeader(tokenA)), 200, "u-1", producer.Duplicate)
			// Its status, asked for with the task id the client would make from its own request.
			for _, id := range []string{tasks.TaskID(tc.req.Pair()), "act:" + strings.ToLower(testutil.IntegrationID) + ":u-1"} {
				st := decode[intake.TaskStatus](t, e.do("GET", "/v1/activations/"+id, nil, bearerHeader(tokenA)))
				if st.TaskID != taskID("u-1") || st.State != "pending" {
					t.Errorf("status of %s: %+v, want %s pending", id, st, taskID("u-1"))
				}
			}
		})
	}

	// A task queued under a lower-case id before ids were canonical is still found.
	t.Run("task queued in lower case", func(t *testing.T) {
		t.Parallel()
		e := start(t, intake.Config{Tokens: []string{tokenA}})
		req := lower("u-old")
		task, err := tasks.NewTask(tasks.Payload{Request: req})
		if err != nil {
			t.Fatal(err)
		}
		c := asynq.NewClientFromRedisClient(e.db.Client)
		if _, err := c.Enqueue(task, asynq.Queue(queue)); err != nil {
			t.Fatal(err)
		}
		old := tasks.TaskID(req.Pair())
		st := decode[intake.TaskStatus](t, e.do("GET", "/v1/activations/"+old, nil, bearerHeader(tokenA)))
		if st.TaskID != old || st.State != "pending" {
			t.Errorf("status of %s: %+v", old, st)
		}
		wantError(t, e.do("GET", "/v1/activations/"+strings.ToLower(taskID("u-none")), nil, bearerHeader(tokenA)), 404, "taskId")
	})
}

// TestAnswersAreNotHTMLEscaped checks that an error answer says "Bearer <token>" as it is, not
// "Bearer \u003ctoken\u003e": the answers are JSON for programs and people, not HTML.
func TestAnswersAreNotHTMLEscaped(t *testing.T) {
	t.Parallel()
	e := start(t, intake.Config{Tokens: []string{tokenA}})
	a := e.post("/v1/activations", body(t, testutil.Request("u-1")), nil)
	wantError(t, a, 401, "")
	if got := string(a.body); !strings.Contains(got, "Authorization: Bearer <token>") || strings.Contains(got, `\u003c`) {
		t.Errorf("answer = %s, want it to say Bearer <token> unescaped", got)
	}
}

// TestEvictionPolicyMetric checks that the intake's /metrics exports activator_redis_eviction_policy,
// as the worker's does, and keeps it current while it serves: a policy changed with CONFIG SET shows
// within an interval.
func TestEvictionPolicyMetric(t *testing.T) {
	t.Parallel()
	rs := testutil.StartRedisServer(t, false, "--maxmemory-policy", "allkeys-lru")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e := startWith(t, nil, rs.Client, intake.Config{Tokens: []string{tokenA}, EvictionCheckInterval: 100 * time.Millisecond},
		producer.Config{Queue: queue})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- e.srv.Serve(ctx, ln) }()
	for _, tc := range []struct {
		set, want string
	}{
		{"", `activator_redis_eviction_policy{policy="allkeys-lru"} 1`},
		{"noeviction", `activator_redis_eviction_policy{policy="noeviction"} 1`},
		{"volatile-lru", `activator_redis_eviction_policy{policy="volatile-lru"} 1`},
	} {
		if tc.set != "" {
			if err := rs.Client.ConfigSet(ctx, "maxmemory-policy", tc.set).Err(); err != nil {
				t.Fatal(err)
			}
		}
		var last string
		testutil.WaitFor(t, 10*time.Second, "the intake's /metrics to say "+tc.want, func() bool {
			last = string(e.do("GET", "/metrics", nil, nil).body)
			return strings.Contains(last, tc.want)
		})
		if n := strings.Count(last, "activator_redis_eviction_policy{"); n != 1 {
			t.Errorf("%d series of activator_redis_eviction_policy, want 1:\n%s", n, last)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if !strings.Contains(e.logs.String(), "maxmemory-policy is allkeys-lru") {
		t.Errorf("no warning of the evicting policy in the log:\n%s", e.logs)
	}
}
