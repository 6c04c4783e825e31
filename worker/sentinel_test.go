package worker_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/batch"
	"github.com/versori/activator/internal/cmd/enqueuecmd"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/redisconn"
	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
)

const sentinelMaster = "mymaster"

// startSentinel starts a redis-server in Sentinel mode, on a free port, watching master under
// sentinelMaster with a quorum of one (so that SENTINEL FAILOVER needs no other Sentinel), and stops it
// when t ends. Only SENTINEL FAILOVER fails over: the master must be unreachable 5 s first otherwise.
func startSentinel(t *testing.T, master *testutil.RedisServer) *testutil.RedisServer {
	t.Helper()
	dir := t.TempDir() // Sentinel rewrites its config file, so it gets a copy of its own
	conf := filepath.Join(dir, "sentinel.conf")
	body := fmt.Sprintf("sentinel monitor %[1]s 127.0.0.1 %[2]d 1\n"+
		"sentinel down-after-milliseconds %[1]s 5000\nsentinel failover-timeout %[1]s 10000\n", sentinelMaster, master.Port)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return testutil.StartRedisServer(t, false, conf, "--sentinel")
}

// startSentinelSetup starts a master (with masterArgs), a replica of it, in sync, and a Sentinel that
// knows both, and returns them with a client of the Sentinel and the redis-sentinel:// URL.
func startSentinelSetup(t *testing.T, masterArgs ...string) (master, replica *testutil.RedisServer, sc *redis.SentinelClient, url string) {
	t.Helper()
	ctx := context.Background()
	master = testutil.StartRedisServer(t, false, masterArgs...)
	replica = testutil.StartRedisServer(t, false, "--replicaof", "127.0.0.1", strconv.Itoa(master.Port))
	testutil.WaitFor(t, 10*time.Second, "the replica in sync", func() bool {
		info, err := replica.Client.Info(ctx, "replication").Result()
		return err == nil && strings.Contains(info, "master_link_status:up")
	})
	sentinel := startSentinel(t, master)
	sc = redis.NewSentinelClient(&redis.Options{Addr: sentinel.Addr()})
	t.Cleanup(func() { sc.Close() })
	testutil.WaitFor(t, 15*time.Second, "the Sentinel to know the replica", func() bool {
		rs, err := sc.Replicas(ctx, sentinelMaster).Result()
		return err == nil && len(rs) == 1
	})
	return master, replica, sc, "redis-sentinel://" + sentinel.Addr() + "?master=" + sentinelMaster
}

// failover makes the replica master with SENTINEL FAILOVER and waits until the Sentinel names it.
func failover(t *testing.T, sc *redis.SentinelClient, replica *testutil.RedisServer) {
	t.Helper()
	ctx := context.Background()
	if err := sc.Failover(ctx, sentinelMaster).Err(); err != nil {
		t.Fatalf("SENTINEL FAILOVER: %v", err)
	}
	testutil.WaitFor(t, 15*time.Second, "the Sentinel to name the replica master", func() bool {
		addr, err := sc.GetMasterAddrByName(ctx, sentinelMaster).Result()
		return err == nil && len(addr) == 2 && addr[1] == strconv.Itoa(replica.Port)
	})
}

// runEnqueue runs the enqueue command against redisURL and returns its exit code and output.
func runEnqueue(t *testing.T, redisURL string, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	env := enqueuecmd.Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out, Lookup: func(k string) (string, bool) {
		switch k {
		case "REDIS_URL":
			return redisURL, true
		case "QUEUE":
			return queue, true
		}
		return "", false
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return enqueuecmd.Run(ctx, args, env), out.String()
}

// writeUsers writes a JSONL file of n CRM requests for users prefix-0 … prefix-(n-1).
func writeUsers(t *testing.T, prefix string, n int) (string, []versori.Pair) {
	t.Helper()
	reqs := make([]versori.ActivationRequest, n)
	pairs := make([]versori.Pair, n)
	for i := range n {
		reqs[i] = testutil.Request(prefix + "-" + strconv.Itoa(i))
		pairs[i] = reqs[i].Pair()
	}
	return testutil.WriteJSONL(t, filepath.Join(t.TempDir(), prefix+".jsonl"), reqs...), pairs
}

// keyspace returns the databases that hold keys on a server, from INFO keyspace ("db0", …).
func keyspace(t *testing.T, c *redis.Client) []string {
	t.Helper()
	info, err := c.Info(context.Background(), "keyspace").Result()
	if err != nil {
		t.Fatal(err)
	}
	var dbs []string
	for _, line := range strings.Split(info, "\n") {
		if db, _, ok := strings.Cut(strings.TrimSpace(line), ":keys="); ok {
			dbs = append(dbs, db)
		}
	}
	return dbs
}

// TestPipelineOnSentinel runs the pipeline through a redis-sentinel:// REDIS_URL: a master, a replica
// and a Sentinel of the test's own; `enqueue file` queues the rows, the worker binary activates each
// pair exactly once and dead-letters the rows that lack a connection, and everything lands in
// database 0 of the master. Then SENTINEL FAILOVER promotes the replica under the running worker,
// idle by then, which follows it and activates a second file there. (A failover in the middle of a
// busy run is TestSentinelFailoverUnderLoad's subject.)
func TestPipelineOnSentinel(t *testing.T) {
	t.Parallel()
	const n, missing, m = 200, 20, 100
	ctx := context.Background()
	master, replica, sc, url := startSentinelSetup(t)
	// A database number other than 0 is refused, since asynq would ignore it.
	if code, out := runEnqueue(t, strings.Replace(url, "?", "/3?", 1), "pause"); code != enqueuecmd.ExitUsage || !strings.Contains(out, "database 0") {
		t.Errorf("a redis-sentinel:// URL with /3: exit %d, %q; want exit 2 saying database 0", code, out)
	}

	api := versoritest.New(t, versoritest.Options{})
	api.RequireConnection(billingIntegration, billingTemplate)
	path, pairs := writeRequests(t, n, missing)
	if code, out := runEnqueue(t, url, "file", path, "--quiet", "--batch", "b-sentinel"); code != enqueuecmd.ExitOK || !strings.Contains(out, fmt.Sprintf("enqueued: %d\n", n)) {
		t.Fatalf("enqueue file: exit %d\n%s", code, out)
	}
	// The jobs are in database 0 of the master, and nowhere else.
	if pending, err := master.Client.LLen(ctx, rediskeys.AsynqPending(queue)).Result(); err != nil || pending != n {
		t.Errorf("master db 0 holds %d pending jobs (%v), want %d", pending, err, n)
	}
	if dbs := keyspace(t, master.Client); len(dbs) != 1 || dbs[0] != "db0" {
		t.Errorf("master keyspace %v, want db0 only", dbs)
	}

	rdb, err := redisconn.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	store := deadletter.NewStore(rdb, queue)
	w := startProcOn(t, url, api, "127.0.0.1:"+strconv.Itoa(testutil.FreePort(t)))
	start := time.Now()
	testutil.WaitFor(t, 20*time.Second, "every pair settled and the queue drained", func() bool {
		return settled(t, api, store, n)() && testutil.Unfinished(t, rdb, queue) == 0
	})
	drained := time.Since(start)
	assertExactlyOnce(t, api, pairs[:n-missing])
	if byReason, err := store.CountByReason(ctx); err != nil || byReason[tasks.ReasonMissingConnections] != missing {
		t.Errorf("dead letters by reason = %v, %v; want %d missing_connections", byReason, err, missing)
	}
	testutil.WaitFor(t, 5*time.Second, "batch b-sentinel done", func() bool {
		st, err := batch.Read(ctx, rdb, queue, "b-sentinel")
		return err == nil && st.Finished
	})
	if code, out := runEnqueue(t, url, "status", "b-sentinel"); code != 0 || !strings.Contains(out, "batch b-sentinel: done") {
		t.Errorf("enqueue status: exit %d\n%s", code, out)
	}
	if dl, err := master.Client.HLen(ctx, rediskeys.DeadLetters(queue)).Result(); err != nil || dl != missing {
		t.Errorf("master db 0 holds %d dead letters (%v), want %d", dl, err, missing)
	}

	// Failover: the replica becomes the master under the running worker, which must follow it.
	failedOver := time.Now()
	failover(t, sc, replica)
	switched := time.Since(failedOver)
	path2, pairs2 := writeUsers(t, "after-failover", m)
	if code, out := runEnqueue(t, url, "file", path2, "--quiet", "--batch", "b-failover"); code != enqueuecmd.ExitOK || !strings.Contains(out, fmt.Sprintf("enqueued: %d\n", m)) {
		t.Fatalf("enqueue file after the failover: exit %d\n%s", code, out)
	}
	testutil.WaitFor(t, 15*time.Second, "the second file activated by the same worker", func() bool {
		return api.Stats().Activations >= n-missing+m && testutil.Unfinished(t, rdb, queue) == 0
	})
	followed := time.Since(failedOver)
	if gone, err := procExited(w); gone {
		t.Fatalf("the worker exited (%v) across the failover", err)
	}
	assertExactlyOnce(t, api, append(pairs[:n-missing:n-missing], pairs2...))
	if got := api.Stats().Activations; got != n-missing+m {
		t.Errorf("%d activations, want %d", got, n-missing+m)
	}
	// The new master holds everything, in database 0: the first run's dead letters (replicated) and
	// the second batch.
	if dl, err := replica.Client.HLen(ctx, rediskeys.DeadLetters(queue)).Result(); err != nil || dl != missing {
		t.Errorf("new master holds %d dead letters (%v), want %d", dl, err, missing)
	}
	if q, err := replica.Client.HGet(ctx, rediskeys.Batch(queue, "b-failover"), "queued").Int(); err != nil || q != m {
		t.Errorf("new master: batch b-failover queued = %d (%v), want %d", q, err, m)
	}
	if dbs := keyspace(t, replica.Client); len(dbs) != 1 || dbs[0] != "db0" {
		t.Errorf("new master keyspace %v, want db0 only", dbs)
	}
	t.Logf("sentinel: %d jobs (%d dead-lettered) drained in %s through %s; failover: Sentinel named the replica master after %s, "+
		"the same worker activated %d more %s after SENTINEL FAILOVER; all in db0",
		n, missing, drained.Round(time.Millisecond), redisconn.Redacted(url), switched.Round(time.Millisecond), m, followed.Round(time.Millisecond))
}

var failoverLoad = flag.Bool("failover-load", false, "run TestSentinelFailoverUnderLoad (a few minutes)")

// TestSentinelFailoverUnderLoad measures what a Sentinel failover in the middle of a busy run costs,
// in three setups. Redis replicates asynchronously, and Sentinel lets the old master take writes until
// it has promoted the replica and switched clients over (about a second), so writes of that window are
// lost: a job finished then comes back as a first attempt, which activates again without a look-up.
// min-replicas-to-write 1 on the master makes it refuse writes as soon as its replica leaves; jobs
// enqueued with --reconcile look their pair up first. Opt-in, several minutes:
//
//	go test -run TestSentinelFailoverUnderLoad -failover-load -v -timeout 15m ./worker
func TestSentinelFailoverUnderLoad(t *testing.T) {
	if !*failoverLoad {
		t.Skip("opt-in: -failover-load (a few minutes)")
	}
	for _, tc := range []struct {
		name       string
		masterArgs []string
		enqueue    []string
		exact      bool // every pair must end activated exactly once
	}{
		{"plain", nil, nil, false},
		{"min-replicas-to-write", []string{"--min-replicas-to-write", "1", "--min-replicas-max-lag", "10"}, nil, false},
		{"reconcile", nil, []string{"--reconcile"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const n = 2000
			_, replica, sc, url := startSentinelSetup(t, tc.masterArgs...)
			api := versoritest.New(t, versoritest.Options{Faults: versoritest.Faults{Latency: 20 * time.Millisecond}})
			path, pairs := writeRequests(t, n, 0)
			if code, out := runEnqueue(t, url, append([]string{"file", path, "--quiet"}, tc.enqueue...)...); code != 0 {
				t.Fatalf("enqueue file: exit %d\n%s", code, out)
			}
			rdb, err := redisconn.Open(url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { rdb.Close() })
			startProcOn(t, url, api, "127.0.0.1:"+strconv.Itoa(testutil.FreePort(t)))
			testutil.WaitFor(t, 30*time.Second, "500 activations", func() bool { return api.Stats().Activations >= 500 })
			at := api.Stats().Activations
			start := time.Now()
			failover(t, sc, replica)
			testutil.WaitFor(t, 5*time.Minute, "every pair active and the queue drained", func() bool {
				for _, p := range pairs {
					if api.ActivationCount(p) == 0 {
						return false
					}
				}
				return testutil.Unfinished(t, rdb, queue) == 0
			})
			dups := len(api.Duplicates())
			t.Logf("%s: failover at %d of %d activations; %d pairs activated twice; drained %s after the failover",
				tc.name, at, n, dups, time.Since(start).Round(time.Second))
			if tc.exact {
				assertExactlyOnce(t, api, pairs)
			}
		})
	}
}
