package bench

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is everything one bench run measured.
type Report struct {
	CommandLine string       `json:"commandLine"`
	Source      string       `json:"source"` // what the worker, stand-in and enqueue binaries were built from
	Machine     Machine      `json:"machine"`
	Profile     Profile      `json:"profile"`
	Compare     *Compare     `json:"compare,omitempty"`
	Accounting  *Accounting  `json:"accounting,omitempty"`
	Servers     *Sweep       `json:"servers,omitempty"`
	Horizontal  *Horizontal  `json:"horizontal,omitempty"`
	RateLimit   *RateLimit   `json:"rateLimit,omitempty"`
	Enqueue     *Enqueue     `json:"enqueue,omitempty"`
	Latency     *Latency     `json:"latency,omitempty"`
	Concurrency *Concurrency `json:"concurrency,omitempty"`
}

// Profile is the run's settings.
type Profile struct {
	Mode         string   `json:"mode"`
	Latency      string   `json:"latency"`
	Jobs         int      `json:"jobs"`
	Concurrency  int      `json:"concurrency"`
	Servers      int      `json:"servers"`
	Reps         int      `json:"reps"`
	Poll         string   `json:"poll"`
	RateLimit    int      `json:"rateLimit"`
	RateBurst    int      `json:"rateBurst"`
	QueueMetrics bool     `json:"queueMetrics"`
	RedisAddr    string   `json:"redisAddr"`
	RedisDB      int      `json:"redisDB"`
	WorkerEnv    []string `json:"workerEnv,omitempty"`
}

func profileOf(c Config) Profile {
	return Profile{Mode: c.Mode, Latency: c.Latency.String(), Jobs: c.Jobs, Concurrency: c.Concurrency,
		Servers: c.Servers, Reps: c.Reps, Poll: c.Poll.String(), RateLimit: c.RateLimit, RateBurst: c.RateBurst,
		QueueMetrics: c.QueueMetrics, RedisAddr: c.RedisAddr, RedisDB: c.RedisDB, WorkerEnv: c.WorkerEnv}
}

// topN is how many commands the tables list.
const topN = 12

// Print writes r as readable tables.
func (r *Report) Print(w io.Writer) {
	p := r.Profile
	fmt.Fprintf(w, "command: %s\n", r.CommandLine)
	fmt.Fprintf(w, "binaries built from: %s\n", r.Source)
	fmt.Fprintf(w, "machine: %d CPUs (%s), %s, Redis %s; load average before %s, after %s\n",
		r.Machine.NProc, r.Machine.CPU, r.Machine.GoVersion, r.Machine.RedisVersion, r.Machine.LoadBefore, r.Machine.LoadAfter)
	if r.Concurrency != nil {
		// The concurrency mode sizes its own drains and sets the concurrency per point.
		fmt.Fprintf(w, "profile: concurrency sweep, stand-in latency %s, drain polled every %s; Redis %s db %d\n",
			p.Latency, p.Poll, p.RedisAddr, p.RedisDB)
	} else {
		fmt.Fprintf(w, "profile: %d jobs, concurrency %d, servers %d, stand-in latency %s, %d reps, drain polled every %s; Redis %s db %d\n",
			p.Jobs, p.Concurrency, p.Servers, p.Latency, p.Reps, p.Poll, p.RedisAddr, p.RedisDB)
	}
	fmt.Fprintf(w, "activator worker: breaker on, metrics on, QUEUE_METRICS %v, LOG_LEVEL info; WORKER_CONCURRENCY %d calls in flight, "+
		"WORKER_PREFETCH default (a fifth of that: tasks held beyond the call slots; the baseline holds exactly its concurrency); "+
		"VERSORI_RATE_LIMIT %d/s burst %d in compare and servers runs (not binding)",
		p.QueueMetrics, p.Concurrency*p.Servers, p.RateLimit, p.RateBurst)
	if r.Horizontal != nil {
		fmt.Fprintf(w, ", %d/s burst 1 in horizontal runs", r.Horizontal.RateLimit)
	}
	fmt.Fprintln(w)
	if len(p.WorkerEnv) > 0 {
		fmt.Fprintf(w, "activator worker environment also: %s\n", strings.Join(p.WorkerEnv, " "))
	}
	if c := r.Compare; c != nil {
		fmt.Fprintf(w, "\nbaseline (plain asynq) vs activator: jobs/s from worker start to queue drained; steady ratio: of the rates between 10%% and 90%% of each drain's calls\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "rep\tfirst\tbaseline\tactivator\tratio\tsteady ratio\tload at start\tother cores (b/a)\t")
		for i, ratio := range c.Ratios {
			var bl, ac Drain
			for _, run := range c.Runs {
				if run.Rep == i+1 && run.Side == SideBaseline {
					bl = run
				} else if run.Rep == i+1 {
					ac = run
				}
			}
			first := SideBaseline
			if ac.Order == 1 {
				first = SideActivator
			}
			load := bl.Load
			if ac.Order == 1 {
				load = ac.Load
			}
			steady := 0.0
			if bl.SteadyJobsPerSec > 0 {
				steady = ac.SteadyJobsPerSec / bl.SteadyJobsPerSec
			}
			fmt.Fprintf(tw, "%d\t%s\t%.0f\t%.0f\t%.3f\t%.3f\t%s\t%.2f/%.2f\t\n", i+1, first, bl.JobsPerSec, ac.JobsPerSec, ratio, steady, load, bl.OtherCores, ac.OtherCores)
		}
		fmt.Fprintf(tw, "median\t\t%.0f\t%.0f\t%.3f\t%.3f\t\t\t\n", c.Baseline.MedianJobsPerSec, c.Activator.MedianJobsPerSec, c.Ratio, c.SteadyRatio)
		tw.Flush()
		if c.Ceiling > 0 {
			fmt.Fprintf(w, "ceiling concurrency×servers/latency = %.0f jobs/s; activator reaches %.1f%% of it, baseline %.1f%%\n",
				c.Ceiling, 100*c.CeilingShare, 100*c.Baseline.MedianJobsPerSec/c.Ceiling)
		}
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "\tbaseline\tactivator\t")
		fmt.Fprintf(tw, "API calls per activation\t%.3f\t%.3f\t\n", c.Baseline.CallsPerActivation, c.Activator.CallsPerActivation)
		fmt.Fprintf(tw, "Redis commands per job (INFO commandstats, poller removed)\t%.2f\t%.2f\t\n", c.Baseline.RedisCmdsPerJob, c.Activator.RedisCmdsPerJob)
		fmt.Fprintf(tw, "worker CPU per job (µs, user+system)\t%.0f\t%.0f\t\n", c.Baseline.CPUPerJobUS, c.Activator.CPUPerJobUS)
		fmt.Fprintf(tw, "Redis server CPU per job (µs, INFO cpu)\t%.0f\t%.0f\t\n", c.Baseline.RedisCPUPerJobUS, c.Activator.RedisCPUPerJobUS)
		fmt.Fprintf(tw, "stand-in CPU per job (µs)\t%.0f\t%.0f\t\n", c.Baseline.StandinCPUPerJobUS, c.Activator.StandinCPUPerJobUS)
		fmt.Fprintf(tw, "worker peak RSS (MiB)\t%.1f\t%.1f\t\n", float64(c.Baseline.PeakRSSKB)/1024, float64(c.Activator.PeakRSSKB)/1024)
		tw.Flush()
		fmt.Fprintf(w, "\ntop Redis commands per job (INFO commandstats, median over reps; scripts' inner commands included)\n")
		printShares(w, c.Baseline.TopCommands, c.Activator.TopCommands)
		if len(c.Runs) > 0 {
			for _, run := range c.Runs {
				if run.Side == SideActivator && run.Metrics != nil {
					fmt.Fprintf(w, "\nactivator metrics (rep %d): %s\n", run.Rep, metricsLine(run.Metrics))
					break
				}
			}
		}
		for _, run := range c.Runs {
			if run.Problem != "" {
				fmt.Fprintf(w, "PROBLEM rep %d %s: %s\n", run.Rep, run.Side, run.Problem)
			}
		}
	}
	if a := r.Accounting; a != nil {
		fmt.Fprintf(w, "\nexact accounting (MONITOR on db %d only, one untimed drain of %d jobs per side): commands per job\n", p.RedisDB, a.Jobs)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "\tbaseline\tactivator\textra\t")
		fmt.Fprintf(tw, "sent by clients\t%.3f\t%.3f\t%+.3f\t\n", a.Baseline.ClientPerJob, a.Activator.ClientPerJob, a.Activator.ClientPerJob-a.Baseline.ClientPerJob)
		fmt.Fprintf(tw, "run inside scripts\t%.3f\t%.3f\t%+.3f\t\n", a.Baseline.ScriptPerJob, a.Activator.ScriptPerJob, a.Activator.ScriptPerJob-a.Baseline.ScriptPerJob)
		tw.Flush()
		fmt.Fprintf(w, "sent by clients, by command:\n")
		printShares(w, a.Baseline.Client, a.Activator.Client)
		fmt.Fprintf(w, "inside scripts, by command:\n")
		printShares(w, a.Baseline.Script, a.Activator.Script)
		for _, s := range []AccountSide{a.Baseline, a.Activator} {
			if s.Problem != "" {
				fmt.Fprintf(w, "PROBLEM accounting: %s\n", s.Problem)
			}
		}
	}
	if s := r.Servers; s != nil {
		fmt.Fprintf(w, "\nactivator, WORKER_SERVERS sweep (one process)\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "servers\tjobs/s (median)\tper rep\tgain\tRedis cmds/job\tCPU µs/job\tpeak RSS MiB\tother cores\t")
		for i, pt := range s.Points {
			gain := ""
			if i > 0 {
				gain = fmt.Sprintf("%+.0f%%", 100*(pt.MedianJobsPerSec/s.Points[i-1].MedianJobsPerSec-1))
			}
			fmt.Fprintf(tw, "%d\t%.0f\t%s\t%s\t%.2f\t%.0f\t%.1f\t%s\t\n", pt.Servers, pt.MedianJobsPerSec, runsJPS(pt.Runs), gain, pt.RedisCmdsPerJob, pt.CPUPerJobUS, float64(pt.PeakRSSKB)/1024, runsOther(pt.Runs))
		}
		tw.Flush()
		if s.StopsHelpingAfter > 0 {
			fmt.Fprintf(w, "adding servers beyond %d gains under 10%%\n", s.StopsHelpingAfter)
		} else {
			fmt.Fprintf(w, "every step gained 10%% or more\n")
		}
	}
	if h := r.Horizontal; h != nil {
		fmt.Fprintf(w, "\nactivator, horizontal: worker processes on one Redis sharing VERSORI_RATE_LIMIT=%d/s (burst 1)\n", h.RateLimit)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "processes\tjobs/s (median)\tper rep\tbusiest 1 s at the API\t<= limit\tcalls that waited\tRedis cmds/job\tpeak RSS MiB (per process)\tother cores\t")
		for _, pt := range h.Points {
			fmt.Fprintf(tw, "%d\t%.0f\t%s\t%d\t%v\t%.0f\t%.2f\t%.1f\t%s\t\n", pt.Procs, pt.MedianJobsPerSec, runsJPS(pt.Runs), pt.MaxCallsIn1s,
				pt.WithinLimit, pt.RateLimitWaits, pt.RedisCmdsPerJob, float64(pt.PeakRSSKB)/1024, runsOther(pt.Runs))
		}
		tw.Flush()
	}
	if r.Concurrency != nil {
		r.Concurrency.print(w, p.Latency)
	}
	r.RateLimit.print(w)
	if e := r.Enqueue; e != nil {
		fmt.Fprintf(w, "\nenqueue file (real binary, JSONL, its default ENQUEUE_CONCURRENCY)\n")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "rows\trows/s (printed)\tprocess time\tpeak RSS MiB\tload\t")
		for _, run := range e.Runs {
			fmt.Fprintf(tw, "%d\t%.0f\t%s\t%.1f\t%s\t\n", run.Rows, run.RowsPerSec,
				time.Duration(run.ElapsedSec*float64(time.Second)).Round(time.Millisecond), float64(run.PeakRSSKB)/1024, run.Load)
		}
		tw.Flush()
	}
	if r.Latency != nil {
		r.Latency.print(w)
	}
}

func runsOther(runs []Drain) string {
	s := make([]string, len(runs))
	for i, r := range runs {
		s[i] = fmt.Sprintf("%.2f", r.OtherCores)
	}
	return strings.Join(s, " ")
}

func runsJPS(runs []Drain) string {
	s := make([]string, len(runs))
	for i, r := range runs {
		s[i] = fmt.Sprintf("%.0f", r.JobsPerSec)
	}
	return strings.Join(s, " ")
}

// printShares lists the largest per-job commands of both sides side by side.
func printShares(w io.Writer, base, act []CmdShare) {
	b := map[string]float64{}
	a := map[string]float64{}
	var names []string
	seen := map[string]bool{}
	for _, s := range base {
		b[s.Command] = s.PerJob
	}
	for _, s := range act {
		a[s.Command] = s.PerJob
	}
	// Order: the larger of the two sides, so commands only one side sends still show.
	all := append(append([]CmdShare{}, act...), base...)
	for _, s := range all {
		if !seen[s.Command] {
			seen[s.Command] = true
			names = append(names, s.Command)
		}
	}
	sortByMax(names, a, b)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "command\tbaseline\tactivator\textra\t")
	for i, n := range names {
		if i == topN {
			break
		}
		fmt.Fprintf(tw, "%s\t%.3f\t%.3f\t%+.3f\t\n", n, b[n], a[n], a[n]-b[n])
	}
	tw.Flush()
}

func sortByMax(names []string, a, b map[string]float64) {
	key := func(n string) float64 { return max(a[n], b[n]) }
	for i := 1; i < len(names); i++ {
		for j := i; j > 0 && (key(names[j]) > key(names[j-1]) || key(names[j]) == key(names[j-1]) && names[j] < names[j-1]); j-- {
			names[j], names[j-1] = names[j-1], names[j]
		}
	}
}

// metricsLine picks the counters that show the safety features' work.
func metricsLine(m map[string]float64) string {
	var parts []string
	for _, k := range []string{
		`activator_activations_total{result="activated"}`,
		`activator_activations_total{result="already_active"}`,
		`activator_job_attempts_total{class="ok"}`,
		`activator_job_attempts_total{class="transient"}`,
		`activator_rate_limit_wait_seconds_count`,
		`activator_circuit_breaker_state`,
	} {
		if v, ok := m[k]; ok {
			parts = append(parts, fmt.Sprintf("%s %g", k, v))
		}
	}
	return strings.Join(parts, ", ")
}
