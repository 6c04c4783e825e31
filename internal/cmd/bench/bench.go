// Package bench measures activator against a plain asynq worker on the same jobs, and its scaling:
// it builds and runs the real worker, stand-in and enqueue binaries as separate processes against a
// Redis database it owns, and reports jobs/s, API calls per activation, Redis commands per job, peak
// RSS and enqueue rows/s. cmd/bench is its command; BENCHMARKS.md has the figures.
package bench

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/window"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/versori/versoritest"
)

// Modes.
const (
	ModeCompare    = "compare"    // baseline vs activator, exact command accounting, enqueue
	ModeServers    = "servers"    // activator with WORKER_SERVERS swept
	ModeHorizontal = "horizontal" // several activator processes under one global rate limit
	ModeEnqueue    = "enqueue"    // enqueue file only
	ModeRateLimit  = "ratelimit"  // the share of the shared rate limit reached, over long windows
	ModeAll        = "all"
	// ModeLatency (latency.go) is not part of ModeAll.
)

// Sides.
const (
	SideBaseline  = "baseline"
	SideActivator = "activator"
)

const queue = "activations"

// Command is how to start a program: path, leading arguments, extra environment.
type Command struct {
	Path string
	Args []string
	Env  []string
}

// Config is one bench run.
type Config struct {
	Mode        string
	Latency     time.Duration // the stand-in's latency per call
	Jobs        int
	Concurrency int // per asynq server, both sides
	Servers     int // asynq servers per process, both sides, in the comparison; 0: the baseline one, activator its default
	Reps        int
	EnqueueRows int // rows of the enqueue file run; 0 skips it
	AccountJobs int // jobs of the untimed MONITOR pass; 0 skips it
	RedisAddr   string
	RedisDB     int // flushed before every run; never 0
	Poll        time.Duration
	// RateLimit and RateBurst are activator's VERSORI_RATE_LIMIT and VERSORI_RATE_BURST in the
	// comparison and the servers sweep: far above the run's rate, so the limiter is consulted on every
	// call but never makes one wait.
	RateLimit, RateBurst int
	QueueMetrics         bool // activator's QUEUE_METRICS
	SweepServers         []int
	HorizontalProcs      []int
	HorizontalRate       int // VERSORI_RATE_LIMIT shared by the processes of the horizontal mode
	// Concurrencies are the concurrency mode's points; each drain there lasts about DrainSeconds at
	// the rate its concurrency allows, CPURate jobs/s at most (what one process drains when the CPU
	// is the limit), ConcurrencyReps times per side.
	Concurrencies                          []int
	DrainSeconds, CPURate, ConcurrencyReps int
	RateLimitBench                         RateLimitConfig
	// Claimed says the caller already owns RedisDB under the test suite's claim (testutil); otherwise
	// the bench claims it the same way, so that tests running meanwhile do not flush it mid-run.
	Claimed bool
	// GitRef, if set, builds the worker, stand-in and enqueue binaries from this commit's files
	// instead of the working tree, which other people may be editing while the bench runs.
	GitRef string
	// PerfDir, if set, records a CPU profile of every worker process with `perf record -g` into this
	// directory (perf slows the worker: use it for profiles, not for figures).
	PerfDir string
	// PprofDir, if set, turns on the workers' profilers (activator's PPROF, the baseline's
	// -pprof-addr) and saves, per worker process, a CPU
	// profile of PprofSeconds taken from one second after its start, and its allocation profile at
	// the end of the drain (every allocation of its life), as <process>.cpu.pprof and
	// <process>.allocs.pprof. Read them with `go tool pprof`.
	PprofDir     string
	PprofSeconds int
	// WorkerEnv is added to every activator worker's environment after the bench's own settings, for
	// what-if runs (LOG_LEVEL=warn, say); the report prints it.
	WorkerEnv   []string
	ModuleDir   string
	WorkDir     string // binaries, job files and logs; "" uses a temporary directory, removed after
	CommandLine string
	Baseline    Command // the baseline worker (BaselineWorker behind a command line)
	Progress    io.Writer

	// Signup configures ModeLatency.
	Signup LatencyConfig
}

func (c *Config) defaults() error {
	if c.Mode == "" {
		c.Mode = ModeCompare
	}
	switch c.Mode {
	case ModeCompare, ModeServers, ModeHorizontal, ModeEnqueue, ModeAll, ModeLatency, ModeConcurrency, ModeRateLimit:
	default:
		return fmt.Errorf("-mode %q: want compare, servers, horizontal, enqueue, latency, concurrency, ratelimit or all", c.Mode)
	}
	if err := c.Signup.defaults(); err != nil {
		return err
	}
	if c.Jobs < 1 || c.Concurrency < 1 || c.Servers < 0 || c.Reps < 1 {
		return errors.New("-jobs, -concurrency and -reps must be at least 1, -servers at least 0")
	}
	if c.RedisDB == 0 {
		return errors.New("-redis-db 0 is refused: the bench flushes its database; pick one it may own (1-15)")
	}
	if c.Poll <= 0 {
		c.Poll = 25 * time.Millisecond
	}
	if c.PprofSeconds <= 0 {
		c.PprofSeconds = 10
	}
	if c.PprofDir != "" {
		if err := os.MkdirAll(c.PprofDir, 0o755); err != nil {
			return fmt.Errorf("-pprof: %w", err)
		}
	}
	if c.RateBurst < 1 {
		c.RateBurst = 1
	}
	if len(c.SweepServers) == 0 {
		c.SweepServers = []int{1, 2, 4}
	}
	if len(c.HorizontalProcs) == 0 {
		c.HorizontalProcs = []int{1, 2, 4}
	}
	if c.HorizontalRate < 1 {
		c.HorizontalRate = 2000
	}
	if len(c.Concurrencies) == 0 {
		c.Concurrencies = []int{50, 500, 2000}
	}
	c.DrainSeconds, c.CPURate, c.ConcurrencyReps = cmp.Or(c.DrainSeconds, 10), cmp.Or(c.CPURate, 3500), cmp.Or(c.ConcurrencyReps, 1)
	if c.Progress == nil {
		c.Progress = io.Discard
	}
	if c.Baseline.Path == "" {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		c.Baseline = Command{Path: exe, Args: []string{"baseline-worker"}}
	}
	return nil
}

// bencher holds what the runs share.
type bencher struct {
	cfg   Config
	dir   string
	bins  binaries
	rdb   *redis.Client
	insp  *asynq.Inspector
	seq   int
	files map[int]string // job files by row count
}

// Run runs the bench cfg asks for and returns its report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	dir := cfg.WorkDir
	if dir == "" {
		d, err := os.MkdirTemp("", "activator-bench-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(d)
		dir = d
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	b := &bencher{cfg: cfg, dir: dir, files: map[int]string{}}
	b.logf("building worker, versori-standin and enqueue")
	bins, source, err := buildBinaries(ctx, dir, cfg.ModuleDir, cfg.GitRef)
	if err != nil {
		return nil, err
	}
	b.logf("built from %s", source)
	b.bins = bins
	b.rdb = redis.NewClient(&redis.Options{Addr: cfg.RedisAddr, DB: cfg.RedisDB})
	defer b.rdb.Close()
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("redis %s: %w", cfg.RedisAddr, err)
	}
	if !cfg.Claimed {
		release, err := claimDB(ctx, cfg.RedisAddr, cfg.RedisDB, b.logf)
		if err != nil {
			return nil, err
		}
		defer release()
	}
	b.insp = asynq.NewInspectorFromRedisClient(b.rdb)
	defer b.rdb.FlushDB(context.WithoutCancel(ctx)) // runs before release: deferred calls run last first

	rep := &Report{CommandLine: cfg.CommandLine, Source: source, Machine: machine(ctx, b.rdb), Profile: profileOf(cfg)}
	if cfg.Mode == ModeCompare || cfg.Mode == ModeAll {
		if rep.Compare, err = b.compare(ctx); err != nil {
			return rep, err
		}
		if cfg.AccountJobs > 0 {
			if rep.Accounting, err = b.account(ctx); err != nil {
				return rep, err
			}
		}
	}
	if cfg.Mode == ModeServers || cfg.Mode == ModeAll {
		if rep.Servers, err = b.sweep(ctx); err != nil {
			return rep, err
		}
	}
	if cfg.Mode == ModeHorizontal || cfg.Mode == ModeAll {
		if rep.Horizontal, err = b.horizontal(ctx); err != nil {
			return rep, err
		}
	}
	if cfg.Mode == ModeConcurrency {
		if rep.Concurrency, err = b.concurrency(ctx); err != nil {
			return rep, err
		}
	}
	if cfg.Mode == ModeRateLimit {
		if rep.RateLimit, err = b.rateLimit(ctx); err != nil {
			return rep, err
		}
	}
	if (cfg.Mode == ModeCompare || cfg.Mode == ModeEnqueue || cfg.Mode == ModeAll) && cfg.EnqueueRows > 0 {
		if rep.Enqueue, err = b.enqueue(ctx); err != nil {
			return rep, err
		}
	}
	if cfg.Mode == ModeLatency {
		if rep.Latency, err = b.latency(ctx); err != nil {
			return rep, err
		}
	}
	rep.Machine.LoadAfter = loadAvg()
	return rep, nil
}

func (b *bencher) logf(format string, args ...any) {
	fmt.Fprintf(b.cfg.Progress, "bench: "+format+"\n", args...)
}

// jobsFile returns a JSONL file of n activation requests, the shape `enqueue file` takes: one
// existing connection and a dynamic variable each, user ids user-0000000... .
func (b *bencher) jobsFile(n int) (string, error) {
	if p, ok := b.files[n]; ok {
		return p, nil
	}
	p := filepath.Join(b.dir, fmt.Sprintf("jobs-%d.jsonl", n))
	if err := writeJobsFile(p, n); err != nil {
		return "", err
	}
	b.files[n] = p
	return p, nil
}

func writeJobsFile(path string, n int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	for i := range n {
		fmt.Fprintf(w, `{"userId":"user-%07d","integrationId":"01JDCRM0000000000000000000","connections":[{"templateId":"01JDCRMTP10000000000000000","connectionId":"01JDC0NN000000000000000000"}],"dynamicVariables":{"region":"eu"}}`+"\n", i)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// runSpec is one drain of a queue of jobs.
type runSpec struct {
	side                 string
	jobs                 int
	procs, servers       int
	rateLimit, rateBurst int
	calls                bool // read the stand-in's calls for the busiest second
	monitor              bool // untimed accounting pass: MONITOR instead of polling
}

// Drain is one drain of the queue by one side.
type Drain struct {
	Side               string  `json:"side"`
	Rep                int     `json:"rep,omitempty"`
	Order              int     `json:"order,omitempty"` // 1: ran first in its repetition
	Procs              int     `json:"procs"`
	Servers            int     `json:"servers"`
	Jobs               int     `json:"jobs"`
	ElapsedSec         float64 `json:"elapsedSec"`
	JobsPerSec         float64 `json:"jobsPerSec"`
	Completed          int     `json:"completed"`
	Archived           int     `json:"archived"`
	APICalls           int     `json:"apiCalls"`
	Activations        int     `json:"activations"`
	Duplicates         int     `json:"duplicates"`
	CallsPerActivation float64 `json:"callsPerActivation"`
	MaxCallsIn1s       int     `json:"maxCallsIn1s,omitempty"`
	// FirstCallSec is the time from the first worker's start to the API's first call: the side's
	// start-up, which the drain's jobs/s includes.
	FirstCallSec float64 `json:"firstCallSec"`
	// SteadyJobsPerSec is the API calls per second between the call that completes 10% of the drain
	// and the one that completes 90% of it: the drain's rate without start-up, the final poll and
	// the ramps at either end.
	SteadyJobsPerSec   float64            `json:"steadyJobsPerSec"`
	Polls              int                `json:"polls"`
	RedisCmdsPerJob    float64            `json:"redisCmdsPerJob"`
	PeakRSSKB          int64              `json:"peakRSSKB"`              // the largest of the side's processes
	WorkerCPUSec       float64            `json:"workerCPUSec"`           // user+system, all the side's processes
	CPUPerJobUS        float64            `json:"cpuPerJobMicros"`        // WorkerCPUSec per job
	RedisCPUPerJobUS   float64            `json:"redisCpuPerJobMicros"`   // Redis server CPU (INFO cpu) per job
	StandinCPUPerJobUS float64            `json:"standinCpuPerJobMicros"` // the stand-in's CPU per job
	Metrics            map[string]float64 `json:"metrics,omitempty"`
	Load               string             `json:"load"`
	// OtherCores is the CPU that processes other than this run's (workers, stand-in, Redis, the bench)
	// used on average while it ran, in cores: other engineers' tests, say. Near 0 is a clean run.
	OtherCores float64 `json:"otherCores"`
	Problem    string  `json:"problem,omitempty"`

	callTimes []time.Time // when the API saw each call, if the run asked for calls

	cmds   cmdCounts // commandstats delta, poller removed
	client cmdCounts // MONITOR pass only
	script cmdCounts
}

// run drains one queue of s.jobs with s.procs worker processes of one side, and measures it.
func (b *bencher) run(ctx context.Context, s runSpec) (Drain, error) {
	b.seq++
	d := &drain{b: b, s: s, name: fmt.Sprintf("%03d-%s", b.seq, s.side),
		r: Drain{Side: s.side, Procs: s.procs, Servers: s.servers, Jobs: s.jobs, Load: loadAvg()}}
	defer d.cleanup()
	steps := []func(context.Context) error{d.prepare, d.startWorkers, d.wait, d.stopWorkers, d.redisFigures, d.standinFigures}
	for _, step := range steps {
		if err := step(ctx); err != nil {
			return d.r, err
		}
	}
	return d.r, nil
}

// drain is one run's state: what it started, and the counters read before it, which its figures
// are measured against.
type drain struct {
	b    *bencher
	s    runSpec
	name string
	r    Drain

	sin          *standin
	procs        []*proc
	metricsAddrs []string
	pprofAddrs   []string // where each process serves its profiler: activator's ADMIN_ADDR, the baseline's -pprof-addr
	perfs        []*proc
	profiles     sync.WaitGroup
	profErrs     []error
	mon          *monitor

	start         time.Time
	pollFull      map[string]float64
	before        cmdCounts
	busy0         time.Duration
	busyOK        bool
	redis0, self0 time.Duration
	t0            time.Time

	// Read when the workers have stopped, for OtherCores once the stand-in's CPU is known too.
	busy1               time.Duration
	busyOK1             bool
	redisUsed, selfUsed time.Duration
	window              time.Duration
}

// prepare empties the database, enqueues the jobs and starts the stand-in, then reads the
// counters the run is measured against.
func (d *drain) prepare(ctx context.Context) error {
	b, s := d.b, d.s
	if err := b.rdb.FlushDB(ctx).Err(); err != nil {
		return err
	}
	file, err := b.jobsFile(s.jobs)
	if err != nil {
		return err
	}
	// A new producer each time: asynq's client remembers which queues it registered, and the flush
	// just removed the registration.
	prod := producer.New(b.rdb, producer.Config{Queue: queue})
	sum, err := prod.EnqueueFile(ctx, producer.FileOptions{Path: file, Batch: "bench"})
	if err != nil || sum.Enqueued != s.jobs {
		return fmt.Errorf("enqueueing %d jobs: %+v %v", s.jobs, sum, err)
	}
	if d.sin, err = startStandin(b.bins.standin, b.dir, d.name+"-standin", b.cfg.Latency); err != nil {
		return err
	}
	if !s.monitor {
		if d.pollFull, err = b.pollCost(ctx); err != nil {
			return err
		}
	}
	if d.before, err = commandStats(ctx, b.rdb); err != nil {
		return err
	}
	d.busy0, d.busyOK = machineBusy()
	d.redis0, d.self0, d.t0 = redisCPU(ctx, b.rdb), selfCPU(), time.Now()
	if s.monitor {
		if d.mon, err = startMonitor(b.cfg.RedisAddr, b.cfg.RedisDB); err != nil {
			return err
		}
	}
	return nil
}

// startWorkers starts the run's worker processes, and perf or pprof on them when asked.
func (d *drain) startWorkers(ctx context.Context) error {
	b, s := d.b, d.s
	d.start = time.Now()
	for i := range s.procs {
		p, maddr, paddr, err := b.startWorker(d.name, i, s, d.sin.url)
		if err != nil {
			return err
		}
		d.procs = append(d.procs, p)
		d.metricsAddrs = append(d.metricsAddrs, maddr)
		d.pprofAddrs = append(d.pprofAddrs, paddr)
	}
	if b.cfg.PerfDir != "" {
		for _, p := range d.procs {
			out := filepath.Join(b.cfg.PerfDir, p.name+".perf.data")
			pp, err := startProc(b.dir, p.name+"-perf", nil, "perf", "record", "-F", "499", "-g",
				"-p", strconv.Itoa(p.cmd.Process.Pid), "-o", out)
			if err != nil {
				return err
			}
			d.perfs = append(d.perfs, pp)
		}
	}
	d.profErrs = make([]error, len(d.procs))
	if b.cfg.PprofDir != "" {
		for i, p := range d.procs {
			d.profiles.Go(func() {
				d.profErrs[i] = fetchCPUProfile(ctx, d.pprofAddrs[i], b.cfg.PprofSeconds,
					filepath.Join(b.cfg.PprofDir, p.name+".cpu.pprof"))
			})
		}
	}
	return nil
}

// wait waits for the queue to drain (or, under MONITOR, for every activation), then scrapes the
// workers' metrics.
func (d *drain) wait(ctx context.Context) error {
	b, s, r := d.b, d.s, &d.r
	var err error
	if s.monitor {
		err = waitActivations(ctx, d.sin, d.procs, s.jobs, b.timeout(s))
		time.Sleep(time.Second) // results, completions and batch counts land after the API call
	} else {
		var elapsed time.Duration
		elapsed, r.Polls, err = b.waitDrained(ctx, d.procs, d.start, b.timeout(s))
		r.ElapsedSec = elapsed.Seconds()
		r.JobsPerSec = float64(s.jobs) / elapsed.Seconds()
	}
	if err != nil {
		return err
	}
	if s.side != SideActivator || d.metricsAddrs[0] == "" {
		return nil
	}
	r.Metrics = map[string]float64{}
	for _, a := range d.metricsAddrs {
		m, err := scrapeMetrics(a, "activator_")
		if err != nil {
			return fmt.Errorf("scraping %s: %w", a, err)
		}
		for k, v := range m {
			if !strings.Contains(k, "_bucket") && !strings.HasSuffix(k, "_sum") {
				r.Metrics[k] += v
			}
		}
	}
	return nil
}

// stopWorkers ends the profilers and the workers, and reads the workers' CPU and peak RSS.
func (d *drain) stopWorkers(ctx context.Context) error {
	b, r := d.b, &d.r
	for _, pp := range d.perfs {
		_ = pp.cmd.Process.Signal(os.Interrupt)
		<-pp.done
	}
	if b.cfg.PprofDir != "" {
		d.profiles.Wait()
		for i, p := range d.procs {
			d.profErrs = append(d.profErrs, fetchProfile(ctx, "http://"+d.pprofAddrs[i]+"/debug/pprof/allocs",
				filepath.Join(b.cfg.PprofDir, p.name+".allocs.pprof")))
		}
		if err := errors.Join(d.profErrs...); err != nil {
			return err
		}
	}
	for _, p := range d.procs {
		if err := p.stop(30 * time.Second); err != nil {
			return err
		}
		r.PeakRSSKB = max(r.PeakRSSKB, p.maxRSSKB())
		ps := p.cmd.ProcessState
		r.WorkerCPUSec += (ps.UserTime() + ps.SystemTime()).Seconds()
	}
	r.CPUPerJobUS = r.WorkerCPUSec / float64(d.s.jobs) * 1e6
	d.procs = nil
	return nil
}

// redisFigures reads what the run cost Redis: commands per job, less the polls an idle queue would
// have cost too, and whether the queue drained to completed.
func (d *drain) redisFigures(ctx context.Context) error {
	b, s, r := d.b, d.s, &d.r
	after, err := commandStats(ctx, b.rdb)
	if err != nil {
		return err
	}
	d.busy1, d.busyOK1 = machineBusy()
	d.redisUsed, d.selfUsed, d.window = redisCPU(ctx, b.rdb)-d.redis0, selfCPU()-d.self0, time.Since(d.t0)
	if s.monitor {
		if r.client, r.script, err = d.mon.stop(ctx, b.rdb); err != nil {
			return err
		}
	}
	info, err := b.insp.GetQueueInfo(queue)
	if err != nil {
		return err
	}
	r.Completed, r.Archived = info.Completed, info.Archived
	if left := info.Pending + info.Active + info.Scheduled + info.Retry; left > 0 || info.Completed != s.jobs {
		r.Problem = fmt.Sprintf("queue not drained to completed: %d completed, %d archived, %d left", info.Completed, info.Archived, left)
	}
	delta := after.sub(d.before)
	delta["info"]-- // the bench's own INFO before the run
	if !s.monitor {
		pollDrained, err := b.pollCost(ctx)
		if err != nil {
			return err
		}
		for k := range mergeKeys(d.pollFull, pollDrained) {
			// A poll's cost depends on what the queue holds; the run sits between full and drained.
			delta[k] -= int64((d.pollFull[k] + pollDrained[k]) / 2 * float64(r.Polls))
		}
	}
	for k, v := range delta {
		if v <= 0 {
			delete(delta, k)
		}
	}
	r.cmds = delta
	r.RedisCmdsPerJob = float64(delta.total()) / float64(s.jobs)
	r.RedisCPUPerJobUS = d.redisUsed.Seconds() / float64(s.jobs) * 1e6
	return nil
}

// standinFigures reads what the API saw: calls, activations, duplicates and the call rate.
func (d *drain) standinFigures(context.Context) error {
	s, r := d.s, &d.r
	st, err := d.sin.stats()
	if err != nil {
		return err
	}
	r.APICalls, r.Activations, r.Duplicates = st.Calls, st.Activations, st.Duplicates
	if st.Activations > 0 {
		r.CallsPerActivation = float64(st.Calls) / float64(st.Activations)
	}
	calls, err := d.sin.calls()
	if err != nil {
		return err
	}
	if s.calls {
		r.MaxCallsIn1s = busiestSecond(calls)
		r.callTimes = make([]time.Time, len(calls))
		for i, c := range calls {
			r.callTimes[i] = c.At
		}
	}
	if len(calls) > 1 {
		slices.SortFunc(calls, func(a, b standinCall) int { return a.At.Compare(b.At) })
		r.FirstCallSec = calls[0].At.Sub(d.start).Seconds()
		r.SteadyJobsPerSec = steadyRate(calls)
	}
	if err := d.sin.stop(15 * time.Second); err != nil {
		return err
	}
	var standinUsed time.Duration
	if ps := d.sin.cmd.ProcessState; ps != nil {
		standinUsed = ps.UserTime() + ps.SystemTime()
	}
	r.StandinCPUPerJobUS = standinUsed.Seconds() / float64(s.jobs) * 1e6
	if d.busyOK && d.busyOK1 {
		ours := time.Duration(r.WorkerCPUSec*float64(time.Second)) + d.redisUsed + d.selfUsed + standinUsed
		r.OtherCores = (d.busy1 - d.busy0 - ours).Seconds() / d.window.Seconds()
	}
	if r.Problem == "" && (st.Activations != s.jobs || st.Duplicates != 0) {
		r.Problem = fmt.Sprintf("the API holds %d activations (%d pairs duplicated) for %d jobs", st.Activations, st.Duplicates, s.jobs)
	}
	return nil
}

// cleanup stops whatever a failed run left running.
func (d *drain) cleanup() {
	for _, p := range d.procs {
		_ = p.stop(30 * time.Second)
	}
	if d.sin != nil {
		_ = d.sin.stop(15 * time.Second)
	}
}

func mergeKeys(ms ...map[string]float64) map[string]bool {
	out := map[string]bool{}
	for _, m := range ms {
		for k := range m {
			out[k] = true
		}
	}
	return out
}

// timeout bounds one drain: generous against the ideal time concurrency and latency allow.
func (b *bencher) timeout(s runSpec) time.Duration {
	lat := max(b.cfg.Latency, time.Millisecond)
	ideal := time.Duration(s.jobs) * lat / time.Duration(b.cfg.Concurrency*max(s.servers, 1)*s.procs)
	if s.rateLimit > 0 {
		ideal = max(ideal, time.Duration(s.jobs)*time.Second/time.Duration(s.rateLimit))
	}
	return 2*time.Minute + 10*ideal
}

// startWorker starts process i of a run's side and returns it with its metrics address and its
// profiler's address, if any.
func (b *bencher) startWorker(name string, i int, s runSpec, target string) (p *proc, maddr, paddr string, err error) {
	pname := fmt.Sprintf("%s-%d", name, i)
	if s.side == SideBaseline {
		args := append(slices.Clone(b.cfg.Baseline.Args),
			"-redis-addr", b.cfg.RedisAddr, "-redis-db", strconv.Itoa(b.cfg.RedisDB), "-queue", queue,
			"-concurrency", strconv.Itoa(b.cfg.Concurrency), "-servers", strconv.Itoa(max(s.servers, 1)),
			"-target", target, "-api-key", versoritest.DefaultAPIKey)
		if b.cfg.PprofDir != "" {
			if paddr, err = freeAddr(); err != nil {
				return nil, "", "", err
			}
			args = append(args, "-pprof-addr", paddr)
		}
		p, err := startProc(b.dir, pname, b.cfg.Baseline.Env, b.cfg.Baseline.Path, args...)
		return p, "", paddr, err
	}
	if maddr, err = freeAddr(); err != nil {
		return nil, "", "", err
	}
	if paddr, err = freeAddr(); err != nil {
		return nil, "", "", err
	}
	env := []string{
		"REDIS_URL=redis://" + b.cfg.RedisAddr + "/" + strconv.Itoa(b.cfg.RedisDB),
		"VERSORI_BASE_URL=" + target,
		"VERSORI_API_KEY=" + versoritest.DefaultAPIKey,
		"VERSORI_HUB_ID=" + versoritest.DefaultHubID,
		"VERSORI_SIGNING_KEY_ID=", "VERSORI_SIGNING_KEY_FILE=",
		// WORKER_CONCURRENCY is the process total, shared out among its servers: the same per-server
		// concurrency as the baseline's. Servers 0 leaves the count to the worker's default.
		"WORKER_CONCURRENCY=" + strconv.Itoa(b.cfg.Concurrency*max(s.servers, 1)),
		"WORKER_SERVERS=" + strconv.Itoa(s.servers),
		"QUEUE=" + queue,
		"METRICS_ADDR=" + maddr,
		"ADMIN_ADDR=" + paddr, // opened only with PPROF
		"QUEUE_METRICS=" + strconv.FormatBool(b.cfg.QueueMetrics),
		"VERSORI_RATE_LIMIT=" + strconv.Itoa(s.rateLimit),
		"VERSORI_RATE_BURST=" + strconv.Itoa(s.rateBurst),
		"LOG_LEVEL=info",
		"ADMIN_UI=false",
		"PPROF=" + strconv.FormatBool(b.cfg.PprofDir != ""),
	}
	env = append(env, b.cfg.WorkerEnv...)
	p, err = startProc(b.dir, pname, env, b.bins.worker)
	if b.cfg.PprofDir == "" {
		paddr = ""
	}
	return p, maddr, paddr, err
}

// waitDrained polls the queue with the inspector every Poll until nothing is pending, active,
// scheduled or retrying, and returns the time since start and the number of polls.
func (b *bencher) waitDrained(ctx context.Context, procs []*proc, start time.Time, timeout time.Duration) (time.Duration, int, error) {
	t := time.NewTicker(b.cfg.Poll)
	defer t.Stop()
	deadline := start.Add(timeout)
	polls := 0
	for {
		info, err := b.insp.GetQueueInfo(queue)
		polls++
		if err == nil && info.Pending+info.Active+info.Scheduled+info.Retry+info.Aggregating == 0 {
			return time.Since(start), polls, nil
		}
		for _, p := range procs {
			if p.exited() {
				return 0, polls, fmt.Errorf("%s exited before the queue drained: %v", p.name, p.exitErr())
			}
		}
		if time.Now().After(deadline) {
			return 0, polls, fmt.Errorf("queue not drained after %s: %+v %v", timeout, info, err)
		}
		select {
		case <-ctx.Done():
			return 0, polls, ctx.Err()
		case <-t.C:
		}
	}
}

// waitActivations waits, without touching Redis, until the API holds n activations.
func waitActivations(ctx context.Context, sin *standin, procs []*proc, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		st, err := sin.stats()
		if err == nil && st.Activations >= n {
			return nil
		}
		for _, p := range procs {
			if p.exited() {
				return fmt.Errorf("%s exited early: %v", p.name, p.exitErr())
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d activations after %s, want %d", st.Activations, timeout, n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// pollCost measures what one GetQueueInfo costs in commands, per command, on the queue as it is.
func (b *bencher) pollCost(ctx context.Context) (map[string]float64, error) {
	const k = 10
	before, err := commandStats(ctx, b.rdb)
	if err != nil {
		return nil, err
	}
	for range k {
		if _, err := b.insp.GetQueueInfo(queue); err != nil {
			return nil, err
		}
	}
	after, err := commandStats(ctx, b.rdb)
	if err != nil {
		return nil, err
	}
	d := after.sub(before)
	d["info"]--
	out := map[string]float64{}
	for c, v := range d {
		if v > 0 {
			out[c] = float64(v) / k
		}
	}
	return out, nil
}

// busiestSecond is the most calls in any one-second window.
func busiestSecond(calls []standinCall) int {
	ts := make([]time.Time, len(calls))
	for i, c := range calls {
		ts[i] = c.At
	}
	return window.Max(ts, time.Second)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// Machine describes where the bench ran.
type Machine struct {
	NProc        int    `json:"nproc"`
	CPU          string `json:"cpu"`
	GoVersion    string `json:"goVersion"`
	RedisVersion string `json:"redisVersion"`
	LoadBefore   string `json:"loadBefore"`
	LoadAfter    string `json:"loadAfter"`
}

func machine(ctx context.Context, rdb *redis.Client) Machine {
	m := Machine{NProc: runtime.NumCPU(), GoVersion: runtime.Version(), LoadBefore: loadAvg(), CPU: "unknown"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if s, err := rdb.Info(ctx, "server").Result(); err == nil {
		for line := range strings.SplitSeq(s, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
				m.RedisVersion = v
			}
		}
	}
	return m
}

// loadAvg is the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// claimDB claims db the way the test suite does, waiting up to five minutes while a test holds it,
// and keeps the claim fresh until release is called.
func claimDB(ctx context.Context, addr string, db int, logf func(string, ...any)) (release func(), err error) {
	admin := redis.NewClient(&redis.Options{Addr: addr, DB: 0})
	owner := fmt.Sprintf("bench:%d:%d", os.Getpid(), time.Now().UnixNano())
	const ttl = 2 * time.Minute
	deadline := time.Now().Add(5 * time.Minute)
	for logged := false; ; {
		ok, err := admin.SetNX(ctx, rediskeys.TestClaim(db), owner, ttl).Result()
		if err != nil {
			admin.Close()
			return nil, fmt.Errorf("claiming redis db %d: %w", db, err)
		}
		if ok {
			break
		}
		if time.Now().After(deadline) {
			admin.Close()
			return nil, fmt.Errorf("redis db %d is claimed by a test (%s) for 5 minutes: pick another -redis-db", db, rediskeys.TestClaim(db))
		}
		if !logged {
			logf("redis db %d is in use by a test; waiting for it", db)
			logged = true
		}
		select {
		case <-ctx.Done():
			admin.Close()
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(ttl / 4)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				admin.Expire(context.Background(), rediskeys.TestClaim(db), ttl)
			}
		}
	}()
	return func() {
		close(stop)
		<-done
		if v, _ := admin.Get(context.Background(), rediskeys.TestClaim(db)).Result(); v == owner {
			admin.Del(context.Background(), rediskeys.TestClaim(db))
		}
		admin.Close()
	}, nil
}

// fetchCPUProfile saves a CPU profile of seconds from the worker serving pprof on maddr, starting
// one second after the call, when the worker is past its start.
func fetchCPUProfile(ctx context.Context, maddr string, seconds int, path string) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Second):
	}
	return fetchProfile(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", maddr, seconds), path)
}

// fetchProfile saves the pprof profile served at url into path.
func fetchProfile(ctx context.Context, url, path string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("pprof: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof: GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return fmt.Errorf("pprof: saving %s: %w", path, err)
	}
	return f.Close()
}

// steadyRate is the calls per second between the call at 10% of calls and the one at 90% (calls
// sorted by time), or between the first and the last when there are too few for that.
func steadyRate(calls []standinCall) float64 {
	lo, hi := len(calls)/10, len(calls)*9/10
	if hi <= lo {
		lo, hi = 0, len(calls)-1
	}
	if d := calls[hi].At.Sub(calls[lo].At).Seconds(); d > 0 {
		return float64(hi-lo) / d
	}
	return 0
}
