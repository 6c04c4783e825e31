package bench

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Main runs the bench command with args and returns its exit code: `bench [flags]`, or
// `bench baseline-worker [flags]` for the baseline worker process the bench starts.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "baseline-worker" {
		return BaselineWorker(args[1:], stderr)
	}
	cfg, asJSON, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 2
	}
	cfg.CommandLine = "go run ./cmd/bench " + strings.Join(args, " ")
	cfg.Progress = stderr
	rep, err := Run(ctx, cfg)
	if rep != nil {
		if asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(rep)
		} else {
			rep.Print(stdout)
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "bench:", err)
		return 1
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (Config, bool, error) {
	var c Config
	var asJSON bool
	var sweep, procs, polls, concs string
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: bench [flags]   (modes: compare, servers, horizontal, enqueue, latency, concurrency, ratelimit, all)\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&c.Mode, "mode", ModeCompare, "compare: plain asynq vs activator, exact command accounting, enqueue file; servers: WORKER_SERVERS sweep; horizontal: several worker processes under one rate limit; enqueue; latency: signup event to API call through enqueue serve, idle and busy, and an idle worker's Redis commands/s; concurrency: both sides at each of -concurrencies; ratelimit: the share of a shared rate limit the API sees over long windows (-ratelimit-*); all (not latency, concurrency or ratelimit)")
	fs.DurationVar(&c.Latency, "latency", 0, "the stand-in's latency per call")
	fs.IntVar(&c.Jobs, "jobs", 20000, "jobs per drain")
	fs.IntVar(&c.Concurrency, "concurrency", 50, "jobs in flight per asynq server (both sides)")
	fs.IntVar(&c.Servers, "servers", 0, "asynq servers per worker process (activator's WORKER_SERVERS; the baseline runs as many); 0: the baseline runs one, asynq's own default, and activator its default WORKER_SERVERS for -concurrency")
	fs.IntVar(&c.Reps, "reps", 3, "repetitions; the sides alternate which runs first")
	fs.IntVar(&c.EnqueueRows, "enqueue-rows", 200000, "rows of the `enqueue file` run (0 skips it); a tenth of them runs first, for the memory comparison")
	fs.IntVar(&c.AccountJobs, "account-jobs", 2000, "jobs of the untimed MONITOR pass that counts each side's commands exactly (0 skips it)")
	fs.StringVar(&c.RedisAddr, "redis-addr", "127.0.0.1:6379", "Redis server")
	fs.IntVar(&c.RedisDB, "redis-db", 13, "Redis database the bench owns and FLUSHES (never 0)")
	fs.DurationVar(&c.Poll, "poll", 0, "how often the queue is polled for drained, both sides (default 25ms)")
	fs.IntVar(&c.RateLimit, "rate-limit", 100000, "activator's VERSORI_RATE_LIMIT in compare and servers modes (far above the run's rate: active, not binding)")
	fs.IntVar(&c.RateBurst, "rate-burst", 100, "activator's VERSORI_RATE_BURST in compare and servers modes")
	fs.BoolVar(&c.QueueMetrics, "queue-metrics", false, "activator's QUEUE_METRICS")
	fs.StringVar(&sweep, "sweep-servers", "1,2,4", "WORKER_SERVERS values of the servers mode")
	fs.StringVar(&procs, "procs", "1,2,4", "worker process counts of the horizontal mode")
	fs.StringVar(&concs, "concurrencies", "50,500,2000", "concurrency mode: the concurrencies (calls in flight per process) drained by both sides")
	fs.IntVar(&c.DrainSeconds, "drain-seconds", 10, "concurrency mode: each drain's jobs last about this long at the rate its concurrency allows")
	fs.IntVar(&c.CPURate, "cpu-rate", 3500, "concurrency mode: jobs/s one process drains when the CPU is the limit, which caps the rate drains are sized for")
	fs.IntVar(&c.ConcurrencyReps, "concurrency-reps", 1, "concurrency mode: drains per side and concurrency (the order alternates)")
	fs.IntVar(&c.HorizontalRate, "horizontal-rate", 2000, "VERSORI_RATE_LIMIT the horizontal mode's processes share (burst 1)")
	addRateLimitFlags(fs, &c.RateLimitBench)
	fs.StringVar(&c.GitRef, "git-ref", "", "build the worker, stand-in and enqueue from this commit's files (git archive) instead of the working tree")
	fs.StringVar(&c.ModuleDir, "module-dir", "", "the activator module to build the binaries from (default: the one holding the working directory)")
	fs.StringVar(&c.WorkDir, "work-dir", "", "keep binaries, job files and process logs here (default: a temporary directory, removed)")
	fs.StringVar(&c.PerfDir, "perf", "", "record each worker process with `perf record -g` into this directory (for profiles: perf slows the run)")
	fs.StringVar(&c.PprofDir, "pprof", "", "save each worker process's (both sides) CPU profile (-pprof-seconds from 1 s after its start) and allocation profile into this directory")
	fs.IntVar(&c.PprofSeconds, "pprof-seconds", 10, "length of the -pprof CPU profile; keep it shorter than a drain")
	fs.Func("worker-env", "KEY=VALUE added to activator workers' environment, for what-if runs (repeatable)", func(v string) error {
		if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
			return fmt.Errorf("%q is not KEY=VALUE", v)
		}
		c.WorkerEnv = append(c.WorkerEnv, v)
		return nil
	})
	fs.IntVar(&c.Signup.Events, "events", 40, "latency mode: signed signup events per phase")
	fs.DurationVar(&c.Signup.EventGap, "event-gap", 250*time.Millisecond, "latency mode: time between signup events")
	fs.DurationVar(&c.Signup.IdleWindow, "idle-window", 10*time.Second, "latency mode: how long the idle worker's Redis commands are counted (MONITOR)")
	fs.IntVar(&c.Signup.BusyRate, "busy-rate", 0, "latency mode: background jobs/s while busy (0: half the capacity measured on a backlog)")
	fs.StringVar(&polls, "poll-intervals", pollDefault, "latency mode: POLL_INTERVAL of each pass, comma-separated (default: the worker's own)")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return c, false, err
	}
	if fs.NArg() > 0 {
		return c, false, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var err error
	if c.SweepServers, err = intList(sweep); err != nil {
		return c, false, fmt.Errorf("-sweep-servers: %w", err)
	}
	if c.HorizontalProcs, err = intList(procs); err != nil {
		return c, false, fmt.Errorf("-procs: %w", err)
	}
	c.Signup.PollIntervals = strings.Split(polls, ",")
	if c.Concurrencies, err = intList(concs); err != nil {
		return c, false, fmt.Errorf("-concurrencies: %w", err)
	}
	return c, asJSON, nil
}

func intList(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a list of positive integers", s)
		}
		out = append(out, n)
	}
	return out, nil
}
