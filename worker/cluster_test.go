package worker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/batch"
	"github.com/versori/activator/internal/cmd/enqueuecmd"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/redisconn"
	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori/versoritest"
)

// startCluster starts a Redis Cluster of size masters (no replicas) of the test's own, each
// redis-server on a free port with its cluster bus on another free port and its nodes.conf in its
// own temp dir, shares the 16,384 slots out evenly with CLUSTER ADDSLOTSRANGE, joins them with CLUSTER MEET
// and waits until every node says cluster_state:ok. The servers stop when t ends.
func startCluster(t *testing.T, size int) []*testutil.RedisServer {
	t.Helper()
	needRedis7(t)
	ctx := context.Background()
	nodes := make([]*testutil.RedisServer, size)
	bus := make([]int, size)
	for i := range nodes {
		bus[i] = testutil.FreePort(t)
		// nodes.conf goes in the server's own data directory.
		nodes[i] = testutil.StartRedisServer(t, false, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(bus[i]), "--cluster-node-timeout", "5000")
	}
	for i, n := range nodes {
		lo, hi := i*16384/size, (i+1)*16384/size-1
		if err := n.Client.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", lo, hi).Err(); err != nil {
			t.Fatalf("CLUSTER ADDSLOTSRANGE %d %d on %s: %v", lo, hi, n.Addr(), err)
		}
	}
	for i, n := range nodes[1:] {
		if err := nodes[0].Client.Do(ctx, "CLUSTER", "MEET", "127.0.0.1", n.Port, bus[i+1]).Err(); err != nil {
			t.Fatalf("CLUSTER MEET %s: %v", n.Addr(), err)
		}
	}
	testutil.WaitFor(t, 15*time.Second, "cluster_state:ok on every node", func() bool {
		for _, n := range nodes {
			info, err := n.Client.ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_known_nodes:"+strconv.Itoa(size)) {
				return false
			}
		}
		return true
	})
	return nodes
}

// needRedis7 fails the test under CI, or skips it, unless redis-server is 7.0 or later, as
// --cluster-port, CLUSTER ADDSLOTSRANGE and CLUSTER MEET with a bus port need.
func needRedis7(t *testing.T) {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return // startRedis says what to install
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("redis-server --version: %v", err)
	}
	_, v, _ := strings.Cut(string(out), " v=")
	if major, _ := strconv.Atoi(strings.SplitN(v, ".", 2)[0]); major >= 7 {
		return
	}
	msg := fmt.Sprintf("the Cluster test needs redis-server 7.0 or later; found %q", strings.TrimSpace(string(out)))
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// nodeKeys returns every key on one node, with SCAN.
func nodeKeys(t *testing.T, c *redis.Client) []string {
	t.Helper()
	var keys []string
	iter := c.Scan(context.Background(), 0, "*", 1000).Iterator()
	for iter.Next(context.Background()) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Strings(keys)
	return keys
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// TestPipelineOnCluster runs the whole pipeline on a local three-node Redis Cluster through a
// redis-cluster:// REDIS_URL that names two of the three nodes: `enqueue file` queues the rows, two
// worker processes sharing a rate limit activate each pair exactly once and dead-letter the rows that
// lack a connection; the batch status, `dlq list`, `dlq requeue`, pause/resume, /readyz and the queue
// metrics all work; and every key of the queue, asynq's and activator's, is on the one node that owns
// the queue's hash tag {activations}.
func TestPipelineOnCluster(t *testing.T) {
	t.Parallel()
	const (
		n, missing = 300, 30
		rateLimit  = 100 // calls per second, both workers together
	)
	ctx := context.Background()
	nodes := startCluster(t, 3)
	url := "redis-cluster://" + nodes[0].Addr() + "," + nodes[1].Addr()
	rdb, err := redisconn.Open(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	if _, ok := rdb.(*redis.ClusterClient); !ok {
		t.Fatalf("redisconn.Open(redis-cluster://…) = %T, want *redis.ClusterClient", rdb)
	}

	// 503s and responses dropped after the commit, with no quick retries in the job: every transient
	// failure goes back to asynq's retry set on the cluster, and a dropped response is looked up.
	api := versoritest.New(t, versoritest.Options{Seed: 7, Faults: versoritest.Faults{ServerErrorRate: 0.05, DropAfterCommitRate: 0.05}})
	api.RequireConnection(billingIntegration, billingTemplate)
	path, pairs := writeRequests(t, n, missing)
	if code, out := runEnqueue(t, url, "file", path, "--quiet", "--batch", "b-cluster"); code != enqueuecmd.ExitOK || !strings.Contains(out, fmt.Sprintf("enqueued: %d\n", n)) {
		t.Fatalf("enqueue file: exit %d\n%s", code, out)
	}

	// The test counts calls per second: the limit is spaced for one-second windows.
	env := []string{"VERSORI_RATE_LIMIT=" + strconv.Itoa(rateLimit), "VERSORI_RATE_BURST=1", "VERSORI_RATE_WINDOW=1s",
		"QUICK_RETRIES=0", "RETRY_BASE=100ms", "RETRY_CAP=500ms"}
	maddr := "127.0.0.1:" + strconv.Itoa(testutil.FreePort(t))
	startProcOn(t, url, api, maddr, env...)
	startProcOn(t, url, api, "127.0.0.1:"+strconv.Itoa(testutil.FreePort(t)), env...)
	store := deadletter.NewStore(rdb, queue)
	start := time.Now()
	testutil.WaitFor(t, 20*time.Second, "every pair settled and the queue drained", func() bool {
		return settled(t, api, store, n)() && testutil.Unfinished(t, rdb, queue) == 0
	})
	drained := time.Since(start)
	assertExactlyOnce(t, api, pairs[:n-missing])
	if st := api.Stats(); st.Dropped == 0 || st.ByOpStatus["activate 503"] == 0 || st.ByOpStatus["list_activations 200"] < st.Dropped {
		t.Errorf("faults not exercised, or a dropped response not looked up: %+v", st)
	}

	// The rate limit held across both workers: on average, and in the busiest second (with 5% for
	// calls that reach the stand-in late or early under -race; TestSoak holds the exact bound).
	calls := api.Calls()
	busiest := maxCallsPerSecond(calls)
	if busiest > rateLimit*105/100 {
		t.Errorf("%d API calls within one second, above the shared limit of %d/s", busiest, rateLimit)
	}
	first, last := calls[0].At, calls[0].At
	for _, c := range calls {
		first, last = minTime(first, c.At), maxTime(last, c.At)
	}
	mean := float64(len(calls)-1) / last.Sub(first).Seconds()
	if mean > rateLimit*1.02 {
		t.Errorf("%d calls in %s: %.1f calls/s, above the limit of %d/s", len(calls), last.Sub(first), mean, rateLimit)
	}

	// Dead letters: listed by `enqueue dlq list`, each with its reason and request.
	code, out := runEnqueue(t, url, "dlq", "list", "--json")
	var entries []deadletter.Entry
	if err := json.Unmarshal([]byte(out), &entries); code != 0 || err != nil {
		t.Fatalf("dlq list --json: exit %d, %v\n%s", code, err, out)
	}
	if len(entries) != missing {
		t.Errorf("dlq list: %d entries, want %d", len(entries), missing)
	}
	for _, e := range entries {
		if e.Reason != tasks.ReasonMissingConnections || e.Request.IntegrationID != billingIntegration || e.Batch != "b-cluster" {
			t.Errorf("dead letter %+v", e)
			break
		}
	}

	// Batch status, from the counters the workers flushed.
	testutil.WaitFor(t, 5*time.Second, "batch b-cluster done", func() bool {
		st, err := batch.Read(ctx, rdb, queue, "b-cluster")
		return err == nil && st.Finished
	})
	code, out = runEnqueue(t, url, "status", "b-cluster", "--json")
	var st batch.Status
	if err := json.Unmarshal([]byte(out), &st); code != 0 || err != nil {
		t.Fatalf("enqueue status --json: exit %d, %v\n%s", code, err, out)
	}
	if st.Queued != n || st.Activated+st.AlreadyActive != n-missing || st.Retries == 0 || st.DeadLetters[string(tasks.ReasonMissingConnections)] != missing ||
		st.Remaining != 0 || !st.Finished {
		t.Errorf("batch status = %+v", st)
	}

	// /readyz and the queue metrics (asynq's inspector) work on the cluster.
	if c, err := httpStatus("http://" + maddr + "/readyz"); c != http.StatusOK {
		t.Errorf("/readyz = %d, %v", c, err)
	}
	if body := httpBody(t, "http://"+maddr+"/metrics"); !strings.Contains(body, `asynq_tasks_enqueued_total{queue="`+queue+`"`) {
		t.Errorf("/metrics has no asynq queue metrics")
	}

	// Pause and resume, through the command.
	if code, out := runEnqueue(t, url, "pause"); code != 0 {
		t.Errorf("enqueue pause: exit %d\n%s", code, out)
	}
	if paused, err := rdb.Exists(ctx, rediskeys.AsynqPaused(queue)).Result(); err != nil || paused != 1 {
		t.Errorf("queue not paused after enqueue pause: %d, %v", paused, err)
	}
	if code, out := runEnqueue(t, url, "resume"); code != 0 {
		t.Errorf("enqueue resume: exit %d\n%s", code, out)
	}

	// The cause is fixed: a requeue activates the dead letters, once each, and empties the store.
	api.ClearRequirements(billingIntegration)
	if code, out := runEnqueue(t, url, "dlq", "requeue", "--reason", "missing_connections"); code != 0 || !strings.Contains(out, fmt.Sprintf("requeued: %d", missing)) {
		t.Fatalf("dlq requeue: exit %d\n%s", code, out)
	}
	testutil.WaitFor(t, 15*time.Second, "the requeued pairs active", func() bool {
		c, _ := store.Count(ctx, "")
		return api.Stats().Activations == n && c == 0 && testutil.Unfinished(t, rdb, queue) == 0
	})
	assertExactlyOnce(t, api, pairs)

	// Each job's result, its activation id, was written into asynq's task hash (a script over many
	// task keys of the queue, flushed in batches).
	insp := asynq.NewInspectorFromRedisClient(rdb)
	testutil.WaitFor(t, 5*time.Second, "every job's result written", func() bool {
		for _, a := range api.Activations() {
			info, err := insp.GetTaskInfo(queue, tasks.TaskID(a.Pair))
			if err != nil || info.State != asynq.TaskStateCompleted || string(info.Result) != a.ID {
				return false
			}
		}
		return true
	})

	// Where the keys are: every {activations} key on the node that owns the tag's slot.
	slot, err := insp.ClusterKeySlot(queue)
	if err != nil {
		t.Fatal(err)
	}
	owners, err := insp.ClusterNodes(queue)
	if err != nil || len(owners) != 1 {
		t.Fatalf("ClusterNodes(%s) = %v, %v; want one node", queue, owners, err)
	}
	tag := "{" + queue + "}"
	var report []string
	for _, node := range nodes {
		keys := nodeKeys(t, node.Client)
		var tagged, other []string
		for _, k := range keys {
			if strings.Contains(k, tag) {
				tagged = append(tagged, k)
			} else {
				other = append(other, k)
			}
		}
		owner := node.Addr() == owners[0].Addr
		if owner && (len(tagged) == 0 || !slices.Contains(tagged, rediskeys.AsynqTask(queue, tasks.TaskID(pairs[0])))) {
			t.Errorf("the owner %s holds %d %s keys; want all of them", node.Addr(), len(tagged), tag)
		}
		if !owner && len(tagged) > 0 {
			t.Errorf("node %s, which does not own slot %d, holds %s keys: %v", node.Addr(), slot, tag, tagged[:min(5, len(tagged))])
		}
		report = append(report, fmt.Sprintf("%s (owner %t): %d %s keys, others %v", node.Addr(), owner, len(tagged), tag, other))
	}
	stats := api.Stats()
	t.Logf("cluster: %d jobs (%d dead-lettered, then requeued) drained by 2 workers in %s, %.1f calls/s on average (first to last call) and %d in the busiest second (limit %d), "+
		"through %d 503s and %d dropped responses (%d retries); %s hashes to slot %d on %s; %s",
		n, missing, drained.Round(time.Millisecond), mean, busiest, rateLimit, stats.ByOpStatus["activate 503"], stats.Dropped, st.Retries,
		tag, slot, owners[0].Addr, strings.Join(report, "; "))
}

// httpBody is the body of GET url.
func httpBody(t *testing.T, url string) string {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
