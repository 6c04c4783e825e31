package worker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/inspect"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/intake"
	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
)

var (
	chaosProfile = flag.String("chaos", "short", "randomized whole-system test profile: short (default test run) or long (make soak)")
	chaosSeed    = flag.Int64("chaos-seed", 0, "seed of the randomized whole-system test; 0 picks one from the clock (it is printed)")
)

// chaosSettings are the sizes of a chaos profile.
type chaosSettings struct {
	pairs   int           // pairs in the universe
	rate    int           // VERSORI_RATE_LIMIT: slow enough that the chaos meets jobs in flight
	kills   int           // worker processes killed with SIGKILL during the run
	timeout time.Duration // for each wait for the queues to drain
}

func chaosProfileSettings(t *testing.T) chaosSettings {
	switch *chaosProfile {
	case "short":
		return chaosSettings{pairs: 600, rate: 30, kills: 2, timeout: 3 * time.Minute}
	case "long":
		return chaosSettings{pairs: 6000, rate: 100, kills: 6, timeout: 12 * time.Minute}
	}
	t.Fatalf("-chaos=%q: want short or long", *chaosProfile)
	return chaosSettings{}
}

// The chaos test's queues: a pair may be sent to both, and must be activated once whatever queues it
// went through.
const (
	chaosQueueA = "activations"
	chaosQueueB = "activations-eu"
)

// chaosFaults are every fault the stand-in can make, at once: answers lost after a commit, 5xx and
// timeouts after which the activation commits later, refusals of one request, conflicts, redirects,
// a Retry-After of a day, and list answers of the wrong shape; creating end users, setting variables
// and deleting activations meet the POST's.
func chaosFaults() versoritest.Faults {
	return versoritest.Faults{
		Latency: 2 * time.Millisecond, ServerErrorRate: 0.03, RateLimitRate: 0.01, RetryAfter: "86400",
		DropAfterCommitRate: 0.03, LateCommitRate: 0.03, LateCommitDelay: 300 * time.Millisecond,
		HangCommitRate: 0.01, HangFor: 2 * time.Second, ForbiddenRate: 0.005, ConflictRate: 0.005,
		TooEarlyRate: 0.01, RedirectRate: 0.003, BadListRate: 0.05, WriteOps: versoritest.AllWriteOps,
	}
}

// chaosPair is one pair of the universe and how it is sent.
type chaosPair struct {
	pair    versori.Pair // canonical
	req     versori.ActivationRequest
	fixed   versori.ActivationRequest // the corrected request, for a pair that lacks its connection
	fileA   bool                      // in the file enqueued on queue A
	fileB   bool                      // in the file enqueued on queue B
	intake  bool                      // posted to the intake (queue A)
	sender  int                       // which of the intake's two senders posts it
	hookID  string                    // its webhook id, which the other sender uses for another pair
	missing bool                      // lacks the connection its integration requires
	secret  bool                      // carries a new connection with credentials of its own (credsOf)
	// newUser: the API does not know the pair's end user at first; the pair's rows carry endUser
	// (with credentials of its own, primaryCredsOf), so that its job creates them. Some such users
	// have a second pair, whose jobs race the first's to create them.
	newUser bool
	endUser *tasks.EndUser // the rows' endUser, for a newUser pair
}

// base is the request the lifecycle phase's rows repeat: the fixed one for a pair that lacked its
// connection.
func (p *chaosPair) base() versori.ActivationRequest {
	if p.missing {
		return p.fixed
	}
	return p.req
}

// primaryCredsOf is the credentials of the primary connection of new end user user.
func primaryCredsOf(user string) string {
	return `{"apiKey":"` + secretPrefix + "-primary-" + user + `"}`
}

// chaosEndUser is the endUser the rows of new end user user carry.
func chaosEndUser(user string) *tasks.EndUser {
	return &tasks.EndUser{DisplayName: "Chaos " + user, PrimaryConnection: &versori.ConnectionCreate{
		Name: "primary-" + user, Credentials: json.RawMessage(primaryCredsOf(user)), Variables: []versori.ConnectionVariable{}}}
}

// chaosRow is one row of a file: req as its JSONL line, with "endUser" beside its fields when e is
// set.
func chaosRow(t *testing.T, req versori.ActivationRequest, e *tasks.EndUser) []byte {
	t.Helper()
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if e == nil {
		return b
	}
	eb, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	// ActivationRequest marshals itself, so a struct embedding it would lose endUser: spliced in.
	return append(append(append(b[:len(b)-1:len(b)-1], `,"endUser":`...), eb...), '}')
}

// writeChaosRows writes rows (chaosRow's) as a JSONL file at path and returns path.
func writeChaosRows(t *testing.T, path string, rows [][]byte) string {
	t.Helper()
	if err := os.WriteFile(path, append(bytes.Join(rows, []byte("\n")), '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestChaos is the randomized test of the whole system: a universe of pairs goes in through files on
// two queues and a signed-event intake (with repeated and reused webhook ids), in ULIDs of either
// case, through three worker processes against a stand-in making every fault it can at once. In the
// middle, workers are killed with SIGKILL and Redis is killed and restarted from its append-only
// file (losing up to its last second); afterwards dead letters are purged and re-sent fixed, requeued
// from a file of corrected rows, or requeued as they are. Some end users are new to the API (which
// requires them to exist): their rows carry endUser and their jobs create them. Then an invariant
// checker reads the stand-in's records and both dead-letter stores: every pair has exactly one
// activation or exactly one dead letter with a reason, never both, never neither. Then the lifecycle:
// deactivations, re-activations, updates and intake deactivations of random pairs, enqueued together
// while a worker is killed; every pair must end as the operation its order record says was enqueued
// last, and every end user be created at most once (docs/exactly-once.md). It prints its seed;
// -chaos-seed replays the same universe, faults and choices (the processes' timing still varies).
// The short profile runs in make test; make soak runs the long one.
func TestChaos(t *testing.T) {
	t.Parallel()
	cfg := chaosProfileSettings(t)
	seed := *chaosSeed
	if seed == 0 {
		seed = time.Now().UnixNano() % 1_000_000_000
	}
	t.Logf("chaos seed %d; replay with: go test ./worker -run '^TestChaos$' -v -chaos=%s -chaos-seed=%d", seed, *chaosProfile, seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0xc4a05))
	ctx := context.Background()

	rs := testutil.StartRedisServer(t, true) // AOF, appendfsync everysec: a kill loses up to its last second
	// The API knows an end user only once created (RequireKnownUsers): every user is, but for the
	// new ones, whose jobs create them.
	api := versoritest.New(t, versoritest.Options{Seed: seed, Faults: chaosFaults(), RequireKnownUsers: true})
	api.RequireConnection(billingIntegration, billingTemplate)
	universe := chaosUniverse(rng, cfg.pairs)
	total, newUsers := len(universe), map[string]bool{}
	for _, p := range universe {
		if p.newUser {
			newUsers[p.pair.UserID] = true
		} else {
			api.AddUser(p.pair.UserID)
		}
	}

	// Files: queue A's, and queue B's, which repeats part of A's.
	dir := t.TempDir()
	var rowsA, rowsB [][]byte
	for _, p := range universe {
		if p.fileA {
			rowsA = append(rowsA, chaosRow(t, p.req, p.endUser))
		}
		if p.fileB {
			rowsB = append(rowsB, chaosRow(t, p.req, p.endUser))
		}
	}
	pathA := writeChaosRows(t, filepath.Join(dir, "a.jsonl"), rowsA)
	pathB := writeChaosRows(t, filepath.Join(dir, "b.jsonl"), rowsB)
	// Keys: A seals at first; at a random kill the producers and workers move to "B,A" and reencrypt
	// runs while the workers run and are killed; once it reports nothing left under A, the workers
	// drop A.
	keyA, keyB := newKeySpec(t, "a"), newKeySpec(t, "b")
	ringA, ringBA := keyring(t, keyA), keyring(t, keyB, keyA)
	workerKeys := keyA
	prodA := producer.New(rs.Client, producer.Config{Queue: chaosQueueA, Keys: ringA})
	prodB := producer.New(rs.Client, producer.Config{Queue: chaosQueueB, Keys: ringA})
	sumA, err := prodA.EnqueueFile(ctx, producer.FileOptions{Path: pathA, Batch: "chaos-a"})
	if err != nil || sumA.Failed != 0 || sumA.Rejected != 0 {
		t.Fatalf("EnqueueFile(A) = %+v, %v", sumA, err)
	}
	sumB, err := prodB.EnqueueFile(ctx, producer.FileOptions{Path: pathB, Batch: "chaos-b"})
	if err != nil || sumB.Failed != 0 || sumB.Rejected != 0 {
		t.Fatalf("EnqueueFile(B) = %+v, %v", sumB, err)
	}

	// Three workers: two on A, one on B.
	env := []string{"WORKER_CONCURRENCY=20", "SETTLE_TIME=1s", "VERSORI_TIMEOUT=1s", "MAX_RETRY_AFTER=1s",
		"RETRY_CAP=2s", "SHUTDOWN_GRACE=1s", "VERSORI_RATE_LIMIT=" + strconv.Itoa(cfg.rate), "PROBE_INTERVAL=1s"}
	queues := []string{chaosQueueA, chaosQueueA, chaosQueueB}
	workers := make([]*proc, len(queues))
	start := func(i int) {
		workers[i] = startProcOn(t, rs.URL(), api, "127.0.0.1:"+strconv.Itoa(testutil.FreePort(t)),
			append(env, "QUEUE="+queues[i], tasks.EncryptionKeysVar+"="+workerKeys)...)
	}
	// restartAll stops every worker as a rolling deploy would (SIGTERM, SHUTDOWN_GRACE) and starts
	// it again with keys: no worker may run with an older keyring than the jobs it may take.
	restartAll := func(keys string) {
		workerKeys = keys
		for _, w := range workers {
			if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
		}
		for i := range workers {
			<-workers[i].done
			start(i)
		}
	}
	for i := range queues {
		start(i)
	}

	// The intake, on queue A, with two senders that reuse each other's webhook ids.
	it := chaosIntake(t, rs.Client, prodA)
	post := func(round int) int {
		return it.postAll(t, rng, universe, round)
	}
	var posted sync.WaitGroup
	posted.Add(1)
	var intakeQueued int
	go func() {
		defer posted.Done()
		intakeQueued = post(1)
	}()

	storeA, storeB := dlStore(rs.Client, prodA), dlStore(rs.Client, prodB)
	settled := func() int {
		a, _ := storeA.Count(ctx, "")
		b, _ := storeB.Count(ctx, "")
		return api.Stats().Activations + int(a) + int(b)
	}
	// Secrets at rest: no Redis value may hold an end user's credential in plain text, at any
	// moment sampled (at each kill) or at the end.
	var violations []string
	sampleLeaks := func(when string) {
		for _, k := range leaks(t, rs.Client) {
			violations = append(violations, fmt.Sprintf("%s: Redis key %s holds a credential in plain text", when, k))
		}
	}
	drained := func() bool {
		return testutil.Unfinished(t, rs.Client, chaosQueueA) == 0 && testutil.Unfinished(t, rs.Client, chaosQueueB) == 0 && api.PendingCommits() == 0
	}
	killWorker := func(i int, what string) {
		if err := workers[i].cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-workers[i].done
		n := recoverLeases(t, rs.Client, queues[i])
		t.Logf("%s: killed worker %d (queue %s) at %d settled; %d leases taken back", what, i, queues[i], settled(), n)
		start(i)
		sampleLeaks(what)
	}
	kill := func(what string) { killWorker(rng.IntN(len(workers)), what) }

	// Chaos while the queues drain.
	kills := 0
	testutil.WaitFor(t, cfg.timeout, "a fifth of the pairs settled", func() bool { return settled() >= total/5 })
	kill("first kill")
	kills++
	posted.Wait() // the intake answered 202 for its jobs: Redis must keep them (see the restart below)
	testutil.WaitFor(t, cfg.timeout, "two fifths of the pairs settled", func() bool { return settled() >= 2*total/5 })
	// A second's grace, so that what the intake and the files queued is in the append-only file: a
	// Redis that loses acknowledged writes loses them for producers too (docs/operations.md, "Redis").
	time.Sleep(1500 * time.Millisecond)
	at := settled()
	rs.Kill()
	rs.Start()
	t.Logf("Redis killed and restarted from its append-only file at %d settled", at)
	rotateAt := kills + rng.IntN(max(cfg.kills-kills, 1)) // the kill before which the keys rotate
	reencrypted := make(chan string, 1)
	var lastReencrypt atomic.Value // the last round's summaries, for a timeout's message
	lastReencrypt.Store("none yet")
	rotate := func() {
		restartAll(keyB + "," + keyA)
		prodA = producer.New(rs.Client, producer.Config{Queue: chaosQueueA, Keys: ringBA})
		prodB = producer.New(rs.Client, producer.Config{Queue: chaosQueueB, Keys: ringBA})
		t.Logf("keys rotated to B,A at %d settled", settled())
		// enqueue reencrypt's code path, run again and again, as an operator would, until it says
		// nothing is left under A in either queue (no job running, none changed meanwhile).
		delay := time.Duration(rng.IntN(1500)) * time.Millisecond
		go func() {
			// Among jobs in flight; it goes on (Running) through the kill that follows if jobs are
			// still sealed under A then, the killed worker's staying active until their leases are
			// taken back.
			time.Sleep(delay)
			for round := 1; ; round++ {
				done, sums := true, ""
				for _, q := range []string{chaosQueueA, chaosQueueB} {
					sum, err := inspect.New(rs.Client, producer.Config{Queue: q, Keys: ringBA}).Reencrypt(ctx)
					if err != nil {
						reencrypted <- fmt.Sprintf("reencrypt %s: %v", q, err)
						return
					}
					done = done && sum.Done()
					sums += fmt.Sprintf(" %s %+v", q, sum)
				}
				if done {
					reencrypted <- fmt.Sprintf("reencrypt done in %d rounds; last:%s", round, sums)
					return
				}
				lastReencrypt.Store(fmt.Sprintf("round %d:%s", round, sums))
				time.Sleep(200 * time.Millisecond)
			}
		}()
	}
	for kills < cfg.kills {
		target := total * (2 + kills) / (cfg.kills + 3)
		if kills == rotateAt {
			// Halfway to the kill, so that the restarted workers hold jobs when it comes.
			half := (total*(1+kills)/(cfg.kills+3) + target) / 2
			testutil.WaitFor(t, cfg.timeout, "pairs settled before the rotation", func() bool { return settled() >= half || drained() })
			rotate()
		}
		testutil.WaitFor(t, cfg.timeout, "more pairs settled", func() bool { return settled() >= target || drained() })
		kill(fmt.Sprintf("kill %d", kills+1))
		kills++
	}
	if rotateAt >= kills { // a profile with one kill: rotate all the same
		rotate()
	}
	select {
	case r := <-reencrypted:
		t.Log(r)
		if !strings.HasPrefix(r, "reencrypt done") {
			t.Fatal(r)
		}
	case <-time.After(cfg.timeout):
		t.Fatalf("reencrypt did not report nothing left under key A; %s", lastReencrypt.Load())
	}
	restartAll(keyB) // A is gone from every worker: a job still sealed under it would end secret_unreadable
	t.Logf("key A dropped from the workers at %d settled", settled())
	// Duplicates of everything the intake took, after the restart, through an intake sealing with B.
	it = chaosIntake(t, rs.Client, prodA)
	post(2)
	testutil.WaitFor(t, cfg.timeout, "every pair settled and the queues drained", func() bool {
		return settled() >= total && drained()
	})

	// Every end user is known to the API or created by their pair's job, and every integration
	// exists: nothing may end not_found (a requeue would hide it).
	notFound := func(id string, es []deadletter.Entry) {
		for _, e := range es {
			if e.Reason == tasks.ReasonNotFound {
				violations = append(violations, fmt.Sprintf("%s: dead-lettered %s: %s", id, e.Reason, e.Error))
			}
		}
	}

	// The dead-letter workflow. Missing connections: half purged, then the fixed rows sent again as
	// a new file (any queue may take a purged pair); half replaced from a file of fixed rows. Every
	// other dead letter is requeued as it is.
	var purgeRows, fixRowsA, fixRowsB []versori.ActivationRequest
	purged, requeued := 0, 0
	for _, s := range []struct {
		p     *producer.Producer
		store *deadletter.Store
		fix   *[]versori.ActivationRequest
	}{{prodA, storeA, &fixRowsA}, {prodB, storeB, &fixRowsB}} {
		ids, err := s.store.IDs(ctx, tasks.ReasonMissingConnections)
		if err != nil {
			t.Fatal(err)
		}
		var purge []string
		for _, id := range ids {
			p := universe.byTaskID(id)
			if p == nil || !p.missing {
				t.Errorf("dead letter %s for missing connections: not a pair lacking one", id)
				continue
			}
			if rng.IntN(2) == 0 {
				purge = append(purge, id)
				purgeRows = append(purgeRows, p.fixed)
			} else {
				*s.fix = append(*s.fix, p.fixed)
			}
		}
		res, err := inspector(rs.Client, s.p).Purge(ctx, purge)
		if err != nil || len(res.Purged) != len(purge) {
			t.Fatalf("Purge = %+v, %v", res, err)
		}
		purged += len(res.Purged)
		others, err := s.store.IDs(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		var again []string
		for _, id := range others {
			if p := universe.byTaskID(id); p == nil || !p.missing {
				again = append(again, id)
				notFound(id, chaosDeadLetters(t, id, s.store))
			}
		}
		rq, err := inspector(rs.Client, s.p).Requeue(ctx, again)
		if err != nil || len(rq.Invalid) != 0 {
			t.Fatalf("Requeue = %+v, %v", rq, err)
		}
		requeued += len(rq.Requeued)
	}
	kill("a kill during the dead-letter workflow")
	fixA, err := inspector(rs.Client, prodA).RequeueFile(ctx, inspect.RequeueFileOptions{Path: testutil.WriteJSONL(t, filepath.Join(dir, "fixed-a.jsonl"), fixRowsA...)})
	if err != nil || fixA.Requeued+fixA.Busy != len(fixRowsA) {
		t.Fatalf("RequeueFile(A) = %+v, %v", fixA, err)
	}
	fixB, err := inspector(rs.Client, prodB).RequeueFile(ctx, inspect.RequeueFileOptions{Path: testutil.WriteJSONL(t, filepath.Join(dir, "fixed-b.jsonl"), fixRowsB...)})
	if err != nil || fixB.Requeued+fixB.Busy != len(fixRowsB) {
		t.Fatalf("RequeueFile(B) = %+v, %v", fixB, err)
	}
	resent, err := prodA.EnqueueFile(ctx, producer.FileOptions{Path: testutil.WriteJSONL(t, filepath.Join(dir, "purged-fixed.jsonl"), purgeRows...), Batch: "chaos-fixed"})
	if err != nil || resent.Enqueued != len(purgeRows) {
		t.Fatalf("EnqueueFile(purged, fixed) = %+v, %v; want all %d queued again", resent, err, len(purgeRows))
	}
	testutil.WaitFor(t, cfg.timeout, "every pair settled again and the queues drained", func() bool {
		return settled() >= total && drained()
	})

	// The invariant before the lifecycle: every pair has exactly one activation or exactly one dead
	// letter with a reason, never both, never neither.
	sampleLeaks("before the lifecycle")
	for _, p := range universe {
		id := tasks.TaskID(p.pair)
		acts := api.ActivationCount(p.pair)
		dead := chaosDeadLetters(t, id, storeA, storeB)
		switch {
		case acts > 1:
			violations = append(violations, fmt.Sprintf("%s: %d activations", id, acts))
		case acts == 1 && len(dead) > 0:
			violations = append(violations, fmt.Sprintf("%s: activated and dead-lettered (%s)", id, dead[0].Reason))
		case acts == 0 && len(dead) == 0:
			violations = append(violations, fmt.Sprintf("%s: neither activated nor dead-lettered", id))
		case len(dead) > 1:
			violations = append(violations, fmt.Sprintf("%s: %d dead letters", id, len(dead)))
		}
	}
	before := api.Stats()

	// The lifecycle, while the workers run and one is killed. Redis is not restarted here: a
	// restart may lose the pairs' order records (docs/lifecycle.md). Random subsets of the pairs,
	// each on the queue that owns it, from concurrent goroutines let go together: a deactivation
	// file (the activations' rows as they are) and after it a file re-activating part of those
	// pairs; an update file with new variables; deactivations posted to the intake (queue A's pairs:
	// it serves queue A). A pair may meet several of them at once: then only its order record says
	// which was enqueued last.
	lcStart := time.Now()
	// A stream of its own, drawn the same whatever the pairs' owners: the phases before draw as
	// their timing has it (which dead letters are purged, in the order the store lists them), and
	// a replay should still meet the same lifecycle.
	lrng := rand.New(rand.NewPCG(uint64(seed), 0x11fec7c1e))
	plans := map[*chaosPair]*chaosPlan{}
	type opFiles struct{ deactivate, reactivate, update [][]byte }
	files := map[string]*opFiles{chaosQueueA: {}, chaosQueueB: {}}
	type intakeDeactivation struct {
		p            *chaosPair
		body         []byte
		sender       int
		hookID       string
		twice, whole bool
	}
	var posts []intakeDeactivation
	concurrent := 0 // pairs under operations of more than one goroutine
	for i, p := range universe {
		owner := ownerOf(t, rs.Client, p.pair)
		pl := &chaosPlan{deactivate: lrng.IntN(100) < 10, update: lrng.IntN(100) < 10, intake: lrng.IntN(100) < 5}
		pl.intake = pl.intake && owner == chaosQueueA
		pl.reactivate = lrng.IntN(2) == 0 && pl.deactivate
		seats, sender, twice, whole := 1+lrng.IntN(50), lrng.IntN(2), lrng.IntN(3) == 0, lrng.IntN(2) == 0
		if !pl.deactivate && !pl.update && !pl.intake {
			continue
		}
		plans[p] = pl
		if _, known := pl.last(); !known {
			concurrent++
		}
		f := files[owner]
		if pl.deactivate {
			f.deactivate = append(f.deactivate, chaosRow(t, p.base(), p.endUser))
		}
		if pl.reactivate {
			f.reactivate = append(f.reactivate, chaosRow(t, p.base(), p.endUser))
		}
		if pl.update {
			pl.vars = json.RawMessage(fmt.Sprintf(`{"plan":"chaos-%d-%d","seats":%d}`, seed, i, seats))
			req := p.base()
			req.DynamicVariables = pl.vars
			f.update = append(f.update, chaosRow(t, req, p.endUser))
		}
		if pl.intake {
			d := intakeDeactivation{p: p, sender: sender, hookID: "deactivate_" + strconv.Itoa(len(posts)), twice: twice, whole: whole}
			// The pair alone, or the activation's request as it is (its connections' credentials
			// included: they are dropped, never stored).
			d.body = chaosRow(t, versori.ActivationRequest{UserID: p.req.UserID, IntegrationID: p.req.IntegrationID}, nil)
			if d.whole {
				d.body = chaosRow(t, p.base(), nil)
			}
			posts = append(posts, d)
		}
	}
	prods := map[string]*producer.Producer{chaosQueueA: prodA, chaosQueueB: prodB}
	var (
		lcMu          sync.Mutex
		lcSums        []string
		lcWG          sync.WaitGroup
		letGo         = make(chan struct{})
		lcPosts       int
		lcPostsQueued int
	)
	enqueueOp := func(q, name string, op tasks.Op, path string) {
		if path == "" {
			return
		}
		sum, err := prods[q].EnqueueFile(ctx, producer.FileOptions{Path: path, Batch: "chaos-" + name, Op: op})
		if err != nil || sum.Failed != 0 || sum.Rejected != 0 || sum.OtherQueue != 0 {
			t.Errorf("EnqueueFile(%s, %s) = %+v, %v", name, q, sum, err)
		}
		lcMu.Lock()
		lcSums = append(lcSums, fmt.Sprintf("%s %s: %d rows, %d queued, %d duplicates", name, q, sum.Rows, sum.Enqueued, sum.Duplicates))
		lcMu.Unlock()
	}
	write := func(q, name string, rows [][]byte) string {
		if len(rows) == 0 {
			return ""
		}
		return writeChaosRows(t, filepath.Join(dir, name+"-"+q+".jsonl"), rows)
	}
	for _, q := range []string{chaosQueueA, chaosQueueB} {
		f := files[q]
		deactivate, reactivate, update := write(q, "deactivate", f.deactivate), write(q, "reactivate", f.reactivate), write(q, "update", f.update)
		lcWG.Go(func() {
			<-letGo
			enqueueOp(q, "deactivate", tasks.OpDeactivate, deactivate)
			enqueueOp(q, "reactivate", tasks.OpActivate, reactivate)
		})
		lcWG.Go(func() {
			<-letGo
			enqueueOp(q, "update", tasks.OpUpdate, update)
		})
	}
	lcWG.Go(func() {
		<-letGo
		for _, d := range posts {
			for range 1 + b2i(d.twice) {
				code, status, replayed := it.postTo(t, "/v1/deactivations", it.tokens[d.sender], d.hookID, d.body)
				switch {
				case code == http.StatusAccepted && status == "enqueued":
					lcPostsQueued++
				case code == http.StatusOK && (status == "duplicate" || status == "dead_lettered" || (replayed && status == "enqueued")):
				default:
					t.Errorf("intake answered %d %q to the deactivation of %s (webhook id %s, sender %d)", code, status, tasks.TaskID(d.p.pair), d.hookID, d.sender)
				}
				lcPosts++
			}
		}
	})
	lcKillAfter := time.Duration(300+lrng.IntN(1200)) * time.Millisecond
	close(letGo)
	time.Sleep(lcKillAfter)
	// One of queue A's workers: the queue that owns nearly every pair (its file went first).
	killWorker(lrng.IntN(2), "a kill during the lifecycle")
	lcWG.Wait()
	testutil.WaitFor(t, cfg.timeout, "every lifecycle operation done and the queues drained", drained)
	lcTook := time.Since(lcStart)

	// The invariant at the end.
	sampleLeaks("at the end")
	byID := make(map[string]*chaosPair, len(universe))
	for _, p := range universe {
		byID[tasks.TaskID(p.pair)] = p
	}
	credCalls, createCalls := 0, 0 // calls that carried a pair's, or a new user's, own credentials
	for _, c := range api.Calls() {
		switch c.Op {
		case versori.OpActivate:
			p := byID[tasks.TaskID(c.Pair.Canonical())]
			if p == nil {
				continue // counted as stray below
			}
			want := ""
			if p.secret {
				want = `[null,` + credsOf(p.pair.UserID) + `]`
			}
			if want != "" {
				credCalls++
			}
			if c.Credentials != want {
				violations = append(violations, fmt.Sprintf("%s: an activate call carried credentials %s, want %s", tasks.TaskID(p.pair), c.Credentials, want))
			}
		case versori.OpCreateEndUser:
			createCalls++
			if !newUsers[c.Pair.UserID] {
				violations = append(violations, fmt.Sprintf("end user %q, known to the API from the start, was created (%d)", c.Pair.UserID, c.Status))
			} else if want := "[" + primaryCredsOf(c.Pair.UserID) + "]"; c.Credentials != want {
				violations = append(violations, fmt.Sprintf("end user %q: a create call carried credentials %s, want %s", c.Pair.UserID, c.Credentials, want))
			}
		}
	}
	if d := api.Duplicates(); len(d) > 0 {
		violations = append(violations, fmt.Sprintf("%d duplicate activations", len(d)))
	}
	// Every dead letter, of any operation: a valid reason, and none secret_unreadable (no key was
	// removed before reencrypt was done).
	byReason := map[tasks.Reason]int{}
	deadSeqs := map[string][]int64{} // the numbers of each pair's dead-lettered operations, by TaskID
	deadUsers := map[string]bool{}   // users with a pair dead-lettered
	lcDead := map[string]int{}       // dead letters of the lifecycle's operations, by operation and reason
	for _, s := range []*deadletter.Store{storeA, storeB} {
		ids, err := s.IDs(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			pair, _ := tasks.PairOf(id)
			seq, _ := tasks.SeqOf(id)
			deadSeqs[tasks.TaskID(pair)] = append(deadSeqs[tasks.TaskID(pair)], seq)
			deadUsers[pair.UserID] = true
			es, err := s.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range es {
				byReason[e.Reason]++
				if seq > 0 {
					lcDead[e.Op.String()+" "+string(e.Reason)]++
				}
				if _, err := tasks.ParseReason(string(e.Reason)); err != nil {
					violations = append(violations, fmt.Sprintf("%s: dead letter without a valid reason: %q", id, e.Reason))
				}
				if e.Reason == tasks.ReasonSecretUnreadable {
					violations = append(violations, fmt.Sprintf("%s: dead-lettered %s", id, e.Reason))
				}
			}
			notFound(id, es)
		}
	}
	// Every pair ends as the operation its order says was enqueued last (when the test enqueued a
	// pair's operations one after another, the order must say so too): an activation or an update,
	// exactly one activation (an update's with its variables); a deactivation, none; or that
	// operation dead-lettered, with no duplicate ever.
	lastOps, ends := map[string]int{}, map[string]int{}
	for _, p := range universe {
		id := tasks.TaskID(p.pair)
		seq, op := lastOperation(t, rs.Client, p.pair)
		lastOps[op.String()]++
		pl := plans[p]
		switch want, known := pl.last(); {
		case pl == nil && seq != 0:
			violations = append(violations, fmt.Sprintf("%s: no lifecycle operation was enqueued, yet its order's last is %s number %d", id, op, seq))
		case pl != nil && seq == 0:
			violations = append(violations, fmt.Sprintf("%s: lifecycle operations were enqueued (%+v), yet its order numbered none", id, pl))
		case known && op != want:
			violations = append(violations, fmt.Sprintf("%s: enqueued %s last (%+v), yet its order says %s (number %d)", id, want, pl, op, seq))
		}
		last := tasks.TaskIDAt(p.pair, seq)
		acts := api.ActivationCount(p.pair)
		dead := chaosDeadLetters(t, last, storeA, storeB)
		vars, _ := api.Variables(p.pair)
		switch {
		case acts > 1:
			violations = append(violations, fmt.Sprintf("%s: %d activations", id, acts))
		case len(dead) > 1:
			violations = append(violations, fmt.Sprintf("%s: %d dead letters of its last operation (%s)", last, len(dead), op))
		case len(dead) == 1 && op == tasks.OpActivate && acts == 1:
			violations = append(violations, fmt.Sprintf("%s: activated and dead-lettered (%s)", last, dead[0].Reason))
		case len(dead) == 1:
			ends[op.String()+" dead-lettered"]++
		case op == tasks.OpDeactivate && acts != 0:
			violations = append(violations, fmt.Sprintf("%s: deactivated last (number %d), yet active", id, seq))
		case op != tasks.OpDeactivate && acts != 1:
			violations = append(violations, fmt.Sprintf("%s: its last operation, %s number %d, left no activation and no dead letter", id, op, seq))
		case op == tasks.OpUpdate && !sameVariables(vars, pl.vars):
			violations = append(violations, fmt.Sprintf("%s: updated last (number %d), yet its variables are %s, want %s", id, seq, vars, pl.vars))
		case op == tasks.OpActivate && seq > 0 && !slices.ContainsFunc(deadSeqs[id], func(s int64) bool { return s > 0 }) && !sameVariables(vars, p.base().DynamicVariables) &&
			!(api.Deletes(p.pair) == 0 && pl != nil && sameVariables(vars, pl.vars)):
			// Re-activated after a deactivation that deleted the activation: the new one has the
			// request's variables, not an update's. A deactivation that began only once the
			// re-activation was numbered ended superseded without a call, so the re-activation found
			// the update's activation, as the order allows.
			violations = append(violations, fmt.Sprintf("%s: re-activated last (number %d), yet its variables are %s, want the request's %s", id, seq, vars, p.base().DynamicVariables))
		default:
			ends[op.String()+" done"]++
		}
	}
	// End users: each created at most once, only the new ones, and every new one exists unless a
	// pair of theirs is dead-lettered.
	created, twoPairs := 0, 0
	for _, u := range api.Users() {
		created += u.Creates
		if u.Creates > 1 {
			violations = append(violations, fmt.Sprintf("end user %q created %d times", u.ExternalID, u.Creates))
		}
	}
	pairsOf := map[string]int{}
	for _, p := range universe {
		pairsOf[p.pair.UserID]++
	}
	for u := range newUsers {
		if pairsOf[u] > 1 {
			twoPairs++
		}
		if !api.HasUser(u) && !deadUsers[u] {
			violations = append(violations, fmt.Sprintf("end user %q, whose rows carried endUser, does not exist, and no pair of theirs is dead-lettered", u))
		}
	}
	if stray := len(api.Activations()) - countActive(api, universe); stray != 0 {
		violations = append(violations, fmt.Sprintf("%d activations of pairs outside the universe", stray))
	}
	st := api.Stats()
	if st.UsersCreatedTwice != 0 {
		violations = append(violations, fmt.Sprintf("the stand-in counts %d end users created twice", st.UsersCreatedTwice))
	}
	slices.Sort(lcSums)
	t.Logf("chaos %s, seed %d: %d pairs (files A %d, B %d rows; %d queued by the intake), %d kills and a Redis restart; "+
		"%d purged and re-sent, %d replaced from a fixed file, %d requeued; before the lifecycle %d activations, %d API calls", *chaosProfile, seed, total,
		len(rowsA), len(rowsB), intakeQueued, kills+2, purged, fixA.Requeued+fixB.Requeued, requeued, before.Activations, before.Calls)
	t.Logf("chaos lifecycle: %d pairs in %s (%d under operations enqueued concurrently), a kill %s after they began; %v; "+
		"intake deactivations: %d posts, %d queued; last operations %v; ends %v; lifecycle dead letters %v",
		len(plans), lcTook.Round(time.Second), concurrent, lcKillAfter, lcSums, lcPosts, lcPostsQueued, lastOps, ends, lcDead)
	t.Logf("chaos end users: %d new (%d with two pairs), %d created, %d create calls",
		len(newUsers), twoPairs, created, createCalls)
	t.Logf("chaos: %d activations, %d duplicates, dead letters %v; %d API calls %v; %d activate calls carried a pair's own credentials",
		st.Activations, len(api.Duplicates()), byReason, st.Calls, st.ByOpStatus, credCalls)
	for i, v := range violations {
		if i == 20 {
			t.Errorf("... and %d more", len(violations)-20)
			break
		}
		t.Errorf("invariant broken: %s", v)
	}
	if len(violations) > 0 {
		// What the API saw of the first pairs broken, to tell a race from a fault without a replay.
		calls := api.Calls()
		for i, v := range violations[:min(len(violations), 5)] {
			id, _, _ := strings.Cut(v, ": ")
			pair, ok := tasks.PairOf(id)
			if !ok {
				continue
			}
			seq, op := lastOperation(t, rs.Client, pair)
			t.Logf("violation %d: %s, last operation %s number %d; its API calls:", i, id, op, seq)
			for _, c := range calls {
				if c.Pair.UserID == pair.UserID && (c.Pair.IntegrationID == pair.IntegrationID || c.Pair.IntegrationID == "") {
					t.Logf("  %s %-18s %s %d committed=%v dropped=%v", c.At.Format("15:04:05.000000"), c.Op, c.Path, c.Status, c.Committed, c.Dropped)
				}
			}
		}
		t.Errorf("replay with: go test ./worker -run '^TestChaos$' -v -chaos=%s -chaos-seed=%d", *chaosProfile, seed)
	}
}

// chaosPlan is what the lifecycle phase enqueues for one pair.
type chaosPlan struct {
	deactivate bool            // in the deactivation file of the queue that owns it
	reactivate bool            // then in the re-activation file, by the same goroutine
	update     bool            // in the update file, by another goroutine
	intake     bool            // its deactivation posted to the intake, by a third
	vars       json.RawMessage // the update's dynamic variables
}

// last returns the operation the test enqueued last on the pair, and whether it knows it: it does
// when one goroutine enqueued every operation on the pair, or they were all deactivations.
func (pl *chaosPlan) last() (tasks.Op, bool) {
	switch {
	case pl == nil:
		return tasks.OpActivate, true
	case pl.update && (pl.deactivate || pl.intake), pl.reactivate && pl.intake:
		return "", false
	case pl.update:
		return tasks.OpUpdate, true
	case pl.reactivate:
		return tasks.OpActivate, true
	}
	return tasks.OpDeactivate, true
}

// lastOperation reads the pair's order record (internal/pairorder): the number of the operation
// enqueued last and what it is; 0 and activate when nothing was numbered after the first activation.
func lastOperation(t *testing.T, rdb redis.UniversalClient, pair versori.Pair) (int64, tasks.Op) {
	t.Helper()
	h, err := rdb.HGetAll(context.Background(), rediskeys.PairOrder(tasks.TaskID(pair))).Result()
	if err != nil {
		t.Fatal(err)
	}
	seq, op := int64(0), tasks.OpActivate
	if v, ok := h["seq"]; ok {
		if seq, err = strconv.ParseInt(v, 10, 64); err != nil {
			t.Fatalf("order of %s: seq %q: %v", tasks.TaskID(pair), v, err)
		}
	}
	switch h["op"] {
	case "", "a":
	case "u":
		op = tasks.OpUpdate
	case "d":
		op = tasks.OpDeactivate
	default:
		t.Fatalf("order of %s: op %q", tasks.TaskID(pair), h["op"])
	}
	return seq, op
}

// ownerOf returns the queue that owns pair in the pair registry (internal/pairs).
func ownerOf(t *testing.T, rdb redis.UniversalClient, pair versori.Pair) string {
	t.Helper()
	v, err := rdb.Get(context.Background(), rediskeys.Pair(tasks.TaskID(pair))).Result()
	if err != nil {
		t.Fatalf("registry entry of %s: %v", tasks.TaskID(pair), err)
	}
	q, _, _ := strings.Cut(v, "|")
	if q != chaosQueueA && q != chaosQueueB {
		t.Fatalf("registry entry of %s is %q: owned by neither queue", tasks.TaskID(pair), v)
	}
	return q
}

// chaosDeadLetters returns the dead letters of task id in stores.
func chaosDeadLetters(t *testing.T, id string, stores ...*deadletter.Store) []deadletter.Entry {
	t.Helper()
	var out []deadletter.Entry
	for _, s := range stores {
		es, err := s.Get(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, es...)
	}
	return out
}

// sameVariables reports whether dynamic variables a and b are the same JSON value, reading none
// (empty) as null.
func sameVariables(a, b []byte) bool {
	var va, vb any
	if len(bytes.TrimSpace(a)) > 0 && json.Unmarshal(a, &va) != nil {
		return false
	}
	if len(bytes.TrimSpace(b)) > 0 && json.Unmarshal(b, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// b2i is 1 for true.
func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// chaosUniverseT is the universe of a chaos run.
type chaosUniverseT []*chaosPair

func (u chaosUniverseT) byTaskID(id string) *chaosPair {
	for _, p := range u {
		if tasks.TaskID(p.pair) == id {
			return p
		}
	}
	return nil
}

// chaosUniverse draws n users' pairs: most on the CRM integration, one in seven on billing without
// the connection it requires; ULIDs in random case; each sent through file A, file B, the intake, or
// several of them. Some users are new to the API (newUser), and some of those have a second pair.
func chaosUniverse(rng *rand.Rand, n int) chaosUniverseT {
	spell := func(id string) string {
		if rng.IntN(2) == 0 {
			return strings.ToLower(id)
		}
		return id
	}
	var events [2]int // each sender numbers its events from 0: msg_3 names one pair for each
	route := func(p *chaosPair) {
		p.pair = p.req.Pair().Canonical()
		switch x := rng.IntN(100); {
		case x < 55:
			p.fileA = true
		case x < 70:
			p.fileA, p.fileB = true, true
		case x < 80:
			p.fileA, p.intake = true, true
		case x < 90:
			p.fileB = true
		default:
			p.intake = true
		}
		if p.intake {
			p.sender = rng.IntN(2)
			p.hookID = "msg_" + strconv.Itoa(events[p.sender])
			events[p.sender]++
		}
	}
	u := make(chaosUniverseT, 0, n+n/10)
	for i := range n {
		p := &chaosPair{missing: rng.IntN(7) == 0}
		user := fmt.Sprintf("chaos-%05d", i)
		if p.missing {
			p.req = versori.ActivationRequest{UserID: user, IntegrationID: spell(billingIntegration)}
			p.fixed = versori.ActivationRequest{UserID: user, IntegrationID: spell(billingIntegration),
				Connections: []versori.ActivationConnection{{TemplateID: spell(billingTemplate), ConnectionID: spell(billingConnection)}}}
		} else if p.secret = rng.IntN(3) == 0; p.secret {
			p.req = secretRequest(user, spell(crmIntegration))
		} else {
			p.req = versori.ActivationRequest{UserID: user, IntegrationID: spell(crmIntegration),
				Connections: []versori.ActivationConnection{{TemplateID: spell(crmTemplate), ConnectionID: spell(crmConnection)}}}
		}
		route(p)
		u = append(u, p)
		// A tenth of the users the rest send activations for are unknown to the API: their rows
		// carry endUser; half of those have a second pair, on billing, whose job races the first's
		// to create them. (Each new user costs three calls more, at the profile's rate.)
		if p.missing || rng.IntN(10) != 0 {
			continue
		}
		p.newUser, p.endUser = true, chaosEndUser(user)
		if rng.IntN(2) == 0 {
			q := &chaosPair{newUser: true, endUser: p.endUser, req: versori.ActivationRequest{UserID: user, IntegrationID: spell(billingIntegration),
				Connections: []versori.ActivationConnection{{TemplateID: spell(billingTemplate), ConnectionID: spell(billingConnection)}}}}
			route(q)
			u = append(u, q)
		}
	}
	return u
}

// chaosIntakeT is an intake served for a chaos run, with two senders' tokens.
type chaosIntakeT struct {
	url    string
	tokens [2]string
}

func chaosIntake(t *testing.T, rdb redis.UniversalClient, p *producer.Producer) *chaosIntakeT {
	t.Helper()
	it := &chaosIntakeT{tokens: [2]string{"sender-one-token-0123456789", "sender-two-token-0123456789"}}
	s, err := intake.New(intake.Config{Tokens: it.tokens[:], Batch: "chaos-intake",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, rdb, p)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	it.url = ts.URL
	return it
}

// postAll posts every intake pair of the universe, by its sender with its webhook id (which the
// other sender uses for another pair), some twice; it returns how many were answered "enqueued".
// Answers 429 and 503 are retried, as a sender would.
func (it *chaosIntakeT) postAll(t *testing.T, rng *rand.Rand, u chaosUniverseT, round int) int {
	queued := 0
	for _, p := range u {
		if !p.intake {
			continue
		}
		body := chaosRow(t, p.req, p.endUser)
		for range 1 + rng.IntN(2) {
			code, status, replayed := it.post(t, it.tokens[p.sender], p.hookID, body)
			switch {
			case code == http.StatusAccepted && status == "enqueued":
				queued++
			case code == http.StatusOK && (status == "duplicate" || status == "dead_lettered" || (replayed && status == "enqueued")):
			default:
				t.Errorf("round %d: intake answered %d %q for %s (webhook id %s, sender %d)", round, code, status, p.pair.UserID, p.hookID, p.sender)
			}
		}
	}
	return queued
}

// post posts one request until the intake answers something other than 429, 503 or a 409 for an
// id being handled, and returns the answer's code, its status (or its body when it is an error) and
// whether it replays an earlier answer.
func (it *chaosIntakeT) post(t *testing.T, token, id string, body []byte) (int, string, bool) {
	return it.postTo(t, "/v1/activations", token, id, body)
}

// postTo is post to the intake's route (its path).
func (it *chaosIntakeT) postTo(t *testing.T, route, token, id string, body []byte) (int, string, bool) {
	for try := 0; ; try++ {
		req, err := http.NewRequest(http.MethodPost, it.url+route, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set(intake.HeaderWebhookID, id)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var a intake.Accepted
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		_ = json.Unmarshal(b, &a)
		retry := resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable ||
			(resp.StatusCode == http.StatusConflict && resp.Header.Get("Retry-After") != "")
		if !retry || try == 50 {
			replayed := resp.Header.Get("Idempotent-Replayed") == "true"
			if resp.StatusCode >= 300 {
				return resp.StatusCode, string(b), replayed
			}
			return resp.StatusCode, string(a.Status), replayed
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// countActive counts the activations held for pairs of the universe.
func countActive(api *versoritest.Server, u chaosUniverseT) int {
	n := 0
	for _, p := range u {
		n += api.ActivationCount(p.pair)
	}
	return n
}

// recoverLeases makes the leases of a killed worker's tasks look a minute stale, so that the next
// worker's recoverer takes them back at start instead of the test waiting out asynq's 30 s lease,
// 30 s cutoff and one-minute recoverer period, and gives back the pair turns their runs held
// (releaseTurn). A live worker extends its leases to now+30 s every 5 s, so after 7 s every lease
// that ends within 24 s is a dead worker's.
func recoverLeases(t *testing.T, rdb *redis.Client, queue string) int {
	t.Helper()
	time.Sleep(7 * time.Second)
	ctx := context.Background()
	key := rediskeys.AsynqLease(queue)
	cut := strconv.FormatInt(time.Now().Add(24*time.Second).Unix(), 10)
	ids, err := rdb.ZRangeArgs(ctx, redis.ZRangeArgs{Key: key, ByScore: true, Start: "-inf", Stop: "(" + cut}).Result()
	if err != nil {
		t.Fatal(err)
	}
	stale := float64(time.Now().Add(-100 * time.Second).Unix())
	for _, id := range ids {
		if err := rdb.ZAddXX(ctx, key, redis.Z{Score: stale, Member: id}).Err(); err != nil {
			t.Fatal(err)
		}
		releaseTurn(t, rdb, id)
	}
	return len(ids)
}

// releaseTurnScript ends the hold of a pair's turn when the run holding it is one of task id's.
// KEYS: the pair's order hash. ARGV: the task id.
var releaseTurnScript = redis.NewScript(`
local run = redis.call('HGET', KEYS[1], 'run')
if run and string.sub(run, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. '\0' then
	redis.call('HSET', KEYS[1], 'until', 0)
	return 1
end
return 0
`)

// releaseTurn gives back the pair's turn a killed worker's run of task id holds (internal/pairorder),
// as recoverLeases takes its lease back: without it the pair would wait out the run's hold, the job's
// deadline (minutes) plus SETTLE_TIME. It runs 7 s after the kill, by when every call of the run has
// landed (the stand-in's late commits take 300 ms, its hung calls 2 s), which is what the hold waits
// for. A run's id starts with its task id and a NUL byte (worker/handler.go, takeTurn). The job's
// own next run takes the turn over anyway; a later operation's job on the pair, when this one is
// superseded, would not.
func releaseTurn(t *testing.T, rdb *redis.Client, id string) {
	t.Helper()
	pair, ok := tasks.PairOf(id)
	if !ok {
		return
	}
	if err := releaseTurnScript.Run(context.Background(), rdb, []string{rediskeys.PairOrder(tasks.TaskID(pair))}, id).Err(); err != nil {
		t.Fatal(err)
	}
}
