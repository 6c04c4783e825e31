package worker_test

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/internal/window"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
)

var soakProfile = flag.String("soak", "short", "fault-injection soak profile: short (default test run) or long")

// soakSettings are the sizes of a soak profile.
type soakSettings struct {
	requests, missing int
	rateLimit         int
	timeout           time.Duration
}

func soakProfileSettings(t *testing.T) soakSettings {
	switch *soakProfile {
	case "short":
		return soakSettings{requests: 2000, missing: 100, rateLimit: 150, timeout: 3 * time.Minute}
	case "long":
		return soakSettings{requests: 20000, missing: 1000, rateLimit: 300, timeout: 15 * time.Minute}
	}
	t.Fatalf("-soak=%q: want short or long", *soakProfile)
	return soakSettings{}
}

// TestSoak pushes thousands of requests through two worker processes against a stand-in that
// answers as a real API behind a gateway may: 5xx, 429 with Retry-After, answers dropped after the
// commit, 504s and hung calls after which the activation commits later, 425s, refusals of one
// request (403, 409) and list answers of the wrong shape, under a global rate limit; it kills one
// worker with SIGKILL mid-run and restarts it. From the stand-in's own records it checks that every
// pair is activated exactly once, or dead-lettered as missing connections, or (only a pair whose
// POST was refused with a 403 or 409) as unauthorized or permanent_error; that no call for a pair
// came inside its Retry-After window; that no transient failure was dead-lettered; and that the
// request rate never went above the limit. Run the long profile with `make soak`.
func TestSoak(t *testing.T) {
	t.Parallel()
	cfg := soakProfileSettings(t)
	db := testutil.Redis(t)
	api := versoritest.New(t, versoritest.Options{Seed: 11, Faults: versoritest.Faults{
		Latency: time.Millisecond, ServerErrorRate: 0.05, RateLimitRate: 0.005, RetryAfter: "1",
		DropAfterCommitRate: 0.03, LateCommitRate: 0.02, HangCommitRate: 0.005, HangFor: 2 * time.Second,
		TooEarlyRate: 0.01, ForbiddenRate: 0.002, ConflictRate: 0.002, BadListRate: 0.03,
	}})
	api.RequireConnection(billingIntegration, billingTemplate)
	path, pairs := writeRequests(t, cfg.requests, cfg.missing)
	p := producer.New(db.Client, producer.Config{Queue: queue})
	ctx := context.Background()
	if sum, err := p.EnqueueFile(ctx, producer.FileOptions{Path: path}); err != nil || sum.Enqueued != cfg.requests {
		t.Fatalf("EnqueueFile = %+v, %v", sum, err)
	}
	start := time.Now()
	// The soak counts calls per second: the limit is spaced for one-second windows.
	env := []string{"VERSORI_RATE_LIMIT=" + strconv.Itoa(cfg.rateLimit), "VERSORI_RATE_BURST=1", "VERSORI_RATE_WINDOW=1s",
		"RETRY_CAP=5s", "WORKER_CONCURRENCY=50", "SHUTDOWN_GRACE=2s", "VERSORI_TIMEOUT=1s", "SETTLE_TIME=1s"}
	victim := startProc(t, db, api, env...)
	startProc(t, db, api, env...)

	store := dlStore(db.Client, p)
	settledCount := func() int {
		dl, _ := store.Count(ctx, "")
		return api.Stats().Activations + int(dl)
	}
	testutil.WaitFor(t, cfg.timeout, "a third of the pairs settled", func() bool { return settledCount() >= cfg.requests/3 })
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-victim.done
	killedAt := time.Since(start)
	recovered := recoverLeases(t, db.Client, queue)
	startProc(t, db, api, env...)

	testutil.WaitFor(t, cfg.timeout, "every pair settled and the queue drained", func() bool {
		return settledCount() >= cfg.requests && testutil.Unfinished(t, db.Client, queue) == 0 && api.PendingCommits() == 0
	})
	elapsed := time.Since(start)

	// Every pair is active exactly once; or dead-lettered for missing connections (billing) and never
	// activated; or, if the API refused its POST as such, dead-lettered for that refusal.
	refused := map[versori.Pair]int{}
	for _, c := range api.Calls() {
		if c.Op == versori.OpActivate && (c.Status == 403 || c.Status == 409) {
			refused[c.Pair] = c.Status
		}
	}
	if d := api.Duplicates(); len(d) > 0 {
		t.Errorf("%d pairs were activated more than once, e.g. %+v", len(d), d[0])
	}
	for i, pr := range pairs {
		acts := api.ActivationCount(pr)
		es, err := store.Get(ctx, tasks.TaskID(pr))
		if err != nil {
			t.Fatal(err)
		}
		var reason tasks.Reason
		if len(es) > 0 {
			reason = es[0].Reason
		}
		billing := i >= cfg.requests-cfg.missing
		switch {
		case acts > 0 && reason != "":
			t.Errorf("pair %+v is active and dead-lettered (%s)", pr, reason)
		case billing && acts > 0:
			t.Errorf("pair %+v without its connection has %d activations", pr, acts)
		case acts == 1:
		case reason == tasks.ReasonMissingConnections && billing:
		case reason == tasks.ReasonUnauthorized && refused[pr] == 403, reason == tasks.ReasonPermanentError && refused[pr] == 409:
		default:
			t.Errorf("pair %+v: %d activations, dead letter %q (refused with %d)", pr, acts, reason, refused[pr])
		}
	}
	byReason, err := store.CountByReason(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n := byReason[tasks.ReasonRetriesExhausted]; n != 0 {
		t.Errorf("%d dead letters with reason retries_exhausted: a transient failure must never be dead-lettered", n)
	}

	calls := api.Calls()
	early := retryAfterViolations(calls)
	for _, v := range early {
		t.Errorf("Retry-After not honoured: %s", v)
	}
	maxWindow := maxCallsPerSecond(calls)
	if maxWindow > cfg.rateLimit+1 {
		t.Errorf("%d calls in one second, above the limit of %d/s (burst 1)", maxWindow, cfg.rateLimit)
	}
	st := api.Stats()
	t.Logf("soak %s: %d pairs (%d missing connections) in %s through 2 worker processes, one killed at %s "+
		"(%d in-flight leases taken back) and restarted", *soakProfile, cfg.requests, cfg.missing,
		elapsed.Round(time.Millisecond), killedAt.Round(time.Millisecond), recovered)
	t.Logf("soak: activations %d, duplicates %d, dead letters %v", st.Activations, len(api.Duplicates()), nonZero(byReason))
	t.Logf("soak: %d API calls %v; dropped after commit %d", st.Calls, st.ByOpStatus, st.Dropped)
	t.Logf("soak: rate limit %d/s: busiest second %d calls, mean %.0f calls/s; Retry-After violations %d",
		cfg.rateLimit, maxWindow, float64(len(calls))/elapsed.Seconds(), len(early))
}

// retryAfterViolations lists calls for a pair made before the Retry-After of an earlier 429 for it
// had passed.
func retryAfterViolations(calls []versoritest.Call) []string {
	notBefore := map[versori.Pair]time.Time{}
	var out []string
	for _, c := range calls {
		if c.Op != versori.OpActivate && c.Op != versori.OpListActivations {
			continue
		}
		if nb, ok := notBefore[c.Pair]; ok && c.At.Before(nb) {
			out = append(out, fmt.Sprintf("pair %+v called %s before its Retry-After passed", c.Pair, nb.Sub(c.At)))
		}
		if c.Status == 429 {
			notBefore[c.Pair] = c.At.Add(c.RetryAfter)
		}
	}
	return out
}

// maxCallsPerSecond is the most calls in any one-second window.
func maxCallsPerSecond(calls []versoritest.Call) int {
	at := make([]time.Time, 0, len(calls))
	for _, c := range calls {
		if c.Op == versori.OpActivate || c.Op == versori.OpListActivations {
			at = append(at, c.At)
		}
	}
	return window.Max(at, time.Second)
}
