package worker_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/inspect"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
	"github.com/versori/activator/worker"
)

// Test integrations, the shared fixtures under the names of their roles here: billing requires a
// connection template that the test rows never bind.
const (
	crmIntegration     = testutil.IntegrationID
	crmTemplate        = testutil.TemplateID
	crmConnection      = testutil.ConnectionID
	billingIntegration = testutil.OtherIntegrationID
	billingTemplate    = testutil.OtherTemplateID
	billingConnection  = testutil.OtherConnectionID
	queue              = "activations"
)

// testSettle is the settle time of the tests' workers: the stand-in's late commits land within
// their LateCommitDelay (300 ms by default), where a real API behind a gateway needs minutes.
const testSettle = 500 * time.Millisecond

// writeRequests writes a JSONL file of n requests, the last missing of them for billing (which will
// be dead-lettered as missing connections), and returns its path and the pairs in order.
func writeRequests(t *testing.T, n, missing int) (string, []versori.Pair) {
	t.Helper()
	reqs := make([]versori.ActivationRequest, n)
	pairs := make([]versori.Pair, n)
	for i := range n {
		reqs[i] = testutil.Request(fmt.Sprintf("user-%05d", i))
		if i >= n-missing {
			reqs[i] = versori.ActivationRequest{UserID: fmt.Sprintf("user-%05d", i), IntegrationID: billingIntegration}
		}
		pairs[i] = reqs[i].Pair()
	}
	return testutil.WriteJSONL(t, filepath.Join(t.TempDir(), "requests.jsonl"), reqs...), pairs
}

// startWorker runs an in-process worker on rdb against api until the test ends or stop is called.
func startWorker(t *testing.T, rdb redis.UniversalClient, api *versoritest.Server, mod func(*worker.Config)) (w *worker.Worker, stop func()) {
	t.Helper()
	cfg := worker.Config{
		Queue: queue, Concurrency: 20, PollInterval: 50 * time.Millisecond, SweepInterval: 500 * time.Millisecond,
		ShutdownGrace: 2 * time.Second, MetricsAddr: "127.0.0.1:0",
		Versori: versori.Config{BaseURL: api.URL(), HubID: api.HubID(), Auth: versori.APIKey(api.APIKey()), Timeout: 5 * time.Second},
		Logger:  slog.New(slog.NewJSONHandler(io.Discard, nil)),
	}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if mod != nil {
		mod(&cfg)
	}
	if cfg.Policy.SettleTime == 0 {
		cfg.Policy.SettleTime = testSettle
	}
	w, err := worker.New(rdb, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker.Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return w, stop
}

// settled reports whether every pair is activated or dead-lettered.
func settled(t *testing.T, api *versoritest.Server, store *deadletter.Store, n int) func() bool {
	return func() bool {
		dl, err := store.Count(context.Background(), "")
		if err != nil {
			t.Logf("counting dead letters: %v", err)
			return false
		}
		return api.Stats().Activations+int(dl) >= n
	}
}

// activateCalls counts the POST /activations calls the stand-in received per pair.
func activateCalls(api *versoritest.Server) map[versori.Pair]int {
	out := map[versori.Pair]int{}
	for _, c := range api.Calls() {
		if c.Op == versori.OpActivate {
			out[c.Pair]++
		}
	}
	return out
}

// assertExactlyOnce checks that every pair in active has exactly one activation and the rest none.
func assertExactlyOnce(t *testing.T, api *versoritest.Server, active []versori.Pair) {
	t.Helper()
	if d := api.Duplicates(); len(d) > 0 {
		t.Errorf("%d pairs were activated more than once, e.g. %+v", len(d), d[0])
	}
	for _, p := range active {
		if n := api.ActivationCount(p); n != 1 {
			t.Errorf("pair %+v has %d activations, want 1", p, n)
		}
	}
}

func redisZ(score float64, member string) redis.Z { return redis.Z{Score: score, Member: member} }

// dlStore is the dead-letter store of p's queue on rdb.
func dlStore(rdb redis.UniversalClient, p *producer.Producer) *deadletter.Store {
	return deadletter.NewStore(rdb, p.Queue())
}

// inspector is an operator's view of p's queue on rdb.
func inspector(rdb redis.UniversalClient, p *producer.Producer) *inspect.Inspector {
	return inspect.New(rdb, producer.Config{Queue: p.Queue()})
}
