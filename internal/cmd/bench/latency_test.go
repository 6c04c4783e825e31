package bench_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/versori/activator/internal/cmd/bench"
	"github.com/versori/activator/internal/testutil"
)

// TestTinyLatency runs the latency mode on a few events with the real worker, stand-in and
// `enqueue serve`: every signed event reaches the API in both phases, the idle worker's dequeue
// scripts are counted, and the busy phase has its background stream. Times are reported, not
// asserted.
func TestTinyLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the worker, stand-in and enqueue binaries and runs them")
	}
	db := testutil.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := bench.Config{
		Mode: bench.ModeLatency, Jobs: 1, Concurrency: 1, Servers: 1, Reps: 1,
		RedisAddr: db.Addr, RedisDB: db.Number, Claimed: true,
		Signup: bench.LatencyConfig{Events: 3, EventGap: 50 * time.Millisecond, IdleWindow: time.Second,
			BusyRate: 200, PollIntervals: []string{"50ms"}},
	}
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	rep.Print(&out)
	t.Log("\n" + out.String())

	l := rep.Latency
	if l == nil || len(l.Passes) != 1 {
		t.Fatalf("latency = %+v, want one pass", l)
	}
	p := l.Passes[0]
	if p.PollInterval != "50ms" {
		t.Errorf("pass POLL_INTERVAL %q, want 50ms", p.PollInterval)
	}
	for name, ph := range map[string]bench.LatencyPhase{"idle": p.Idle, "busy": p.Busy} {
		if ph.Events != 3 || ph.Measured != 3 || len(ph.AllMS) != 3 {
			t.Errorf("%s: %d of %d events measured (%v), want 3 of 3", name, ph.Measured, ph.Events, ph.AllMS)
		}
	}
	if p.Busy.BackgroundTarget != 200 || p.Busy.BackgroundRate <= 0 {
		t.Errorf("busy background %v jobs/s asked, %v enqueued; want 200 asked and some enqueued", p.Busy.BackgroundTarget, p.Busy.BackgroundRate)
	}
	if p.CapacityJobsPerSec <= 0 {
		t.Errorf("capacity %v jobs/s, want it measured", p.CapacityJobsPerSec)
	}
	var evalsha float64
	for _, c := range p.IdleRedis.Client {
		if c.Command == "evalsha" {
			evalsha = c.PerJob
		}
	}
	if evalsha <= 0 || p.IdleRedis.ScriptPerSec <= 0 {
		t.Errorf("idle Redis %+v: want the dequeue scripts counted", p.IdleRedis)
	}
}
