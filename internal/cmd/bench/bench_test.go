package bench_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/versori/activator/internal/cmd/bench"
	"github.com/versori/activator/internal/testutil"
)

// baselineEnv makes the test binary run as the baseline worker, so that the test need not build
// cmd/bench.
const baselineEnv = "ACTIVATOR_BENCH_BASELINE_WORKER"

func TestMain(m *testing.M) {
	if os.Getenv(baselineEnv) == "1" {
		os.Exit(bench.BaselineWorker(os.Args[1:], os.Stderr))
	}
	os.Exit(m.Run())
}

// TestTinyCompare runs the whole comparison on 300 jobs with the real binaries: both sides drain the
// queue to completed, the ratio is computed, every activation took exactly one API call, and the
// exact accounting sees activator's result write.
func TestTinyCompare(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the worker, stand-in and enqueue binaries and runs them")
	}
	db := testutil.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := bench.Config{
		Jobs: 300, Concurrency: 20, Servers: 1, Reps: 1, AccountJobs: 100,
		RedisAddr: db.Addr, RedisDB: db.Number, Claimed: true,
		RateLimit: 100000, RateBurst: 100,
		Baseline: bench.Command{Path: os.Args[0], Env: []string{baselineEnv + "=1"}},
		// Profiles from both sides: activator's from its ADMIN_ADDR, the baseline's from -pprof-addr.
		PprofDir: t.TempDir(), PprofSeconds: 1,
	}
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, side := range []string{"activator", "baseline"} {
		for _, kind := range []string{"cpu", "allocs"} {
			if m, _ := filepath.Glob(filepath.Join(cfg.PprofDir, "*"+side+"*."+kind+".pprof")); len(m) == 0 {
				ls, _ := os.ReadDir(cfg.PprofDir)
				t.Errorf("no %s %s profile in %s: %v", side, kind, cfg.PprofDir, ls)
			}
		}
	}
	var out strings.Builder
	rep.Print(&out)
	t.Log("\n" + out.String())

	c := rep.Compare
	if c == nil || len(c.Runs) != 2 {
		t.Fatalf("compare = %+v, want two drains", c)
	}
	for _, r := range c.Runs {
		if r.Problem != "" || r.Completed != cfg.Jobs || r.Archived != 0 {
			t.Errorf("%s: completed %d, archived %d, problem %q; want %d completed", r.Side, r.Completed, r.Archived, r.Problem, cfg.Jobs)
		}
		if r.JobsPerSec <= 0 || r.CallsPerActivation != 1 || r.Activations != cfg.Jobs || r.Duplicates != 0 {
			t.Errorf("%s: %.0f jobs/s, %.3f calls per activation, %d activations (%d duplicated); want 1 call each for %d",
				r.Side, r.JobsPerSec, r.CallsPerActivation, r.Activations, r.Duplicates, cfg.Jobs)
		}
		if r.RedisCmdsPerJob <= 0 || r.PeakRSSKB <= 0 {
			t.Errorf("%s: %.2f Redis commands per job, peak RSS %d KiB; want both measured", r.Side, r.RedisCmdsPerJob, r.PeakRSSKB)
		}
	}
	if len(c.Ratios) != 1 || c.Ratio <= 0 || c.Ratio != c.Activator.MedianJobsPerSec/c.Baseline.MedianJobsPerSec {
		t.Errorf("ratio %v (per rep %v), want activator/baseline", c.Ratio, c.Ratios)
	}
	a := rep.Accounting
	if a == nil {
		t.Fatal("no accounting")
	}
	hset := func(shares []bench.CmdShare) float64 {
		for _, x := range shares {
			if x.Command == "hset" {
				return x.PerJob
			}
		}
		return 0
	}
	// The result is still written once per job, but inside the results writer's batched script, not
	// as a command of the job's own: no client HSET per job (the batch counters' flush sends a few
	// per drain), one more HSET inside scripts; and one for taking the pair's turn
	// (internal/pairorder's Begin; End deletes the fields).
	if got := hset(a.Activator.Client) - hset(a.Baseline.Client); got > 0.1 {
		t.Errorf("activator sends %.3f more HSETs per job than the baseline, want none per job", got)
	}
	if got := hset(a.Activator.Script) - hset(a.Baseline.Script); got < 1.99 || got > 2.01 {
		t.Errorf("activator runs %.3f more HSETs per job inside scripts, want 2 (its batched result write, the pair's turn)", got)
	}
}

// TestTinyConcurrency runs the concurrency mode on two small concurrencies with the real binaries:
// each point drains both sides to completed with one call per activation, sized from the latency,
// and activator runs the worker's default number of asynq servers.
func TestTinyConcurrency(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the worker, stand-in and enqueue binaries and runs them")
	}
	db := testutil.Redis(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := bench.Config{
		Mode: bench.ModeConcurrency, Latency: 20 * time.Millisecond, Concurrencies: []int{10, 200},
		DrainSeconds: 1, Jobs: 1, Concurrency: 1, Servers: 1, Reps: 1,
		RedisAddr: db.Addr, RedisDB: db.Number, Claimed: true,
		RateLimit: 100000, RateBurst: 100,
		Baseline: bench.Command{Path: os.Args[0], Env: []string{baselineEnv + "=1"}},
	}
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	rep.Print(&out)
	t.Log("\n" + out.String())
	c := rep.Concurrency
	if c == nil || len(c.Points) != 2 {
		t.Fatalf("concurrency = %+v, want two points", c)
	}
	for i, want := range []int{500, 3500} { // 1 s at 10/20ms = 500/s, and at the CPU's default 3,500/s
		p := c.Points[i]
		if p.Jobs != want || len(p.Runs) != 2 || p.Ratio <= 0 {
			t.Errorf("concurrency %d: %d jobs, %d drains, ratio %v; want %d jobs, 2 drains", p.Concurrency, p.Jobs, len(p.Runs), p.Ratio, want)
		}
		for _, r := range p.Runs {
			if r.Problem != "" || r.Completed != p.Jobs || r.CallsPerActivation != 1 || r.CPUPerJobUS <= 0 {
				t.Errorf("concurrency %d %s: completed %d, %.3f calls per activation, %.0f µs/job, problem %q",
					p.Concurrency, r.Side, r.Completed, r.CallsPerActivation, r.CPUPerJobUS, r.Problem)
			}
		}
	}
	if !strings.Contains(out.String(), "concurrency sweep") {
		t.Error("the report has no concurrency table")
	}
}
