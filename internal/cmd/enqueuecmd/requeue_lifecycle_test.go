package enqueuecmd_test

import (
	"strings"
	"testing"

	"github.com/versori/activator/internal/cmd/enqueuecmd"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

// TestDLQRequeueFileTakesTheRowsEndUser: operations.md's fix for a not_found dead letter is to
// requeue it with --file rows that carry endUser, so that its job creates the user. The requeued
// job must carry that end user (sealed), and a row's end user credentials without a key are
// refused as everywhere.
func TestDLQRequeueFileTakesTheRowsEndUser(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	req := request("u-unknown")
	addDeadLetter(t, db, req, tasks.ReasonNotFound)
	path := testutil.WriteFile(t, "fixed.jsonl", withEndUser(t, req)+"\n")

	// Without a key the row's credentials may not be stored: refused, nothing requeued.
	r := run(t, map[string]string{"REDIS_URL": db.URL()}, "", "dlq", "requeue", "--file", path)
	if r.code != enqueuecmd.ExitRejected || !strings.Contains(r.stdout, "requeued: 0") {
		t.Errorf("requeue --file of a row with endUser credentials and no key: want exit 1, none requeued:\n%s", r)
	}
	if strings.Contains(r.stdout+r.stderr, "s3cret") {
		t.Errorf("the output shows the end user's credentials:\n%s", r)
	}

	r = runDB(t, db, "", "dlq", "requeue", "--file", path)
	if r.code != enqueuecmd.ExitOK || !strings.Contains(r.stdout, "requeued: 1") {
		t.Fatalf("requeue --file: want exit 0, 1 requeued:\n%s", r)
	}
	info, err := inspector(db).GetTaskInfo(queue, id(req))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(info.Payload), "s3cret") {
		t.Errorf("the requeued payload holds the end user's credentials in plain text")
	}
	pl, _ := payload(t, db, queue, id(req))
	if pl.EndUser == nil || pl.EndUser.DisplayName != "Ada" || pl.EndUser.PrimaryConnection == nil ||
		!strings.Contains(string(pl.EndUser.PrimaryConnection.Credentials), "s3cret") {
		t.Errorf("requeued job's end user = %+v, want the row's (Ada, its credentials)", pl.EndUser)
	}
}

// TestDLQRequeueFileEndUserBesideSealedCredentials: a dead letter whose connection credentials
// are sealed, fixed with its `dlq export` row plus an endUser, requeues with both: the
// connection's sealed credentials and the row's end user, sealed again together.
func TestDLQRequeueFileEndUserBesideSealedCredentials(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	keys, err := tasks.ParseKeyring(testKeys)
	if err != nil {
		t.Fatal(err)
	}
	req := secretRequest("u-sealed")
	p := tasks.Payload{Request: req}
	if err := p.Seal(keys); err != nil {
		t.Fatal(err)
	}
	addDeadLetter(t, db, p.Request, tasks.ReasonNotFound, func(e *deadletter.Entry) { e.Secrets = p.Secrets })
	export := strings.TrimSpace(runDB(t, db, "", "dlq", "export").stdout)
	path := testutil.WriteFile(t, "fixed.jsonl", export[:len(export)-1]+","+endUserMember+"}\n")
	r := runDB(t, db, "", "dlq", "requeue", "--file", path)
	if r.code != enqueuecmd.ExitOK || !strings.Contains(r.stdout, "requeued: 1") {
		t.Fatalf("requeue --file: want exit 0, 1 requeued:\n%s", r)
	}
	got, _ := payload(t, db, queue, id(req))
	sameRequest(t, got.Request, req)
	if got.EndUser == nil || !strings.Contains(string(got.EndUser.PrimaryConnection.Credentials), "s3cret") {
		t.Errorf("requeued job's end user = %+v, want the row's", got.EndUser)
	}
}

// TestDLQRequeueFileOfDeactivation: a deactivation's dead letter fixed with the onboarding row (its
// connections, credentials and endUser) requeues as a deactivation holding the pair alone, as
// `enqueue deactivate` would queue it: no key is needed, and no credential is stored.
func TestDLQRequeueFileOfDeactivation(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	req := secretRequest("u-gone")
	pair := versori.ActivationRequest{UserID: req.UserID, IntegrationID: req.IntegrationID}
	row := withEndUser(t, req)
	path := testutil.WriteFile(t, "rows.jsonl", row+"\n")
	for _, verb := range []string{"file", "deactivate"} {
		if r := runDB(t, db, "", verb, "--quiet", path); r.code != 0 {
			t.Fatalf("%s: %s", verb, r)
		}
	}
	// The deactivation (seq 1) dead-letters: its task leaves the queue for the store.
	deact := tasks.TaskIDAt(pair.Pair(), 1)
	if err := inspector(db).DeleteTask(queue, deact); err != nil {
		t.Fatal(err)
	}
	addDeadLetter(t, db, pair, tasks.ReasonUnauthorized, func(e *deadletter.Entry) {
		e.ID, e.Op, e.Seq = deact, tasks.OpDeactivate, 1
	})

	r := run(t, map[string]string{"REDIS_URL": db.URL()}, "", "dlq", "requeue", "--file", path)
	if r.code != enqueuecmd.ExitOK || !strings.Contains(r.stdout, "requeued: 1") {
		t.Fatalf("requeue --file of a deactivation with the onboarding row, no key: want exit 0, 1 requeued:\n%s", r)
	}
	info, err := inspector(db).GetTaskInfo(queue, deact)
	if err != nil {
		t.Fatal(err)
	}
	pl, err := tasks.DecodePayload(info.Payload)
	if err != nil {
		t.Fatal(err)
	}
	if pl.Op != tasks.OpDeactivate || pl.Seq != 1 || len(pl.Request.Connections) != 0 || pl.Request.DynamicVariables != nil ||
		pl.EndUser != nil || pl.Secrets != "" || strings.Contains(string(info.Payload), endUserSecret) {
		t.Errorf("requeued deactivation holds more than its pair: %s", info.Payload)
	}
}
