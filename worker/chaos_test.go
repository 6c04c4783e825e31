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
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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
// a Retry-After of a day, and list answers of the wrong shape.
func chaosFaults() versoritest.Faults {
	return versoritest.Faults{
		Latency: 2 * time.Millisecond, ServerErrorRate: 0.03, RateLimitRate: 0.01, RetryAfter: "86400",
		DropAfterCommitRate: 0.03, LateCommitRate: 0.03, LateCommitDelay: 300 * time.Millisecond,
		HangCommitRate: 0.01, HangFor: 2 * time.Second, ForbiddenRate: 0.005, ConflictRate: 0.005,
		TooEarlyRate: 0.01, RedirectRate: 0.003, BadListRate: 0.05,
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
}

// TestChaos is the randomized test of the whole system: a universe of pairs goes in through files on
// two queues and a signed-event intake (with repeated and reused webhook ids), in ULIDs of either
// case, through three worker processes against a stand-in making every fault it can at once. In the
// middle, workers are killed with SIGKILL and Redis is killed and restarted from its append-only
// file (losing up to its last second); afterwards dead letters are purged and re-sent fixed, requeued
// from a file of corrected rows, or requeued as they are. Then an invariant checker reads the
// stand-in's records and both dead-letter stores: every pair has exactly one activation or exactly one
// dead letter with a reason, never both, never neither. It prints its seed; -chaos-seed replays the
// same universe, faults and choices (the processes' timing still varies). The short profile runs in
// make test; make soak runs the long one.
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
	api := versoritest.New(t, versoritest.Options{Seed: seed, Faults: chaosFaults()})
	api.RequireConnection(billingIntegration, billingTemplate)
	universe := chaosUniverse(rng, cfg.pairs)

	// Files: queue A's, and queue B's, which repeats part of A's.
	dir := t.TempDir()
	var rowsA, rowsB []versori.ActivationRequest
	for _, p := range universe {
		if p.fileA {
			rowsA = append(rowsA, p.req)
		}
		if p.fileB {
			rowsB = append(rowsB, p.req)
		}
	}
	pathA := testutil.WriteJSONL(t, filepath.Join(dir, "a.jsonl"), rowsA...)
	pathB := testutil.WriteJSONL(t, filepath.Join(dir, "b.jsonl"), rowsB...)
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
	kill := func(what string) {
		i := rng.IntN(len(workers))
		if err := workers[i].cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-workers[i].done
		n := recoverLeases(t, rs.Client, queues[i])
		t.Logf("%s: killed worker %d (queue %s) at %d settled; %d leases taken back", what, i, queues[i], settled(), n)
		start(i)
		sampleLeaks(what)
	}

	// Chaos while the queues drain.
	kills := 0
	testutil.WaitFor(t, cfg.timeout, "a fifth of the pairs settled", func() bool { return settled() >= cfg.pairs/5 })
	kill("first kill")
	kills++
	posted.Wait() // the intake answered 202 for its jobs: Redis must keep them (see the restart below)
	testutil.WaitFor(t, cfg.timeout, "two fifths of the pairs settled", func() bool { return settled() >= 2*cfg.pairs/5 })
	// A second's grace, so that what the intake and the files queued is in the append-only file: a
	// Redis that loses acknowledged writes loses them for producers too (docs/operations.md, "Redis").
	time.Sleep(1500 * time.Millisecond)
	at := settled()
	rs.Kill()
	rs.Start()
	t.Logf("Redis killed and restarted from its append-only file at %d settled", at)
	rotateAt := kills + rng.IntN(max(cfg.kills-kills, 1)) // the kill before which the keys rotate
	reencrypted := make(chan string, 1)
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
				time.Sleep(200 * time.Millisecond)
			}
		}()
	}
	for kills < cfg.kills {
		target := cfg.pairs * (2 + kills) / (cfg.kills + 3)
		if kills == rotateAt {
			// Halfway to the kill, so that the restarted workers hold jobs when it comes.
			half := (cfg.pairs*(1+kills)/(cfg.kills+3) + target) / 2
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
		t.Fatal("reencrypt did not report nothing left under key A")
	}
	restartAll(keyB) // A is gone from every worker: a job still sealed under it would end secret_unreadable
	t.Logf("key A dropped from the workers at %d settled", settled())
	// Duplicates of everything the intake took, after the restart, through an intake sealing with B.
	it = chaosIntake(t, rs.Client, prodA)
	post(2)
	testutil.WaitFor(t, cfg.timeout, "every pair settled and the queues drained", func() bool {
		return settled() >= cfg.pairs && drained()
	})

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
		return settled() >= cfg.pairs && drained()
	})

	// The invariant.
	sampleLeaks("at the end")
	byID := make(map[string]*chaosPair, len(universe))
	for _, p := range universe {
		byID[tasks.TaskID(p.pair)] = p
	}
	credCalls := 0 // activate calls of pairs with credentials, each checked to carry its own
	for _, c := range api.Calls() {
		if c.Op != versori.OpActivate {
			continue
		}
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
	}
	if d := api.Duplicates(); len(d) > 0 {
		violations = append(violations, fmt.Sprintf("%d duplicate activations", len(d)))
	}
	byReason := map[tasks.Reason]int{}
	for _, p := range universe {
		id := tasks.TaskID(p.pair)
		acts := api.ActivationCount(p.pair)
		var dead []deadletter.Entry
		for _, s := range []*deadletter.Store{storeA, storeB} {
			es, err := s.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			dead = append(dead, es...)
		}
		for _, e := range dead {
			byReason[e.Reason]++
			if _, err := tasks.ParseReason(string(e.Reason)); err != nil {
				violations = append(violations, fmt.Sprintf("%s: dead letter without a valid reason: %q", id, e.Reason))
			}
			if e.Reason == tasks.ReasonSecretUnreadable { // no key was removed before reencrypt was done
				violations = append(violations, fmt.Sprintf("%s: dead-lettered %s", id, e.Reason))
			}
		}
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
	if stray := len(api.Activations()) - countActive(api, universe); stray != 0 {
		violations = append(violations, fmt.Sprintf("%d activations of pairs outside the universe", stray))
	}
	st := api.Stats()
	t.Logf("chaos %s, seed %d: %d pairs (files A %d, B %d rows; %d queued by the intake), %d kills and a Redis restart; "+
		"%d purged and re-sent, %d replaced from a fixed file, %d requeued", *chaosProfile, seed, cfg.pairs,
		len(rowsA), len(rowsB), intakeQueued, kills+1, purged, fixA.Requeued+fixB.Requeued, requeued)
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
		t.Errorf("replay with: go test ./worker -run '^TestChaos$' -v -chaos=%s -chaos-seed=%d", *chaosProfile, seed)
	}
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

// chaosUniverse draws n pairs: most on the CRM integration, one in seven on billing without the
// connection it requires; ULIDs in random case; each sent through file A, file B, the intake, or
// several of them.
func chaosUniverse(rng *rand.Rand, n int) chaosUniverseT {
	spell := func(id string) string {
		if rng.IntN(2) == 0 {
			return strings.ToLower(id)
		}
		return id
	}
	var events [2]int // each sender numbers its events from 0: msg_3 names one pair for each
	u := make(chaosUniverseT, n)
	for i := range u {
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
		u[i] = p
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
		body, err := json.Marshal(p.req)
		if err != nil {
			t.Fatal(err)
		}
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
	for try := 0; ; try++ {
		req, err := http.NewRequest(http.MethodPost, it.url+"/v1/activations", bytes.NewReader(body))
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
// 30 s cutoff and one-minute recoverer period. A live worker extends its leases to now+30 s every
// 5 s, so after 7 s every lease that ends within 24 s is a dead worker's.
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
	}
	return len(ids)
}
