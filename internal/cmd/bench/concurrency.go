package bench

import (
	"context"
	"fmt"
	"io"
	"math"
	"text/tabwriter"
	"time"
)

// ModeConcurrency drains the queue with the baseline and activator at each of Config.Concurrencies.
const ModeConcurrency = "concurrency"

// Concurrency is throughput, CPU, memory and Redis cost against the number of calls in flight, for
// both sides.
type Concurrency struct {
	Points []ConcurrencyPoint `json:"points"`
}

// ConcurrencyPoint is one concurrency: one drain per side and repetition.
type ConcurrencyPoint struct {
	Concurrency int `json:"concurrency"`
	Jobs        int `json:"jobs"`
	// Ceiling is concurrency / latency, the most jobs/s the latency allows (0 at latency 0).
	Ceiling   float64 `json:"ceiling,omitempty"`
	Runs      []Drain `json:"runs"`
	Baseline  Side    `json:"baseline"`
	Activator Side    `json:"activator"`
	Ratio     float64 `json:"ratio"` // activator's median jobs/s over the baseline's
}

// concurrencyJobs sizes a drain to last about seconds at the rate this concurrency can reach: the
// latency's ceiling, or cpuRate, what one process drains when the CPU is the limit, if lower.
func concurrencyJobs(concurrency int, latency time.Duration, cpuRate, seconds int) int {
	rate := float64(cpuRate)
	if latency > 0 {
		rate = min(rate, float64(concurrency)/latency.Seconds())
	}
	return max(int(math.Ceil(rate*float64(seconds))), 100)
}

func (b *bencher) concurrency(ctx context.Context) (*Concurrency, error) {
	out := &Concurrency{}
	saved := b.cfg.Concurrency
	defer func() { b.cfg.Concurrency = saved }()
	turn := 0
	for _, n := range b.cfg.Concurrencies {
		// startWorker and timeout read the concurrency from the bencher's config.
		b.cfg.Concurrency = n
		p := ConcurrencyPoint{Concurrency: n,
			Jobs: concurrencyJobs(n, b.cfg.Latency, b.cfg.CPURate, b.cfg.DrainSeconds)}
		if b.cfg.Latency > 0 {
			p.Ceiling = float64(n) / b.cfg.Latency.Seconds()
		}
		for rep := 1; rep <= b.cfg.ConcurrencyReps; rep++ {
			order := []string{SideBaseline, SideActivator}
			if turn%2 == 1 {
				order = []string{SideActivator, SideBaseline}
			}
			turn++
			for i, side := range order {
				// The baseline runs one asynq server, asynq's own default; activator its default
				// WORKER_SERVERS for the concurrency, unless -worker-env sets one.
				servers := 1
				if side == SideActivator {
					servers = 0
				}
				r, err := b.run(ctx, runSpec{side: side, jobs: p.Jobs, procs: 1, servers: servers,
					rateLimit: b.cfg.RateLimit, rateBurst: b.cfg.RateBurst})
				r.Rep, r.Order = rep, i+1
				if err != nil {
					return out, fmt.Errorf("concurrency %d %s: %w", n, side, err)
				}
				b.logf("concurrency %d rep %d/%d %-9s %d jobs %8.0f jobs/s  steady %.0f/s  cpu %.0f µs/job  redis %.0f µs/job  stand-in %.0f µs/job  rss %d MiB  redis cmds/job %.2f  other cores %.2f %s",
					n, rep, b.cfg.ConcurrencyReps, side, p.Jobs, r.JobsPerSec, r.SteadyJobsPerSec, r.CPUPerJobUS, r.RedisCPUPerJobUS, r.StandinCPUPerJobUS,
					r.PeakRSSKB/1024, r.RedisCmdsPerJob, r.OtherCores, r.Problem)
				p.Runs = append(p.Runs, r)
			}
		}
		p.Baseline, p.Activator = sideOf(p.Runs, SideBaseline), sideOf(p.Runs, SideActivator)
		if p.Baseline.MedianJobsPerSec > 0 {
			p.Ratio = p.Activator.MedianJobsPerSec / p.Baseline.MedianJobsPerSec
		}
		out.Points = append(out.Points, p)
	}
	return out, nil
}

// print writes the concurrency sweep as one table, a row per concurrency and side.
func (c *Concurrency) print(w io.Writer, latency string) {
	fmt.Fprintf(w, "\nconcurrency sweep at stand-in latency %s: one process per side; the baseline one asynq server of that concurrency, "+
		"activator WORKER_CONCURRENCY of it and its default WORKER_SERVERS and WORKER_PREFETCH\n", latency)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "concurrency\tside\tjobs\tjobs/s\tsteady/s\tceiling\tshare\tratio\tworker µs/job\tRedis µs/job\tstand-in µs/job\tpeak RSS MiB\tRedis cmds/job\tother cores\t")
	for _, p := range c.Points {
		for _, side := range []string{SideBaseline, SideActivator} {
			s := p.Baseline
			ratio := ""
			if side == SideActivator {
				s, ratio = p.Activator, fmt.Sprintf("%.3f", p.Ratio)
			}
			var steady []float64
			var runs []Drain
			for _, r := range p.Runs {
				if r.Side == side {
					steady = append(steady, r.SteadyJobsPerSec)
					runs = append(runs, r)
				}
			}
			ceiling, share := "-", "-"
			if p.Ceiling > 0 {
				ceiling = fmt.Sprintf("%.0f", p.Ceiling)
				share = fmt.Sprintf("%.1f%%", 100*s.MedianJobsPerSec/p.Ceiling)
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%.0f\t%.0f\t%s\t%s\t%s\t%.0f\t%.0f\t%.0f\t%.1f\t%.2f\t%s\t\n", p.Concurrency, side, p.Jobs,
				s.MedianJobsPerSec, median(steady), ceiling, share, ratio, s.CPUPerJobUS, s.RedisCPUPerJobUS, s.StandinCPUPerJobUS,
				float64(s.PeakRSSKB)/1024, s.RedisCmdsPerJob, runsOther(runs))
		}
	}
	tw.Flush()
	for _, p := range c.Points {
		fmt.Fprintf(w, "\nconcurrency %d: top Redis commands per job (INFO commandstats, median over reps; scripts' inner commands included)\n", p.Concurrency)
		printShares(w, p.Baseline.TopCommands, p.Activator.TopCommands)
	}
	for _, p := range c.Points {
		for _, r := range p.Runs {
			if r.Problem != "" {
				fmt.Fprintf(w, "PROBLEM concurrency %d rep %d %s: %s\n", p.Concurrency, r.Rep, r.Side, r.Problem)
			}
		}
	}
}
