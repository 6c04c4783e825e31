package rediskeys_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/testutil"
)

// TestKeys pins every key's string: they are a stored format, read by the previous release's
// workers and by data already in users' Redis.
func TestKeys(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ got, want string }{
		{rediskeys.Batch("q", "b1"), "activator:{q}:batch:b1"},
		{rediskeys.BatchCompletions("q", "b1"), "activator:{q}:batch-completions:b1"},
		{rediskeys.DeadLetters("q"), "activator:{q}:dlq"},
		{rediskeys.DeadLettersByTime("q"), "activator:{q}:dlq:time"},
		{rediskeys.DeadLettersByReasonPrefix("q"), "activator:{q}:dlq:reason:"},
		{rediskeys.DeadLettersByReason("q", "not_found"), "activator:{q}:dlq:reason:not_found"},
		{rediskeys.DeadLettersPattern, "activator:{*}:dlq"},
		{rediskeys.PausedReason("q"), "activator:{q}:paused_reason"},
		{rediskeys.Backoff("q"), "activator:{q}:backoff_until"},
		{rediskeys.RateLimit("q"), "rate:activator:{q}:ratelimit"},
		{rediskeys.RedisRunID("q"), "activator:{q}:redis-run-id"},
		{rediskeys.Pair("act:x"), "activator:{pairs}:act:x"},
		{rediskeys.PairsBackfilled, "activator:{pairs}:backfilled"},
		// The SHA-256 of "route|cred|id".
		{rediskeys.WebhookID("route", "cred", "id"), "activator:intake:whid:" + "37eb7346c9401e404d4341c2c83e55ea68e9c6069a3f008a10ed0dc6fca518df"},
		{rediskeys.TestClaim(3), "activator-test:claim:3"},
		{rediskeys.TestOwned, "activator-test:owned"},
		{rediskeys.AsynqTask("q", "id"), "asynq:{q}:t:id"},
		{rediskeys.AsynqTasksPattern("act:"), "asynq:{*}:t:act:*"},
		{rediskeys.AsynqPending("q"), "asynq:{q}:pending"},
		{rediskeys.AsynqActive("q"), "asynq:{q}:active"},
		{rediskeys.AsynqLease("q"), "asynq:{q}:lease"},
		{rediskeys.AsynqRetry("q"), "asynq:{q}:retry"},
		{rediskeys.AsynqPaused("q"), "asynq:{q}:paused"},
		{rediskeys.AsynqProcessed("q", time.Date(2026, 11, 27, 23, 0, 0, 0, time.FixedZone("", -3600))), "asynq:{q}:processed:2026-11-28"},
		{rediskeys.AsynqQueues, "asynq:queues"},
		{rediskeys.AsynqResultField, "result"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

// TestParse checks that the functions reading a key back undo those that build it.
func TestParse(t *testing.T) {
	t.Parallel()
	if q, ok := rediskeys.QueueOfDeadLetters(rediskeys.DeadLetters("eu")); !ok || q != "eu" {
		t.Errorf("QueueOfDeadLetters = %q, %v", q, ok)
	}
	if _, ok := rediskeys.QueueOfDeadLetters(rediskeys.DeadLettersByTime("eu")); ok {
		t.Error("QueueOfDeadLetters takes the by-time set for the store")
	}
	if q, id, ok := rediskeys.AsynqTaskOf(rediskeys.AsynqTask("eu", "act:1")); !ok || q != "eu" || id != "act:1" {
		t.Errorf("AsynqTaskOf = %q, %q, %v", q, id, ok)
	}
	if _, _, ok := rediskeys.AsynqTaskOf(rediskeys.AsynqLease("eu")); ok {
		t.Error("AsynqTaskOf takes a lease set for a task")
	}
	if d, ok := rediskeys.WebhookIDDigest(rediskeys.WebhookID("r", "c", "i")); !ok || len(d) != 64 {
		t.Errorf("WebhookIDDigest = %q, %v", d, ok)
	}
	for key, want := range map[string]rediskeys.AsynqKind{
		rediskeys.AsynqTask("q", "id"):            rediskeys.AsynqTaskKind,
		"asynq:{q}:t:":                            rediskeys.AsynqTaskKind, // asynq's archive script names the prefix
		rediskeys.AsynqPending("q"):               rediskeys.AsynqPendingKind,
		rediskeys.AsynqActive("q"):                rediskeys.AsynqActiveKind,
		rediskeys.AsynqLease("q"):                 rediskeys.AsynqLeaseKind,
		rediskeys.AsynqRetry("q"):                 rediskeys.AsynqRetryKind,
		rediskeys.AsynqPaused("q"):                rediskeys.AsynqOtherKind,
		rediskeys.AsynqProcessed("q", time.Now()): rediskeys.AsynqOtherKind,
		rediskeys.DeadLetters("q"):                rediskeys.AsynqOtherKind,
		rediskeys.AsynqQueues:                     rediskeys.AsynqOtherKind,
	} {
		if got := rediskeys.AsynqKindOf(key); got != want {
			t.Errorf("AsynqKindOf(%q) = %d, want %d", key, got, want)
		}
	}
}

// TestAsynqVersion fails when go.mod moves to another asynq than the one whose private layout
// keys.go copies. (It reads go.mod: a test binary's build info lists no dependencies.)
func TestAsynqVersion(t *testing.T) {
	t.Parallel()
	mod, err := os.ReadFile(filepath.Join("..", "..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if regexp.MustCompile(`(?m)^\s*(replace\s+)?github\.com/hibiken/asynq(\s+v\S+)?\s+=>`).Match(mod) {
		t.Fatal("go.mod replaces github.com/hibiken/asynq: check the replacement's layout as below, then teach this test to read its version")
	}
	m := regexp.MustCompile(`(?m)^\s*(?:require\s+)?github\.com/hibiken/asynq\s+(v\S+)`).FindSubmatch(mod)
	if m == nil {
		t.Fatal("go.mod does not require github.com/hibiken/asynq")
	}
	if got := string(m[1]); got != rediskeys.AsynqVersion {
		t.Fatalf("go.mod requires asynq %s, but internal/rediskeys copies the private layout of asynq %s. Re-check, against "+
			"the new release: its internal/base key functions (TaskKey, PendingKey, ActiveKey, LeaseKey, RetryKey, "+
			"PausedKey, AllQueues) and the task hash's %q field, which keys.go copies; the keys its Lua scripts "+
			"in internal/rdb name, which AsynqKindOf and worker/jobend.go recognise (and the retry script's "+
			"ARGV, which jobend reads); then run this package's and worker's tests (TestAsynqLayout, "+
			"TestJobEndMatchesAsynqsScripts) and set AsynqVersion", got, rediskeys.AsynqVersion, rediskeys.AsynqResultField)
	}
}

// TestAsynqLayout checks the Asynq keys against a real asynq on a real Redis: a queued task's record
// and its place in the pending list and the queues set; a running task's place in the active list
// and the lease set, which it leaves when it ends; its result in the task hash's result field; a
// failed task's place in the retry set; a paused queue's key; the day's count of processed tasks.
func TestAsynqLayout(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ctx := context.Background()
	const queue, id, failing = "layout", "act:task-1", "act:task-2"
	c := asynq.NewClientFromRedisClient(db.Client)
	defer c.Close()
	if _, err := c.Enqueue(asynq.NewTask("t", nil), asynq.Queue(queue), asynq.TaskID(id), asynq.Retention(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n, err := db.Client.Exists(ctx, rediskeys.AsynqTask(queue, id)).Result(); err != nil || n != 1 {
		t.Fatalf("AsynqTask: EXISTS = %d, %v", n, err)
	}
	if ids, err := db.Client.LRange(ctx, rediskeys.AsynqPending(queue), 0, -1).Result(); err != nil || len(ids) != 1 || ids[0] != id {
		t.Errorf("AsynqPending holds %q, %v; want the queued task", ids, err)
	}
	if ok, err := db.Client.SIsMember(ctx, rediskeys.AsynqQueues, queue).Result(); err != nil || !ok {
		t.Errorf("AsynqQueues: SISMEMBER = %v, %v", ok, err)
	}
	keys, err := db.Client.Keys(ctx, rediskeys.AsynqTasksPattern("act:")).Result()
	if err != nil || len(keys) != 1 {
		t.Fatalf("AsynqTasksPattern matches %q, %v; want the task's record", keys, err)
	}
	if q, got, ok := rediskeys.AsynqTaskOf(keys[0]); !ok || q != queue || got != id {
		t.Errorf("AsynqTaskOf(%q) = %q, %q, %v", keys[0], q, got, ok)
	}

	insp := asynq.NewInspectorFromRedisClient(db.Client)
	if err := insp.PauseQueue(queue); err != nil {
		t.Fatal(err)
	}
	if n, err := db.Client.Exists(ctx, rediskeys.AsynqPaused(queue)).Result(); err != nil || n != 1 {
		t.Errorf("AsynqPaused: EXISTS = %d, %v after a pause", n, err)
	}
	if err := insp.UnpauseQueue(queue); err != nil {
		t.Fatal(err)
	}

	type seen struct{ leased, active bool }
	ran := make(chan seen, 1)
	srv := asynq.NewServerFromRedisClient(db.Client, asynq.Config{Concurrency: 1, Queues: map[string]int{queue: 1},
		TaskCheckInterval: 20 * time.Millisecond, LogLevel: asynq.FatalLevel,
		RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return time.Hour }})
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, task *asynq.Task) error {
		if task.ResultWriter().TaskID() == failing {
			return errors.New("fails")
		}
		var s seen
		_, err := db.Client.ZScore(ctx, rediskeys.AsynqLease(queue), id).Result()
		s.leased = err == nil
		_, err = db.Client.LPos(ctx, rediskeys.AsynqActive(queue), id, redis.LPosArgs{}).Result()
		s.active = err == nil
		ran <- s
		_, err = task.ResultWriter().Write([]byte("the result"))
		return err
	})); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	select {
	case s := <-ran:
		if !s.leased {
			t.Error("the running task is not in the AsynqLease set")
		}
		if !s.active {
			t.Error("the running task is not in the AsynqActive list")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the task did not run")
	}
	testutil.WaitFor(t, 10*time.Second, "the finished task to leave the AsynqLease set", func() bool {
		_, err := db.Client.ZScore(ctx, rediskeys.AsynqLease(queue), id).Result()
		return err != nil
	})
	if r, err := db.Client.HGet(ctx, rediskeys.AsynqTask(queue, id), rediskeys.AsynqResultField).Result(); err != nil || r != "the result" {
		t.Errorf("AsynqResultField holds %q, %v; want what the handler wrote", r, err)
	}
	if n, err := db.Client.Get(ctx, rediskeys.AsynqProcessed(queue, time.Now())).Int(); err != nil || n != 1 {
		t.Errorf("AsynqProcessed holds %d, %v; want the one task processed today", n, err)
	}

	if _, err := c.Enqueue(asynq.NewTask("t", nil), asynq.Queue(queue), asynq.TaskID(failing), asynq.MaxRetry(3)); err != nil {
		t.Fatal(err)
	}
	testutil.WaitFor(t, 10*time.Second, "the failed task in the AsynqRetry set", func() bool {
		_, err := db.Client.ZScore(ctx, rediskeys.AsynqRetry(queue), failing).Result()
		return err == nil
	})

	// The task's message and state, as reencrypt rewrites them; scheduled and archived tasks.
	const later, payload = "act:task-3", "the payload"
	if _, err := c.Enqueue(asynq.NewTask("t", []byte(payload)), asynq.Queue(queue), asynq.TaskID(later), asynq.ProcessIn(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Client.ZScore(ctx, rediskeys.AsynqScheduled(queue), later).Result(); err != nil {
		t.Errorf("AsynqScheduled: ZSCORE: %v", err)
	}
	vals, err := db.Client.HMGet(ctx, rediskeys.AsynqTask(queue, later), rediskeys.AsynqMsgField, rediskeys.AsynqStateField).Result()
	if err != nil || vals[1] != "scheduled" {
		t.Fatalf("AsynqStateField holds %v, %v; want scheduled", vals, err)
	}
	msg, _ := vals[0].(string)
	if got := protoBytesField([]byte(msg), rediskeys.AsynqPayloadFieldNumber); got != payload {
		t.Errorf("AsynqMsgField's field %d holds %q, want the payload", rediskeys.AsynqPayloadFieldNumber, got)
	}
	if err := insp.ArchiveTask(queue, later); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Client.ZScore(ctx, rediskeys.AsynqArchived(queue), later).Result(); err != nil {
		t.Errorf("AsynqArchived: ZSCORE: %v", err)
	}
}

// protoBytesField is the value of the bytes field num of the protobuf message msg.
func protoBytesField(msg []byte, num protowire.Number) string {
	for len(msg) > 0 {
		n, typ, l := protowire.ConsumeTag(msg)
		if l < 0 {
			return ""
		}
		m := protowire.ConsumeFieldValue(n, typ, msg[l:])
		if m < 0 {
			return ""
		}
		if n == num && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(msg[l:])
			return string(v)
		}
		msg = msg[l+m:]
	}
	return ""
}
