package inspect_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/versori/activator/inspect"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

// TestRequeueRefusesAnotherPair checks that a dead letter is requeued only for its own task's pair:
// one whose stored request names another pair, or none (what could be read of a payload the worker
// could not), is reported invalid and kept, and a sound one beside it is requeued.
func TestRequeueRefusesAnotherPair(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ctx := context.Background()
	queue := "inspect-requeue"
	store := deadletter.NewStore(db.Client, queue)
	entry := func(id string, req versori.ActivationRequest) deadletter.Entry {
		return deadletter.Entry{ID: id, UserID: req.UserID, IntegrationID: req.IntegrationID, Reason: tasks.ReasonInvalidRequest,
			Error: "x", Attempts: 1, FailedAt: time.Now(), DeadLetteredAt: time.Now(), Queue: queue, Request: req}
	}
	alice := tasks.TaskID(versori.Pair{UserID: "alice", IntegrationID: testutil.IntegrationID})
	carol := tasks.TaskID(versori.Pair{UserID: "carol", IntegrationID: testutil.IntegrationID})
	dave := tasks.TaskID(versori.Pair{UserID: "dave", IntegrationID: testutil.IntegrationID})
	for _, e := range []deadletter.Entry{
		entry(alice, testutil.Request("bob")), // read as another user's
		entry(carol, versori.ActivationRequest{IntegrationID: testutil.IntegrationID}),
		entry(dave, testutil.Request("dave")),
	} {
		if _, err := store.Add(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	res, err := inspect.New(db.Client, producer.Config{Queue: queue}).Requeue(ctx, []string{alice, carol, dave})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Requeued) != 1 || res.Requeued[0] != dave {
		t.Errorf("requeued %v, want only %s", res.Requeued, dave)
	}
	invalid := map[string]string{}
	for _, e := range res.Invalid {
		invalid[e.ID] = e.Err.Error()
	}
	if !strings.Contains(invalid[alice], "not the dead letter's task") || invalid[carol] == "" || len(invalid) != 2 {
		t.Errorf("invalid %v, want %s (another pair) and %s (no user)", invalid, alice, carol)
	}
	if n, _ := store.Count(ctx, ""); n != 2 {
		t.Errorf("%d dead letters kept, want 2", n)
	}
}
