package jobs_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/jobs"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

func keyring(t *testing.T, spec string) *tasks.Keyring {
	t.Helper()
	k, err := tasks.ParseKeyring(spec)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestReencryptDeadLetterWithEndUser: a dead letter whose end user's credentials are sealed with
// the request's is sealed again with the new key, keeping its operation and end user, and opens.
func TestReencryptDeadLetterWithEndUser(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ctx := context.Background()
	a := "a:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("a", 32)))
	b := "b:" + base64.StdEncoding.EncodeToString([]byte(strings.Repeat("b", 32)))
	req := testutil.Request("u-reencrypt")
	p := tasks.Payload{Request: req, Op: tasks.OpUpdate, Seq: 2, EndUser: &tasks.EndUser{DisplayName: "R",
		PrimaryConnection: &versori.ConnectionCreate{Name: "primary", Credentials: json.RawMessage(`{"token":"SECRET-R"}`),
			Variables: []versori.ConnectionVariable{}}}}
	if err := p.Seal(keyring(t, a)); err != nil {
		t.Fatal(err)
	}
	store := deadletter.NewStore(db.Client, "activations")
	e := deadletter.Entry{ID: tasks.TaskIDAt(req.Pair(), p.Seq), Reason: tasks.ReasonNotFound, Error: "x", Queue: "activations"}
	e.Keep(p)
	if _, err := store.Add(ctx, e); err != nil {
		t.Fatal(err)
	}
	q := jobs.New(db.Client, jobs.Config{Queue: "activations", Keys: keyring(t, b+","+a)})
	sum, err := q.Reencrypt(ctx)
	if err != nil || sum.DeadLetters != 1 || sum.Unreadable != 0 {
		t.Fatalf("Reencrypt = %+v, %v", sum, err)
	}
	got, err := store.Get(ctx, e.ID)
	if err != nil || len(got) != 1 {
		t.Fatalf("Get = %v, %v", got, err)
	}
	if tasks.SecretKeyID(got[0].Secrets) != "b" || got[0].Op != tasks.OpUpdate || got[0].Seq != 2 {
		t.Fatalf("resealed entry = %+v", got[0])
	}
	back := got[0].Payload()
	if err := back.Open(keyring(t, b)); err != nil || string(back.EndUser.PrimaryConnection.Credentials) != `{"token":"SECRET-R"}` {
		t.Errorf("the resealed entry opens to %+v, %v", back.EndUser, err)
	}
}

// TestRequeueFileKeepsEndUserSeal: a corrected row for a dead letter whose end user's credentials
// are sealed queues the job with that seal and end user, which open with the key.
func TestRequeueFileKeepsEndUserSeal(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ctx := context.Background()
	keys := keyring(t, "a:"+base64.StdEncoding.EncodeToString([]byte(strings.Repeat("a", 32))))
	req := testutil.Request("u-requeue-file")
	p := tasks.Payload{Request: req, EndUser: &tasks.EndUser{DisplayName: "F",
		PrimaryConnection: &versori.ConnectionCreate{Name: "primary", Credentials: json.RawMessage(`{"token":"SECRET-F"}`),
			Variables: []versori.ConnectionVariable{}}}}
	if err := p.Seal(keys); err != nil {
		t.Fatal(err)
	}
	store := deadletter.NewStore(db.Client, "activations")
	e := deadletter.Entry{ID: tasks.TaskID(req.Pair()), Reason: tasks.ReasonNotFound, Error: "x", Queue: "activations"}
	e.Keep(p)
	if _, err := store.Add(ctx, e); err != nil {
		t.Fatal(err)
	}
	q := jobs.New(db.Client, jobs.Config{Queue: "activations", Keys: keys})
	path := testutil.WriteJSONL(t, filepath.Join(t.TempDir(), "fixed.jsonl"), req)
	sum, err := q.RequeueFile(ctx, jobs.RequeueFileOptions{Path: path})
	if err != nil || sum.Requeued != 1 {
		t.Fatalf("RequeueFile = %+v, %v", sum, err)
	}
	ti, err := asynq.NewInspectorFromRedisClient(db.Client).GetTaskInfo("activations", e.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := tasks.DecodePayload(ti.Payload)
	if err != nil || got.Secrets != p.Secrets || got.EndUser == nil || !got.Reconcile {
		t.Fatalf("requeued payload = %+v, %v", got, err)
	}
	if err := got.Open(keys); err != nil || string(got.EndUser.PrimaryConnection.Credentials) != `{"token":"SECRET-F"}` {
		t.Errorf("the requeued job opens to %+v, %v", got.EndUser, err)
	}
}
