package worker_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/versori/activator/inspect"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
	"github.com/versori/activator/worker"
)

// secretPrefix starts every end user's credential value in these tests, so that a scan for it finds
// any of them wherever it leaked.
const secretPrefix = "END-USER-THIRD-PARTY-SECRET"

// newKeySpec is one key of a keyring setting: "id:base64(32 random bytes)".
func newKeySpec(t *testing.T, id string) string {
	t.Helper()
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		t.Fatal(err)
	}
	return id + ":" + base64.StdEncoding.EncodeToString(raw)
}

func keyring(t *testing.T, specs ...string) *tasks.Keyring {
	t.Helper()
	k, err := tasks.ParseKeyring(strings.Join(specs, ","))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// credsOf is the credentials the request of user gives its new connection.
func credsOf(user string) string { return `{"apiKey":"` + secretPrefix + "-" + user + `"}` }

// secretRequest activates integration for user with an existing connection and a new one that
// carries credentials.
func secretRequest(user, integration string) versori.ActivationRequest {
	return versori.ActivationRequest{UserID: user, IntegrationID: integration,
		Connections: []versori.ActivationConnection{
			{TemplateID: crmTemplate, ConnectionID: crmConnection},
			{TemplateID: billingTemplate, Name: "shop", Credentials: json.RawMessage(credsOf(user))},
		}}
}

// leaks lists the Redis keys of db whose values (strings, hashes' fields and values, lists, sets,
// zsets, streams) hold secretPrefix anywhere.
func leaks(t *testing.T, rdb redis.UniversalClient) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	var keys []string
	iter := rdb.Scan(ctx, 0, "*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		var vals []string
		switch rdb.Type(ctx, k).Val() {
		case "string":
			vals = []string{rdb.Get(ctx, k).Val()}
		case "hash":
			for f, v := range rdb.HGetAll(ctx, k).Val() {
				vals = append(vals, f, v)
			}
		case "list":
			vals = rdb.LRange(ctx, k, 0, -1).Val()
		case "set":
			vals = rdb.SMembers(ctx, k).Val()
		case "zset":
			vals = rdb.ZRange(ctx, k, 0, -1).Val()
		case "stream":
			for _, m := range rdb.XRange(ctx, k, "-", "+").Val() {
				for f, v := range m.Values {
					vals = append(vals, f, fmt.Sprint(v))
				}
			}
		case "none": // gone since the scan
		default:
			t.Errorf("Redis key %s has type %s, which leaks does not read", k, rdb.Type(ctx, k).Val())
		}
		for _, v := range vals {
			if strings.Contains(v, secretPrefix) {
				out = append(out, k)
				break
			}
		}
	}
	return out
}

// checkReceived checks that the stand-in's activate calls for each user carried that user's
// credentials, and that every user had one.
func checkReceived(t *testing.T, api *versoritest.Server, users []string) {
	t.Helper()
	got := map[string]string{}
	for _, c := range api.Calls() {
		if c.Op == versori.OpActivate {
			got[c.Pair.UserID] = c.Credentials
		}
	}
	for _, u := range users {
		if want := `[null,` + credsOf(u) + `]`; got[u] != want {
			t.Errorf("the API received credentials %s for %s, want %s", got[u], u, want)
		}
	}
}

// TestCredentialsAtRest: with a key, no plaintext credential is in Redis after enqueue or after the
// jobs ran (dead letters included); with a key or without (the opt-out, or an older release's
// payloads), the queue UI shows none; the API receives each user's own.
func TestCredentialsAtRest(t *testing.T) {
	tests := []struct {
		name string
		cfg  producer.Config
	}{
		{"sealed", producer.Config{Keys: keyring(t, newKeySpec(t, "a"))}},
		{"plaintext opt-out", producer.Config{AllowPlaintext: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db := testutil.Redis(t)
			ctx := context.Background()
			sealed := tt.cfg.Keys != nil
			api := versoritest.New(t, versoritest.Options{})
			api.RequireConnection(billingIntegration, "01JDCRMTP20000000000000000") // one the requests never bind
			tt.cfg.Queue = queue
			p := producer.New(db.Client, tt.cfg)
			var users []string
			for i := range 4 {
				u := fmt.Sprintf("sealed-%d", i)
				integration := crmIntegration
				if i == 3 {
					integration = billingIntegration // dead-lettered: missing_connections
				}
				if r, err := p.Enqueue(ctx, secretRequest(u, integration)); err != nil || r.Status != producer.Enqueued {
					t.Fatalf("Enqueue = %+v, %v", r, err)
				}
				users = append(users, u)
			}
			if l := leaks(t, db.Client); sealed && len(l) > 0 {
				t.Fatalf("after enqueue, Redis holds credentials in plain text in %q", l)
			}
			insp := asynq.NewInspectorFromRedisClient(db.Client)
			if err := insp.PauseQueue(queue); err != nil {
				t.Fatal(err)
			}
			w, _ := startWorker(t, db.Client, api, func(c *worker.Config) {
				c.Keys = tt.cfg.Keys
				c.AdminUI, c.AdminAddr = worker.AdminUI{Enabled: true}, "127.0.0.1:0"
			})
			base := "http://" + w.AdminAddr()
			code, _, body := do(t, "GET", base+"/ui/api/queues/"+queue+"/pending_tasks")
			if code != 200 || !strings.Contains(body, "sealed-0") {
				t.Fatalf("GET pending_tasks = %d %s", code, body)
			}
			if strings.Contains(body, secretPrefix) || !strings.Contains(body, "withheld") {
				t.Errorf("the queue UI shows credentials, or does not say they are withheld: %s", body)
			}
			if err := insp.UnpauseQueue(queue); err != nil {
				t.Fatal(err)
			}
			store := dlStore(db.Client, p)
			testutil.WaitFor(t, 30*time.Second, "every job ended", settled(t, api, store, len(users)))
			checkReceived(t, api, users)
			es, err := store.Get(ctx, tasks.TaskID(versori.Pair{UserID: "sealed-3", IntegrationID: billingIntegration}))
			if err != nil || len(es) != 1 || es[0].Reason != tasks.ReasonMissingConnections || sealed != (tasks.SecretKeyID(es[0].Secrets) == "a") {
				t.Fatalf("dead letter = %+v, %v; want missing_connections, sealed with key a if sealed", es, err)
			}
			code, _, body = do(t, "GET", base+"/ui/api/queues/"+queue+"/completed_tasks")
			if code != 200 || !strings.Contains(body, "sealed-0") || strings.Contains(body, secretPrefix) {
				t.Errorf("GET completed_tasks = %d, shows credentials or no task: %s", code, body)
			}
			if l := leaks(t, db.Client); sealed && len(l) > 0 {
				t.Errorf("after the jobs ran, Redis holds credentials in plain text in %q", l)
			}
		})
	}
}

// TestSecretUnreadableThenRequeued: a job sealed under a key the worker lacks is dead-lettered as
// secret_unreadable without an API call and keeps its sealed credentials; once the key is added,
// a requeue activates it with them.
func TestSecretUnreadableThenRequeued(t *testing.T) {
	db := testutil.Redis(t)
	ctx := context.Background()
	a, b := newKeySpec(t, "a"), newKeySpec(t, "b")
	api := versoritest.New(t, versoritest.Options{})
	p := producer.New(db.Client, producer.Config{Queue: queue, Keys: keyring(t, a)})
	if _, err := p.Enqueue(ctx, secretRequest("lost-key", crmIntegration)); err != nil {
		t.Fatal(err)
	}
	store := dlStore(db.Client, p)
	_, stop := startWorker(t, db.Client, api, func(c *worker.Config) { c.Keys = keyring(t, b) })
	testutil.WaitFor(t, 20*time.Second, "the job dead-lettered", settled(t, api, store, 1))
	stop()
	id := tasks.TaskID(versori.Pair{UserID: "lost-key", IntegrationID: crmIntegration})
	es, err := store.Get(ctx, id)
	if err != nil || len(es) != 1 || es[0].Reason != tasks.ReasonSecretUnreadable || tasks.SecretKeyID(es[0].Secrets) != "a" {
		t.Fatalf("dead letter = %+v, %v; want secret_unreadable keeping the seal of key a", es, err)
	}
	if strings.Contains(es[0].Error, secretPrefix) || !strings.Contains(es[0].Error, `"a"`) {
		t.Errorf("dead letter's error = %q, want it to name key a and no secret", es[0].Error)
	}
	if n := len(activateCalls(api)); n != 0 {
		t.Errorf("%d activate calls for a job whose credentials could not be opened, want 0", n)
	}
	in := inspect.New(db.Client, producer.Config{Queue: queue, Keys: keyring(t, b, a)})
	if res, err := in.Requeue(ctx, []string{id}); err != nil || len(res.Requeued) != 1 {
		t.Fatalf("Requeue = %+v, %v", res, err)
	}
	startWorker(t, db.Client, api, func(c *worker.Config) { c.Keys = keyring(t, b, a) })
	testutil.WaitFor(t, 20*time.Second, "the requeued job activated", func() bool { return api.Stats().Activations == 1 })
	checkReceived(t, api, []string{"lost-key"})
	if l := leaks(t, db.Client); len(l) > 0 {
		t.Errorf("Redis holds credentials in plain text in %q", l)
	}
}

// TestReencryptRotation: jobs and a dead letter sealed under key a; keys become "b,a"; reencrypt
// reseals them, except the task a worker holds, which it leaves untouched (and reseals on a second
// run, once the task is back in the queue); keys become "b" alone, and every job activates with its
// own credentials.
func TestReencryptRotation(t *testing.T) {
	db := testutil.Redis(t)
	ctx := context.Background()
	a, b := newKeySpec(t, "a"), newKeySpec(t, "b")
	api := versoritest.New(t, versoritest.Options{})
	p := producer.New(db.Client, producer.Config{Queue: queue, Keys: keyring(t, a)})
	insp := asynq.NewInspectorFromRedisClient(db.Client)

	// The held task: a plain asynq server takes it and holds it until released.
	held := secretRequest("held", crmIntegration)
	if _, err := p.Enqueue(ctx, held); err != nil {
		t.Fatal(err)
	}
	got, release := make(chan struct{}), make(chan struct{})
	srv := asynq.NewServerFromRedisClient(db.Client, asynq.Config{Concurrency: 1, Queues: map[string]int{queue: 1},
		TaskCheckInterval: 20 * time.Millisecond, LogLevel: asynq.FatalLevel,
		RetryDelayFunc: func(int, error, *asynq.Task) time.Duration { return 0 }})
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		close(got)
		<-release
		return fmt.Errorf("released")
	})); err != nil {
		t.Fatal(err)
	}
	<-got
	if err := insp.PauseQueue(queue); err != nil { // nothing else is taken
		t.Fatal(err)
	}
	users := []string{"held"}
	for i := range 3 {
		u := fmt.Sprintf("rotated-%d", i)
		if _, err := p.Enqueue(ctx, secretRequest(u, crmIntegration)); err != nil {
			t.Fatal(err)
		}
		users = append(users, u)
	}
	// A dead letter sealed under a, as a worker would have stored it.
	dead := tasks.Payload{Request: secretRequest("dead", crmIntegration)}
	if err := dead.Seal(keyring(t, a)); err != nil {
		t.Fatal(err)
	}
	store := dlStore(db.Client, p)
	if _, err := store.Add(ctx, deadletter.Entry{ID: tasks.TaskID(dead.Request.Pair()), Reason: tasks.ReasonPermanentError,
		Queue: queue, Request: dead.Request, Secrets: dead.Secrets}); err != nil {
		t.Fatal(err)
	}
	users = append(users, "dead")

	heldKey := rediskeys.AsynqTask(queue, tasks.TaskID(held.Pair()))
	heldMsg := db.Client.HGet(ctx, heldKey, rediskeys.AsynqMsgField).Val()
	rotated := inspect.New(db.Client, producer.Config{Queue: queue, Keys: keyring(t, b, a)})
	sum, err := rotated.Reencrypt(ctx)
	if err != nil || sum.Tasks != 3 || sum.DeadLetters != 1 || sum.Running != 1 || sum.Done() {
		t.Fatalf("Reencrypt = %+v, %v; want 3 tasks, 1 dead letter, 1 running", sum, err)
	}
	if now := db.Client.HGet(ctx, heldKey, rediskeys.AsynqMsgField).Val(); now != heldMsg {
		t.Errorf("the task a worker held was rewritten")
	}
	close(release)
	testutil.WaitFor(t, 10*time.Second, "the held task back in the queue", func() bool {
		info, err := insp.GetTaskInfo(queue, tasks.TaskID(held.Pair()))
		return err == nil && info.State != asynq.TaskStateActive
	})
	srv.Shutdown()
	sum, err = rotated.Reencrypt(ctx)
	if err != nil || sum.Tasks != 1 || sum.Current != 4 || !sum.Done() {
		t.Fatalf("second Reencrypt = %+v, %v; want the once-held task resealed, the rest current", sum, err)
	}
	only := inspect.New(db.Client, producer.Config{Queue: queue, Keys: keyring(t, b)})
	if res, err := only.Requeue(ctx, []string{tasks.TaskID(dead.Request.Pair())}); err != nil || len(res.Requeued) != 1 {
		t.Fatalf("Requeue = %+v, %v", res, err)
	}
	if err := insp.UnpauseQueue(queue); err != nil {
		t.Fatal(err)
	}
	startWorker(t, db.Client, api, func(c *worker.Config) { c.Keys = keyring(t, b) })
	testutil.WaitFor(t, 30*time.Second, "every job activated", func() bool { return api.Stats().Activations == len(users) })
	checkReceived(t, api, users)
	if n, _ := store.Count(ctx, ""); n != 0 {
		t.Errorf("%d dead letters after the rotation, want 0", n)
	}
}

// TestPlaintextJobDeadLetteredSealed: a job queued in plain text (the opt-out, or a release before
// keys) that a worker holding a key dead-letters is stored sealed: the worker writes no new record
// with the credentials in plain text, and a requeue still activates it with them.
func TestPlaintextJobDeadLetteredSealed(t *testing.T) {
	db := testutil.Redis(t)
	ctx := context.Background()
	keys := keyring(t, newKeySpec(t, "a"))
	api := versoritest.New(t, versoritest.Options{})
	api.RequireConnection(billingIntegration, "01JDCRMTP20000000000000000") // one the request never binds
	p := producer.New(db.Client, producer.Config{Queue: queue, AllowPlaintext: true})
	if _, err := p.Enqueue(ctx, secretRequest("plain", billingIntegration)); err != nil {
		t.Fatal(err)
	}
	store := dlStore(db.Client, p)
	_, stop := startWorker(t, db.Client, api, func(c *worker.Config) { c.Keys = keys })
	testutil.WaitFor(t, 20*time.Second, "the job dead-lettered", settled(t, api, store, 1))
	stop()
	id := tasks.TaskID(versori.Pair{UserID: "plain", IntegrationID: billingIntegration})
	es, err := store.Get(ctx, id)
	if err != nil || len(es) != 1 || es[0].Reason != tasks.ReasonMissingConnections {
		t.Fatalf("dead letter = %+v, %v; want missing_connections", es, err)
	}
	if tasks.SecretKeyID(es[0].Secrets) != "a" || tasks.HasCredentials(es[0].Request) {
		t.Errorf("dead letter holds secrets %q and plaintext credentials %v; want them sealed with key a", es[0].Secrets, tasks.HasCredentials(es[0].Request))
	}
	if l := leaks(t, db.Client); len(l) > 0 {
		t.Errorf("Redis holds credentials in plain text in %q", l)
	}
	api.ClearRequirements(billingIntegration)
	in := inspect.New(db.Client, producer.Config{Queue: queue, Keys: keys})
	if res, err := in.Requeue(ctx, []string{id}); err != nil || len(res.Requeued) != 1 {
		t.Fatalf("Requeue = %+v, %v", res, err)
	}
	startWorker(t, db.Client, api, func(c *worker.Config) { c.Keys = keys })
	testutil.WaitFor(t, 20*time.Second, "the requeued job activated", func() bool { return api.Stats().Activations == 1 })
	checkReceived(t, api, []string{"plain"})
}

// TestSweptPlaintextJobSealed: a plaintext job that asynq archived itself (never reaching the
// handler's dead letter) is stored sealed by the archive sweep of a worker holding a key.
func TestSweptPlaintextJobSealed(t *testing.T) {
	db := testutil.Redis(t)
	ctx := context.Background()
	keys := keyring(t, newKeySpec(t, "a"))
	api := versoritest.New(t, versoritest.Options{})
	p := producer.New(db.Client, producer.Config{Queue: queue, AllowPlaintext: true})
	if _, err := p.Enqueue(ctx, secretRequest("swept", crmIntegration)); err != nil {
		t.Fatal(err)
	}
	id := tasks.TaskID(versori.Pair{UserID: "swept", IntegrationID: crmIntegration})
	if err := asynq.NewInspectorFromRedisClient(db.Client).ArchiveTask(queue, id); err != nil {
		t.Fatal(err)
	}
	store := dlStore(db.Client, p)
	_, stop := startWorker(t, db.Client, api, func(c *worker.Config) { c.Keys = keys })
	testutil.WaitFor(t, 20*time.Second, "the archive swept", func() bool {
		es, err := store.Get(ctx, id)
		return err == nil && len(es) == 1
	})
	stop()
	es, err := store.Get(ctx, id)
	if err != nil || len(es) != 1 {
		t.Fatalf("dead letter = %+v, %v", es, err)
	}
	if tasks.SecretKeyID(es[0].Secrets) != "a" || tasks.HasCredentials(es[0].Request) {
		t.Errorf("swept dead letter holds secrets %q and plaintext credentials %v; want them sealed with key a", es[0].Secrets, tasks.HasCredentials(es[0].Request))
	}
}

// TestFinalLookUpNeedsNoKey: a job past its attempts makes one last look-up, which sends no
// credentials: a worker without the job's key (removed before reencrypt finished) still finds the
// activation an earlier POST made, and ends the job done rather than dead-lettering an active pair
// as secret_unreadable.
func TestFinalLookUpNeedsNoKey(t *testing.T) {
	db := testutil.Redis(t)
	ctx := context.Background()
	api := versoritest.New(t, versoritest.Options{})
	p := producer.New(db.Client, producer.Config{Queue: queue, MaxRetry: 1, Keys: keyring(t, newKeySpec(t, "a"))})
	req := secretRequest("final", crmIntegration)
	if _, err := p.Enqueue(ctx, req); err != nil {
		t.Fatal(err)
	}
	api.Seed(req.Pair()) // what an earlier attempt's POST, whose answer was lost, committed
	// Past its attempts: asynq's TaskMessage field 6 (retried) set to 3, a later field winning.
	id := tasks.TaskID(req.Pair())
	key := rediskeys.AsynqTask(queue, id)
	msg, err := db.Client.HGet(ctx, key, rediskeys.AsynqMsgField).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	msg = protowire.AppendVarint(protowire.AppendTag(msg, 6, protowire.VarintType), 3)
	if err := db.Client.HSet(ctx, key, rediskeys.AsynqMsgField, msg).Err(); err != nil {
		t.Fatal(err)
	}
	store := dlStore(db.Client, p)
	_, stop := startWorker(t, db.Client, api, func(c *worker.Config) { c.Keys = keyring(t, newKeySpec(t, "b")) })
	defer stop()
	insp := asynq.NewInspectorFromRedisClient(db.Client)
	testutil.WaitFor(t, 20*time.Second, "the job ended", func() bool {
		info, err := insp.GetTaskInfo(queue, id)
		has, _ := store.Has(ctx, []string{id})
		return (err == nil && info.State == asynq.TaskStateCompleted) || len(has) == 1 && has[0]
	})
	if es, _ := store.Get(ctx, id); len(es) > 0 {
		t.Errorf("dead-lettered as %s (%s), want done: the pair is active", es[0].Reason, es[0].Error)
	}
	if n := len(activateCalls(api)); n != 0 {
		t.Errorf("%d activate calls, want none", n)
	}
}
