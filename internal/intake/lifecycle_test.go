package intake_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/activator/internal/intake"
	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/tasks"
)

// deactivationID is the task id of user's pair's operation seq.
func deactivationID(user string, seq int64) string {
	return tasks.TaskIDAt(testutil.Request(user).Pair(), seq)
}

// wantOp checks an answer of a POST whose job is the pair's operation seq.
func wantOp(t *testing.T, a answer, code int, user string, seq int64, status producer.Status) {
	t.Helper()
	if a.code != code {
		t.Fatalf("answer %s, want %d", a, code)
	}
	acc := decode[intake.Accepted](t, a)
	if want := (intake.Accepted{TaskID: deactivationID(user, seq), Batch: intake.DefaultBatch, Status: status}); acc != want {
		t.Fatalf("body %+v, want %+v", acc, want)
	}
}

// payloadOf reads the payload of the queued task id.
func (e *env) payloadOf(id string) tasks.Payload {
	e.t.Helper()
	info, err := asynq.NewInspectorFromRedisClient(e.db.Client).GetTaskInfo(queue, id)
	if err != nil {
		e.t.Fatalf("task %s: %v", id, err)
	}
	pl, err := tasks.DecodePayload(info.Payload)
	if err != nil {
		e.t.Fatalf("task %s: %v", id, err)
	}
	return pl
}

// TestDeactivations posts a pair's activation, deactivation and activation again: three jobs of
// rising seq; a repeated deactivation is a duplicate; the route takes the activation's body as
// it is, keeps the pair alone, and refuses what the activation route refuses.
func TestDeactivations(t *testing.T) {
	t.Parallel()
	e := start(t, intake.Config{Tokens: []string{tokenA}})
	h := bearerHeader(tokenA)
	act := body(t, testutil.Request("u-1"))
	// The activation's body, with an end user whose credentials would need a key: dropped.
	deact := append(bytes.TrimSuffix(act, []byte("}")), `,"endUser":{"primaryConnection":{"name":"crm","credentials":{"k":"s3cret"},"variables":[]}}}`...)

	wantOp(t, e.post("/v1/activations", act, h), 202, "u-1", 0, producer.Enqueued)
	wantOp(t, e.post("/v1/deactivations", deact, h), 202, "u-1", 1, producer.Enqueued)
	wantOp(t, e.post("/v1/deactivations", deact, h), 200, "u-1", 1, producer.Duplicate)
	wantOp(t, e.post("/v1/activations", act, h), 202, "u-1", 2, producer.Enqueued)
	e.wantTasks(deactivationID("u-1", 0), deactivationID("u-1", 1), deactivationID("u-1", 2))
	pl := e.payloadOf(deactivationID("u-1", 1))
	if pl.Op != tasks.OpDeactivate || pl.Seq != 1 || pl.EndUser != nil || len(pl.Request.Connections) != 0 {
		t.Errorf("deactivation's payload: op %q seq %d end user %+v request %+v", pl.Op, pl.Seq, pl.EndUser, pl.Request)
	}

	for _, tt := range []struct {
		name, body string
		code       int
		field      string
	}{
		{"unknown field", `{"userId":"u-2","integrationId":"` + testutil.IntegrationID + `","colour":"red"}`, 400, "colour"},
		{"no integration", `{"userId":"u-2"}`, 400, "integrationId"},
		{"not JSON", `{"userId":`, 400, ""},
		{"bad end user", `{"userId":"u-2","integrationId":"` + testutil.IntegrationID + `","endUser":{"primaryConnection":{}}}`, 400, "endUser.primaryConnection.name"},
	} {
		wantError(t, e.post("/v1/deactivations", []byte(tt.body), h), tt.code, tt.field)
	}
	wantError(t, e.post("/v1/deactivations", act, nil), 401, "")
	wantError(t, e.post("/v1/deactivations", act, bearerHeader(tokenB)), 401, "")
	wantError(t, e.do(http.MethodGet, "/v1/deactivations", nil, h), 405, "")

	// The batch form, all-or-nothing as the activations' batch.
	two := []byte("[" + string(body(t, testutil.Request("u-3"))) + "," + string(body(t, testutil.Request("u-4"))) + "]")
	a := e.post("/v1/deactivations:batch", two, h)
	if a.code != 202 {
		t.Fatalf("batch: %s", a)
	}
	if accs := decode[[]intake.Accepted](t, a); len(accs) != 2 || accs[0].TaskID != deactivationID("u-3", 1) || accs[1].TaskID != deactivationID("u-4", 1) {
		t.Errorf("batch answer %s", a)
	}
	eb := wantError(t, e.post("/v1/deactivations:batch", []byte(`[{"userId":"u-5","integrationId":"`+testutil.IntegrationID+`"},{"userId":""}]`), h), 400, "[1].userId")
	if eb.Index == nil || *eb.Index != 1 {
		t.Errorf("bad batch: index %v, want 1", eb.Index)
	}
}

// TestDeactivationWebhookIDs: a signed deactivation is handled once per webhook id, and its id is
// refused on the activations route.
func TestDeactivationWebhookIDs(t *testing.T) {
	t.Parallel()
	secret := newSecret(t)
	e := start(t, intake.Config{Secrets: []string{secret}})
	b := body(t, testutil.Request("u-1"))
	wantError(t, e.post("/v1/deactivations", b, signed(t, secret, "msg_1", time.Now().Add(-time.Hour), b)), 401, "")
	first := e.post("/v1/deactivations", b, signed(t, secret, "msg_1", time.Now(), b))
	wantOp(t, first, 202, "u-1", 1, producer.Enqueued)
	again := e.post("/v1/deactivations", b, signed(t, secret, "msg_1", time.Now().Add(time.Second), b))
	if again.code != 200 || !bytes.Equal(again.body, first.body) || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %s, want 200 with the first body %s, replayed", again, first.body)
	}
	other := body(t, testutil.Request("u-2"))
	wantError(t, e.post("/v1/deactivations", other, signed(t, secret, "msg_1", time.Now(), other)), 409, intake.HeaderWebhookID)
	// The same signed id on the activations route: a replay of the deactivation there, which would
	// activate the pair again, is refused (TestSignedRequestNotReplayedOnAnotherRoute).
	wantError(t, e.post("/v1/activations", b, signed(t, secret, "msg_1", time.Now(), b)), 409, intake.HeaderWebhookID)
	key := rediskeys.WebhookID(signedScope, credSecret(t, secret), "msg_1")
	if n := e.db.Client.Exists(context.Background(), key).Val(); n != 1 {
		t.Errorf("no webhook id record under the signed requests' scope")
	}
}

// TestActivationWithEndUser: the activation routes take endUser, whose job carries it; its
// credentials are held to the request's rule (no key: refused, naming the field).
func TestActivationWithEndUser(t *testing.T) {
	t.Parallel()
	const end = `"endUser":{"displayName":"Ada","primaryConnection":{"name":"crm","credentials":{"k":"s3cret"},"variables":[{"name":"region","value":"EU"}]}}`
	row := func(user string) []byte {
		return append(bytes.TrimSuffix(body(t, testutil.Request(user)), []byte("}")), ","+end+"}"...)
	}
	db := testutil.Redis(t)
	e := startWith(t, db, db.Client, intake.Config{Tokens: []string{tokenA}}, producer.Config{Queue: queue, AllowPlaintext: true})
	h := bearerHeader(tokenA)
	wantAccepted(t, e.post("/v1/activations", row("u-1"), h), 202, "u-1", producer.Enqueued)
	pl := e.payloadOf(taskID("u-1"))
	if pl.EndUser == nil || pl.EndUser.DisplayName != "Ada" || pl.EndUser.PrimaryConnection == nil ||
		pl.EndUser.PrimaryConnection.Name != "crm" || len(pl.EndUser.PrimaryConnection.Variables) != 1 {
		t.Errorf("payload's end user %+v", pl.EndUser)
	}
	a := e.post("/v1/activations:batch", []byte("["+string(row("u-2"))+"]"), h)
	if a.code != 202 || e.payloadOf(taskID("u-2")).EndUser == nil {
		t.Errorf("batch with an end user: %s", a)
	}
	wantError(t, e.post("/v1/activations", []byte(strings.Replace(string(row("u-3")), `"displayName"`, `"externalId":"u-9","displayName"`, 1)), h), 400, "endUser.externalId")

	strict := start(t, intake.Config{Tokens: []string{tokenA}}) // no keys, no plaintext
	eb := wantError(t, strict.post("/v1/activations", row("u-1"), h), 400, "endUser.primaryConnection.credentials")
	if strings.Contains(eb.Error, "s3cret") {
		t.Errorf("error quotes the credentials: %s", eb.Error)
	}
	strict.wantTasks()
}
