package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"time"
)

// Side sums up one side's runs.
type Side struct {
	JobsPerSec         []float64  `json:"jobsPerSec"`
	MedianJobsPerSec   float64    `json:"medianJobsPerSec"`
	CallsPerActivation float64    `json:"callsPerActivation"`     // median
	RedisCmdsPerJob    float64    `json:"redisCmdsPerJob"`        // median
	TopCommands        []CmdShare `json:"topCommands"`            // over all runs
	PeakRSSKB          int64      `json:"peakRSSKB"`              // largest
	CPUPerJobUS        float64    `json:"cpuPerJobMicros"`        // median, worker process user+system
	RedisCPUPerJobUS   float64    `json:"redisCpuPerJobMicros"`   // median, Redis server
	StandinCPUPerJobUS float64    `json:"standinCpuPerJobMicros"` // median, the stand-in
}

func sideOf(runs []Drain, side string) Side {
	var s Side
	var calls, cmds, cpu, rcpu, scpu []float64
	byCmd := map[string][]float64{} // per-job counts of each command, one per run
	n := 0
	for _, r := range runs {
		if r.Side != side {
			continue
		}
		s.JobsPerSec = append(s.JobsPerSec, r.JobsPerSec)
		calls = append(calls, r.CallsPerActivation)
		cmds = append(cmds, r.RedisCmdsPerJob)
		cpu = append(cpu, r.CPUPerJobUS)
		rcpu = append(rcpu, r.RedisCPUPerJobUS)
		scpu = append(scpu, r.StandinCPUPerJobUS)
		for c, v := range r.cmds {
			for len(byCmd[c]) < n {
				byCmd[c] = append(byCmd[c], 0)
			}
			byCmd[c] = append(byCmd[c], float64(v)/float64(r.Jobs))
		}
		n++
		s.PeakRSSKB = max(s.PeakRSSKB, r.PeakRSSKB)
	}
	s.MedianJobsPerSec, s.CallsPerActivation, s.RedisCmdsPerJob = median(s.JobsPerSec), median(calls), median(cmds)
	s.CPUPerJobUS, s.RedisCPUPerJobUS, s.StandinCPUPerJobUS = median(cpu), median(rcpu), median(scpu)
	// The median of each command over the runs: INFO commandstats counts the whole server, and a
	// test run by someone else during one repetition would otherwise show in the list.
	for c, vs := range byCmd {
		for len(vs) < n {
			vs = append(vs, 0)
		}
		if m := median(vs); m > 0 {
			s.TopCommands = append(s.TopCommands, CmdShare{Command: c, PerJob: m})
		}
	}
	sort.Slice(s.TopCommands, func(i, j int) bool {
		a, b := s.TopCommands[i], s.TopCommands[j]
		return a.PerJob > b.PerJob || a.PerJob == b.PerJob && a.Command < b.Command
	})
	return s
}

// Compare is the baseline against activator.
type Compare struct {
	Runs      []Drain   `json:"runs"`
	Baseline  Side      `json:"baseline"`
	Activator Side      `json:"activator"`
	Ratios    []float64 `json:"ratios"` // activator/baseline per repetition
	Ratio     float64   `json:"ratio"`  // median of Ratios
	// SteadyRatios are activator/baseline of the steady rates (Drain.SteadyJobsPerSec) per
	// repetition; SteadyRatio is their median.
	SteadyRatios []float64 `json:"steadyRatios"`
	SteadyRatio  float64   `json:"steadyRatio"`
	// Ceiling is concurrency × servers / latency, the most jobs/s the latency allows (0 at latency 0);
	// CeilingShare is activator's median over it.
	Ceiling      float64 `json:"ceiling,omitempty"`
	CeilingShare float64 `json:"ceilingShare,omitempty"`
}

func (b *bencher) compare(ctx context.Context) (*Compare, error) {
	c := &Compare{}
	for rep := 1; rep <= b.cfg.Reps; rep++ {
		order := []string{SideBaseline, SideActivator}
		if rep%2 == 0 {
			order = []string{SideActivator, SideBaseline}
		}
		var jps, steady [2]float64
		for i, side := range order {
			r, err := b.run(ctx, runSpec{side: side, jobs: b.cfg.Jobs, procs: 1, servers: b.cfg.Servers,
				rateLimit: b.cfg.RateLimit, rateBurst: b.cfg.RateBurst})
			r.Rep, r.Order = rep, i+1
			if err != nil {
				return c, fmt.Errorf("rep %d %s: %w", rep, side, err)
			}
			b.logf("rep %d/%d %-9s %8.0f jobs/s  %.2fs  first call %.0f ms  steady %.0f/s  calls/activation %.3f  redis cmds/job %.2f  cpu %.0f µs/job  rss %d MiB  load %s  other cores %.2f %s",
				rep, b.cfg.Reps, side, r.JobsPerSec, r.ElapsedSec, r.FirstCallSec*1000, r.SteadyJobsPerSec, r.CallsPerActivation, r.RedisCmdsPerJob, r.CPUPerJobUS, r.PeakRSSKB/1024, r.Load, r.OtherCores, r.Problem)
			c.Runs = append(c.Runs, r)
			k := 0
			if side == SideActivator {
				k = 1
			}
			jps[k], steady[k] = r.JobsPerSec, r.SteadyJobsPerSec
		}
		c.Ratios = append(c.Ratios, jps[1]/jps[0])
		if steady[0] > 0 {
			c.SteadyRatios = append(c.SteadyRatios, steady[1]/steady[0])
		}
	}
	c.Baseline, c.Activator = sideOf(c.Runs, SideBaseline), sideOf(c.Runs, SideActivator)
	c.Ratio, c.SteadyRatio = median(c.Ratios), median(c.SteadyRatios)
	if b.cfg.Latency > 0 {
		c.Ceiling = float64(b.cfg.Concurrency*max(b.cfg.Servers, 1)) / b.cfg.Latency.Seconds()
		c.CeilingShare = c.Activator.MedianJobsPerSec / c.Ceiling
	}
	return c, nil
}

// Accounting is the exact command count of one untimed drain per side, from MONITOR filtered to the
// bench's database: what clients sent, and what scripts ran.
type Accounting struct {
	Jobs      int         `json:"jobs"`
	Baseline  AccountSide `json:"baseline"`
	Activator AccountSide `json:"activator"`
}

// AccountSide is one side's commands per job.
type AccountSide struct {
	ClientPerJob float64    `json:"clientPerJob"` // sent by the worker's clients (pipelined ones included)
	ScriptPerJob float64    `json:"scriptPerJob"` // run inside the Lua scripts those sent
	Client       []CmdShare `json:"client"`
	Script       []CmdShare `json:"script"`
	Problem      string     `json:"problem,omitempty"`
}

func (b *bencher) account(ctx context.Context) (*Accounting, error) {
	a := &Accounting{Jobs: b.cfg.AccountJobs}
	for _, side := range []string{SideBaseline, SideActivator} {
		r, err := b.run(ctx, runSpec{side: side, jobs: a.Jobs, procs: 1, servers: b.cfg.Servers,
			rateLimit: b.cfg.RateLimit, rateBurst: b.cfg.RateBurst, monitor: true})
		if err != nil {
			return a, fmt.Errorf("accounting %s: %w", side, err)
		}
		as := AccountSide{
			ClientPerJob: float64(r.client.total()) / float64(a.Jobs),
			ScriptPerJob: float64(r.script.total()) / float64(a.Jobs),
			Client:       perJob(r.client, a.Jobs), Script: perJob(r.script, a.Jobs), Problem: r.Problem,
		}
		b.logf("accounting %-9s %d jobs: %.2f client commands/job, %.2f in scripts %s", side, a.Jobs, as.ClientPerJob, as.ScriptPerJob, r.Problem)
		if side == SideBaseline {
			a.Baseline = as
		} else {
			a.Activator = as
		}
	}
	return a, nil
}

// Sweep is activator's throughput against WORKER_SERVERS.
type Sweep struct {
	Points []SweepPoint `json:"points"`
	// StopsHelpingAfter is the server count after which one more step gained under 10% (0: every step
	// helped).
	StopsHelpingAfter int `json:"stopsHelpingAfter"`
}

// SweepPoint is one server count.
type SweepPoint struct {
	Servers          int     `json:"servers"`
	Runs             []Drain `json:"runs"`
	MedianJobsPerSec float64 `json:"medianJobsPerSec"`
	RedisCmdsPerJob  float64 `json:"redisCmdsPerJob"`
	PeakRSSKB        int64   `json:"peakRSSKB"`
	CPUPerJobUS      float64 `json:"cpuPerJobMicros"`
}

func (b *bencher) sweep(ctx context.Context) (*Sweep, error) {
	sw := &Sweep{}
	for _, n := range b.cfg.SweepServers {
		p := SweepPoint{Servers: n}
		var jps, cmds, cpu []float64
		for rep := 1; rep <= b.cfg.Reps; rep++ {
			r, err := b.run(ctx, runSpec{side: SideActivator, jobs: b.cfg.Jobs, procs: 1, servers: n,
				rateLimit: b.cfg.RateLimit, rateBurst: b.cfg.RateBurst})
			r.Rep = rep
			if err != nil {
				return sw, fmt.Errorf("servers %d: %w", n, err)
			}
			b.logf("servers %d rep %d/%d %8.0f jobs/s  load %s  other cores %.2f %s", n, rep, b.cfg.Reps, r.JobsPerSec, r.Load, r.OtherCores, r.Problem)
			p.Runs = append(p.Runs, r)
			jps = append(jps, r.JobsPerSec)
			cmds = append(cmds, r.RedisCmdsPerJob)
			cpu = append(cpu, r.CPUPerJobUS)
			p.PeakRSSKB = max(p.PeakRSSKB, r.PeakRSSKB)
		}
		p.MedianJobsPerSec, p.RedisCmdsPerJob, p.CPUPerJobUS = median(jps), median(cmds), median(cpu)
		sw.Points = append(sw.Points, p)
	}
	for i := 1; i < len(sw.Points); i++ {
		if sw.Points[i].MedianJobsPerSec < 1.10*sw.Points[i-1].MedianJobsPerSec {
			sw.StopsHelpingAfter = sw.Points[i-1].Servers
			break
		}
	}
	return sw, nil
}

// Horizontal is throughput against the number of worker processes sharing one global rate limit.
type Horizontal struct {
	RateLimit int               `json:"rateLimit"`
	Points    []HorizontalPoint `json:"points"`
}

// HorizontalPoint is one process count.
type HorizontalPoint struct {
	Procs            int     `json:"procs"`
	Runs             []Drain `json:"runs"`
	MedianJobsPerSec float64 `json:"medianJobsPerSec"`
	MaxCallsIn1s     int     `json:"maxCallsIn1s"` // over all runs
	WithinLimit      bool    `json:"withinLimit"`
	RedisCmdsPerJob  float64 `json:"redisCmdsPerJob"` // median, INFO commandstats
	RateLimitWaits   float64 `json:"rateLimitWaits"`  // median, calls that waited for the limit, all processes
	PeakRSSKB        int64   `json:"peakRSSKB"`       // largest process
}

func (b *bencher) horizontal(ctx context.Context) (*Horizontal, error) {
	h := &Horizontal{RateLimit: b.cfg.HorizontalRate}
	for _, n := range b.cfg.HorizontalProcs {
		p := HorizontalPoint{Procs: n}
		var jps, cmds, waits []float64
		for rep := 1; rep <= b.cfg.Reps; rep++ {
			r, err := b.run(ctx, runSpec{side: SideActivator, jobs: b.cfg.Jobs, procs: n, servers: b.cfg.Servers,
				rateLimit: b.cfg.HorizontalRate, rateBurst: 1, calls: true})
			r.Rep = rep
			if err != nil {
				return h, fmt.Errorf("%d processes: %w", n, err)
			}
			b.logf("processes %d rep %d/%d %8.0f jobs/s  busiest second %d calls (limit %d)  load %s  other cores %.2f %s",
				n, rep, b.cfg.Reps, r.JobsPerSec, r.MaxCallsIn1s, h.RateLimit, r.Load, r.OtherCores, r.Problem)
			p.Runs = append(p.Runs, r)
			jps = append(jps, r.JobsPerSec)
			cmds = append(cmds, r.RedisCmdsPerJob)
			waits = append(waits, r.Metrics["activator_rate_limit_wait_seconds_count"])
			p.MaxCallsIn1s = max(p.MaxCallsIn1s, r.MaxCallsIn1s)
			p.PeakRSSKB = max(p.PeakRSSKB, r.PeakRSSKB)
		}
		p.MedianJobsPerSec, p.RedisCmdsPerJob, p.RateLimitWaits = median(jps), median(cmds), median(waits)
		p.WithinLimit = p.MaxCallsIn1s <= h.RateLimit
		h.Points = append(h.Points, p)
	}
	return h, nil
}

// Enqueue is `enqueue file` on a generated JSONL file, with the real binary.
type Enqueue struct {
	Runs []EnqueueRun `json:"runs"` // a tenth of the rows first (for the memory comparison), then all
}

// EnqueueRun is one `enqueue file`.
type EnqueueRun struct {
	Rows       int     `json:"rows"`
	Enqueued   int     `json:"enqueued"`
	RowsPerSec float64 `json:"rowsPerSec"` // as the command printed it
	ElapsedSec float64 `json:"elapsedSec"` // of the process
	PeakRSSKB  int64   `json:"peakRSSKB"`
	Load       string  `json:"load"`
}

var (
	enqueuedRe = regexp.MustCompile(`(?m)^enqueued: (\d+)$`)
	rateRe     = regexp.MustCompile(`(?m)^rate: ([0-9.]+) rows/s$`)
)

func (b *bencher) enqueue(ctx context.Context) (*Enqueue, error) {
	e := &Enqueue{}
	sizes := []int{b.cfg.EnqueueRows}
	if b.cfg.EnqueueRows >= 100_000 {
		sizes = []int{b.cfg.EnqueueRows / 10, b.cfg.EnqueueRows}
	}
	for _, n := range sizes {
		path := filepath.Join(b.dir, fmt.Sprintf("enqueue-%d.jsonl", n))
		if err := writeJobsFile(path, n); err != nil {
			return e, err
		}
		if err := b.rdb.FlushDB(ctx).Err(); err != nil {
			return e, err
		}
		r := EnqueueRun{Rows: n, Load: loadAvg()}
		start := time.Now()
		p, err := startProc(b.dir, fmt.Sprintf("enqueue-%d", n), []string{"REDIS_URL=redis://" + b.cfg.RedisAddr + "/" + strconv.Itoa(b.cfg.RedisDB)},
			b.bins.enqueue, "file", "--quiet", "--queue", queue, path)
		if err != nil {
			return e, err
		}
		select {
		case <-p.done:
		case <-ctx.Done():
			_ = p.cmd.Process.Kill()
			<-p.done
			return e, ctx.Err()
		}
		r.ElapsedSec = time.Since(start).Seconds()
		if err := p.exitErr(); err != nil {
			return e, fmt.Errorf("enqueue file: %w", err)
		}
		r.PeakRSSKB = p.maxRSSKB()
		out, err := os.ReadFile(p.log)
		if err != nil {
			return e, err
		}
		if m := enqueuedRe.FindSubmatch(out); m != nil {
			r.Enqueued, _ = strconv.Atoi(string(m[1]))
		}
		if m := rateRe.FindSubmatch(out); m != nil {
			r.RowsPerSec, _ = strconv.ParseFloat(string(m[1]), 64)
		}
		if r.Enqueued != n {
			return e, fmt.Errorf("enqueue file enqueued %d of %d rows:\n%s", r.Enqueued, n, out)
		}
		b.logf("enqueue file %d rows: %.0f rows/s, peak RSS %d MiB, load %s", n, r.RowsPerSec, r.PeakRSSKB/1024, r.Load)
		e.Runs = append(e.Runs, r)
	}
	if err := b.rdb.FlushDB(ctx).Err(); err != nil {
		return e, err
	}
	return e, nil
}
