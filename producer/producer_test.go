package producer_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

// TestEnqueueTakesOverAnIdlePair: a pair another queue owns is a duplicate while that queue has a
// job or a dead letter for it, or claimed it less than a minute ago (its enqueue may be on its way).
// Once it has neither (an enqueue that failed after its claim, a finished job whose record expired,
// a dead letter trimmed by retention), another queue takes the pair over, and its job looks first:
// the request is not dropped as a duplicate of nothing.
func TestEnqueueTakesOverAnIdlePair(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ctx := context.Background()
	eu := producer.New(db.Client, producer.Config{Queue: "eu"})
	us := producer.New(db.Client, producer.Config{Queue: "us"})
	req := versori.ActivationRequest{UserID: "u-1", IntegrationID: testutil.IntegrationID}
	id := tasks.TaskID(req.Pair())
	age := func() { // the eu claim, two minutes old
		key := rediskeys.Pair(id)
		if err := db.Client.Set(ctx, key, "eu|"+strconv.FormatInt(time.Now().Add(-2*time.Minute).Unix(), 10), 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	enqueue := func(p *producer.Producer) producer.Result {
		t.Helper()
		res, err := p.Enqueue(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}

	if res := enqueue(eu); res.Status != producer.Enqueued {
		t.Fatalf("eu: %+v, want enqueued", res)
	}
	age()
	if res := enqueue(us); res.Status != producer.Duplicate || res.Owner != "eu" {
		t.Fatalf("us, while eu has the job: %+v, want a duplicate owned by eu", res)
	}
	// eu's job ends as a dead letter: still eu's.
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	if err := insp.DeleteTask("eu", id); err != nil {
		t.Fatal(err)
	}
	if _, err := deadLetters(db.Client, eu).Add(ctx, deadletter.Entry{ID: id, Reason: tasks.ReasonNotFound, Request: req}); err != nil {
		t.Fatal(err)
	}
	if res := enqueue(us); res.Status != producer.Duplicate || res.Owner != "eu" {
		t.Fatalf("us, while eu has the dead letter: %+v, want a duplicate owned by eu", res)
	}
	// The dead letter goes (as DLQ_MAX_AGE's trim would, had it not released the pair): eu has
	// nothing, but its claim is fresh, so us waits.
	if _, err := deadLetters(db.Client, eu).Remove(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := db.Client.Set(ctx, rediskeys.Pair(id), "eu|"+strconv.FormatInt(time.Now().Unix(), 10), 0).Err(); err != nil {
		t.Fatal(err)
	}
	if res := enqueue(us); res.Status != producer.Duplicate {
		t.Fatalf("us, with eu's claim a moment old: %+v, want a duplicate", res)
	}
	age()
	if res := enqueue(us); res.Status != producer.Enqueued {
		t.Fatalf("us, with eu idle: %+v, want enqueued", res)
	}
	info, err := insp.GetTaskInfo("us", id)
	if err != nil {
		t.Fatal(err)
	}
	p, err := tasks.DecodePayload(info.Payload)
	if err != nil || !p.Reconcile {
		t.Errorf("the taken-over job: %+v, %v; want it to look first", p, err)
	}
	if res := enqueue(eu); res.Status != producer.Duplicate || res.Owner != "us" {
		t.Errorf("eu, after the take-over: %+v, want a duplicate owned by us", res)
	}
}

// TestEnqueueKnowsPairsQueuedBeforeTheRegistry: pairs queued by a release without the pair registry
// (a task in asynq, a dead letter) are recorded for their queue before the first claim, so that they
// are not Fresh: another queue's enqueue is a duplicate, and the owner's, once the task is gone,
// looks first.
func TestEnqueueKnowsPairsQueuedBeforeTheRegistry(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ctx := context.Background()
	old := versori.ActivationRequest{UserID: "u-old", IntegrationID: testutil.IntegrationID}
	dead := versori.ActivationRequest{UserID: "u-dead", IntegrationID: testutil.IntegrationID}
	// As an older release queued them: no claim.
	task, err := tasks.NewTask(tasks.Payload{Request: old}, asynq.Queue("eu"))
	if err != nil {
		t.Fatal(err)
	}
	client := asynq.NewClientFromRedisClient(db.Client)
	if _, err := client.EnqueueContext(ctx, task); err != nil {
		t.Fatal(err)
	}
	if _, err := deadletter.NewStore(db.Client, "eu").Add(ctx, deadletter.Entry{ID: tasks.TaskID(dead.Pair()), Reason: tasks.ReasonNotFound, Request: dead}); err != nil {
		t.Fatal(err)
	}

	us := producer.New(db.Client, producer.Config{Queue: "us"})
	for _, req := range []versori.ActivationRequest{old, dead} {
		res, err := us.Enqueue(ctx, req)
		if err != nil || res.Status != producer.Duplicate || res.Owner != "eu" {
			t.Errorf("us.Enqueue(%s) = %+v, %v; want a duplicate owned by eu", req.UserID, res, err)
		}
	}
	eu := producer.New(db.Client, producer.Config{Queue: "eu"})
	if err := asynq.NewInspectorFromRedisClient(db.Client).DeleteTask("eu", tasks.TaskID(old.Pair())); err != nil {
		t.Fatal(err)
	}
	res, err := eu.Enqueue(ctx, old)
	if err != nil || res.Status != producer.Enqueued {
		t.Fatalf("eu.Enqueue after the record expired = %+v, %v; want enqueued", res, err)
	}
	info, err := asynq.NewInspectorFromRedisClient(db.Client).GetTaskInfo("eu", res.TaskID)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := tasks.DecodePayload(info.Payload); err != nil || !p.Reconcile {
		t.Errorf("the job of a pair queued before: %+v, %v; want it to look first", p, err)
	}
}

// TestEnqueueAfterUpgradeFromLowerCaseIDs: a release before ULIDs were made canonical queued pairs
// and stored dead letters under task ids spelt as the rows spelt them. After the upgrade, the same
// pairs (now canonical) must be found: a dead letter is a dead letter, and a pair with a task is
// queued again only with a look-up first.
func TestEnqueueAfterUpgradeFromLowerCaseIDs(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ctx := context.Background()
	lower := strings.ToLower(testutil.IntegrationID)
	done := versori.ActivationRequest{UserID: "u-done", IntegrationID: testutil.IntegrationID}
	dead := versori.ActivationRequest{UserID: "u-dead", IntegrationID: testutil.IntegrationID}
	// As the old release left them: a retained task and a dead letter under lower-case ids.
	oldTask := asynq.NewTask(tasks.TypeActivate, []byte(`{"request":{"userId":"u-done","integrationId":"`+lower+`","connections":[]}}`))
	if _, err := asynq.NewClientFromRedisClient(db.Client).EnqueueContext(ctx, oldTask, asynq.Queue("activations"),
		asynq.TaskID("act:"+lower+":u-done"), asynq.Retention(time.Hour)); err != nil {
		t.Fatal(err)
	}
	store := deadletter.NewStore(db.Client, "activations")
	if _, err := store.Add(ctx, deadletter.Entry{ID: "act:" + lower + ":u-dead", Reason: tasks.ReasonNotFound,
		Request: versori.ActivationRequest{UserID: "u-dead", IntegrationID: lower}}); err != nil {
		t.Fatal(err)
	}

	p := producer.New(db.Client, producer.Config{})
	res, err := p.Enqueue(ctx, dead)
	if err != nil || res.Status != producer.DeadLettered {
		t.Errorf("Enqueue(u-dead) = %+v, %v; want dead_lettered", res, err)
	}
	if es, _ := store.Get(ctx, tasks.TaskID(dead.Pair())); len(es) != 1 || es[0].Request.IntegrationID != testutil.IntegrationID {
		t.Errorf("the dead letter under its canonical id = %+v, want it moved there", es)
	}
	res, err = p.Enqueue(ctx, done)
	if err != nil || res.Status != producer.Enqueued {
		t.Fatalf("Enqueue(u-done) = %+v, %v", res, err)
	}
	info, err := asynq.NewInspectorFromRedisClient(db.Client).GetTaskInfo("activations", res.TaskID)
	if err != nil {
		t.Fatal(err)
	}
	if pl, err := tasks.DecodePayload(info.Payload); err != nil || !pl.Reconcile {
		t.Errorf("the job of a pair with an old task: %+v, %v; want it to look first", pl, err)
	}
}

// deadLetters is the dead-letter store of p's queue on rdb.
func deadLetters(rdb redis.UniversalClient, p *producer.Producer) *deadletter.Store {
	return deadletter.NewStore(rdb, p.Queue())
}
