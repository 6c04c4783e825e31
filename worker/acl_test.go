package worker_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/cmd/enqueuecmd"
	"github.com/versori/activator/internal/redisconn"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
	"github.com/versori/activator/worker"
)

// aclRules reads the ACL SETUSER lines of docs/redis.md, by user, with password as the password: the
// test runs on the rules the document gives, so that the two cannot drift apart.
func aclRules(t *testing.T, password string) map[string][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "docs", "redis.md"))
	if err != nil {
		t.Fatal(err)
	}
	rules := map[string][]string{}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "ACL" || f[1] != "SETUSER" {
			continue
		}
		for i, r := range f {
			if r == ">PASSWORD" {
				f[i] = ">" + password
			}
		}
		rules[f[2]] = f[3:]
	}
	if len(rules) != 2 {
		t.Fatalf("docs/redis.md gives ACL rules for %d users, want activator-worker and activator-enqueue", len(rules))
	}
	return rules
}

// enqueueAs runs the enqueue command with REDIS_URL url.
func enqueueAs(t *testing.T, url string, args ...string) string {
	t.Helper()
	var out, errb strings.Builder
	env := enqueuecmd.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb,
		Lookup: func(k string) (string, bool) {
			if k == "REDIS_URL" {
				return url, true
			}
			return "", false
		}}
	if code := enqueuecmd.Run(context.Background(), args, env); code != enqueuecmd.ExitOK {
		t.Fatalf("enqueue %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errb.String())
	}
	return out.String()
}

// startACLRedis starts a private redis-server with the users and rules given, and returns it and
// the URL of each user. It reports, when the test ends, every refusal in Redis's ACL LOG other than
// CONFIG GET, which docs/redis.md says is optional, unless wantRefused: then the test fails if none
// names wantRefused (a command, key or channel).
func startACLRedis(t *testing.T, rules map[string][]string, password, wantRefused string) (*testutil.RedisServer, func(user string) string) {
	t.Helper()
	ctx := context.Background()
	srv := testutil.StartRedisServer(t, false)
	for user, rs := range rules {
		args := []any{"ACL", "SETUSER", user}
		for _, r := range rs {
			args = append(args, r)
		}
		if err := srv.Client.Do(ctx, args...).Err(); err != nil {
			t.Fatalf("ACL SETUSER %s: %v", user, err)
		}
	}
	t.Cleanup(func() {
		entries, err := srv.Client.ACLLog(ctx, 100).Result()
		if err != nil {
			t.Error(err)
			return
		}
		found := false
		for _, e := range entries {
			switch {
			case e.Object == "config|get":
			case wantRefused != "":
				found = found || e.Object == wantRefused
			default:
				t.Errorf("Redis refused %s: %s %s (%d times): docs/redis.md's rules miss it", e.Username, e.Reason, e.Object, e.Count)
			}
		}
		if wantRefused != "" && !found {
			t.Errorf("with a rule left out, Redis never refused %s: %+v", wantRefused, entries)
		}
	})
	return srv, func(user string) string { return fmt.Sprintf("redis://%s:%s@%s/0", user, password, srv.Addr()) }
}

// TestACLRulesSuffice runs a worker and the enqueue command as the ACL users docs/redis.md defines,
// on a private redis-server, through real work: a file enqueued, jobs activated and dead-lettered,
// a batch's status, the dead letters listed and requeued, then activated, the queue paused and
// resumed. Redis's ACL LOG must stay empty but for the CONFIG GET the document says is optional:
// any other refusal means a rule is missing.
func TestACLRulesSuffice(t *testing.T) {
	t.Parallel()
	const password, good, bad = "acl-test-pw", 8, 4
	srv, url := startACLRedis(t, aclRules(t, password), password, "")

	api := versoritest.New(t, versoritest.Options{})
	api.RequireConnection(testutil.OtherIntegrationID, "01JDB1111NGTP2000000000000")
	var reqs []versori.ActivationRequest
	for i := range good + bad {
		r := testutil.Request(fmt.Sprintf("u-acl-%02d", i))
		if i >= good {
			r.IntegrationID = testutil.OtherIntegrationID
			r.Connections = []versori.ActivationConnection{{TemplateID: testutil.OtherTemplateID, ConnectionID: testutil.OtherConnectionID}}
		}
		reqs = append(reqs, r)
	}
	path := testutil.WriteJSONL(t, filepath.Join(t.TempDir(), "in.jsonl"), reqs...)
	enqueueAs(t, url("activator-enqueue"), "file", "--quiet", "--batch", "b-acl", path)

	rdb, err := redisconn.Open(url("activator-worker"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	w, stop := startWorker(t, rdb, api, func(c *worker.Config) { c.QueueMetrics = true; c.RateLimit = 1000 })
	testutil.WaitFor(t, 20*time.Second, "the good rows activated and the rest dead-lettered", func() bool {
		scrape(t, w)
		return api.Stats().Activations == good && strings.Count(enqueueAs(t, url("activator-enqueue"), "dlq", "list"), "missing_connections") == bad
	})
	// The URL's user, not "default", is who the worker is: else the rules were never in force.
	if list, err := srv.Client.ClientList(context.Background()).Result(); err != nil || !strings.Contains(list, "user=activator-worker") {
		t.Errorf("no connection of user activator-worker (%v):\n%s", err, list)
	}
	if out := enqueueAs(t, url("activator-enqueue"), "status", "b-acl"); !strings.Contains(out, "activated") {
		t.Errorf("status: %s", out)
	}
	api.ClearRequirements(testutil.OtherIntegrationID)
	enqueueAs(t, url("activator-enqueue"), "dlq", "requeue", "--all")
	testutil.WaitFor(t, 20*time.Second, "every row activated", func() bool { return api.Stats().Activations == good+bad })
	enqueueAs(t, url("activator-enqueue"), "pause")
	enqueueAs(t, url("activator-enqueue"), "resume")
	stop()
	assertExactlyOnce(t, api, nil)
}

// TestACLRulesAreNeeded leaves one of docs/redis.md's rules out at a time and checks that Redis
// then refuses what it allowed: the check TestACLRulesSuffice makes catches a missing rule.
func TestACLRulesAreNeeded(t *testing.T) {
	t.Parallel()
	const password = "acl-test-pw"
	tests := []struct {
		user, drop, refused string
	}{
		{"activator-worker", "&asynq:cancel", "asynq:cancel"},
		{"activator-worker", "+subscribe", "subscribe"},
		{"activator-worker", "+info", "info"},
		{"activator-worker", "+time", "time"},
		{"activator-worker", "~rate:activator:*", "rate:activator:{activations}:ratelimit"},
		{"activator-enqueue", "+info", "info"},
		{"activator-enqueue", "+time", "time"},
		{"activator-enqueue", "+@scripting", "evalsha"},
	}
	for _, tc := range tests {
		t.Run(tc.user+" without "+tc.drop, func(t *testing.T) {
			t.Parallel()
			rules := aclRules(t, password)
			n := len(rules[tc.user])
			rules[tc.user] = slices.DeleteFunc(rules[tc.user], func(r string) bool { return r == tc.drop })
			if len(rules[tc.user]) != n-1 {
				t.Fatalf("docs/redis.md gives %s no rule %s", tc.user, tc.drop)
			}
			srv, url := startACLRedis(t, rules, password, tc.refused)
			rdb, err := redisconn.Open(url("activator-worker"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { rdb.Close() })
			api := versoritest.New(t, versoritest.Options{})
			w, _ := startWorker(t, rdb, api, func(c *worker.Config) { c.QueueMetrics = true; c.RateLimit = 1000 })
			path := testutil.WriteJSONL(t, filepath.Join(t.TempDir(), "in.jsonl"), testutil.Request("u-acl"))
			var out strings.Builder
			enqueuecmd.Run(context.Background(), []string{"file", "--quiet", path}, enqueuecmd.Env{Stdin: strings.NewReader(""),
				Stdout: &out, Stderr: &out, Lookup: func(k string) (string, bool) { return url("activator-enqueue"), k == "REDIS_URL" }})
			testutil.WaitFor(t, 10*time.Second, "Redis to refuse "+tc.refused, func() bool {
				scrape(t, w)
				entries, _ := srv.Client.ACLLog(context.Background(), 100).Result()
				return slices.ContainsFunc(entries, func(e *redis.ACLLogEntry) bool { return e.Object == tc.refused })
			})
		})
	}
}

// scrape reads the worker's /metrics, as Prometheus would: with QUEUE_METRICS, asynq's queue
// metrics then ask Redis for the queue's memory usage.
func scrape(t *testing.T, w *worker.Worker) {
	t.Helper()
	resp, err := http.Get("http://" + w.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}
