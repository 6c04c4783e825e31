package bench

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/versori/activator/internal/window"
)

// RateLimitConfig is the ratelimit mode's settings: worker processes sharing a limit far below what
// they can drain, so that the limiter, not the CPU, sets the pace, measured at the API over windows
// long enough that the burst and the jitter of single calls do not decide the figure.
type RateLimitConfig struct {
	Rate    int           // VERSORI_RATE_LIMIT the processes share
	Burst   int           // VERSORI_RATE_BURST
	Procs   []int         // worker process counts, one drain each
	Window  time.Duration // length of the windows the share is measured over
	Windows int           // windows measured back to back per drain
	WarmUp  time.Duration // from the API's first call to the first window
}

func addRateLimitFlags(fs *flag.FlagSet, c *RateLimitConfig) {
	c.Procs = []int{1, 2, 4}
	fs.IntVar(&c.Rate, "ratelimit-rate", 500, "VERSORI_RATE_LIMIT of the ratelimit mode (well below what the processes can drain)")
	fs.IntVar(&c.Burst, "ratelimit-burst", 1, "VERSORI_RATE_BURST of the ratelimit mode")
	fs.Func("ratelimit-procs", "worker process counts of the ratelimit mode (default 1,2,4)", func(v string) error {
		n, err := intList(v)
		c.Procs = n
		return err
	})
	fs.DurationVar(&c.Window, "ratelimit-window", time.Minute, "length of the ratelimit mode's windows (10s for a quick check)")
	fs.IntVar(&c.Windows, "ratelimit-windows", 1, "windows measured back to back per process count")
	fs.DurationVar(&c.WarmUp, "ratelimit-warmup", 5*time.Second, "time from the API's first call to the first window")
}

func (c *RateLimitConfig) defaults() error {
	if c.Rate < 1 || c.Burst < 1 || c.Windows < 1 || c.Window < time.Second || c.WarmUp < 0 {
		return fmt.Errorf("ratelimit mode: rate %d, burst %d, %d windows of %s, warm-up %s: want positive, windows of 1s or more",
			c.Rate, c.Burst, c.Windows, c.Window, c.WarmUp)
	}
	if len(c.Procs) == 0 {
		c.Procs = []int{1, 2, 4}
	}
	return nil
}

// jobs is how many jobs keep a drain at the limit from its first call to the last window's end:
// the span at the full rate, 5% more in case the limiter reaches less, and 2 s of tail.
func (c *RateLimitConfig) jobs() int {
	span := c.WarmUp + time.Duration(c.Windows)*c.Window
	return int(math.Ceil(float64(c.Rate) * (1.05*span.Seconds() + 2)))
}

// RateLimit is the share of the shared rate limit the API saw, against the number of processes.
type RateLimit struct {
	Rate    int              `json:"rate"`
	Burst   int              `json:"burst"`
	Window  string           `json:"window"`
	WarmUp  string           `json:"warmUp"`
	Latency string           `json:"latency"`
	Points  []RateLimitPoint `json:"points"`
}

// RateLimitPoint is one drain by Procs processes.
type RateLimitPoint struct {
	Procs int `json:"procs"`
	// Calls and Shares are per window, back to back from WarmUp after the first call: the calls the
	// API saw in it, and those over Rate × Window.
	Calls    []int     `json:"calls"`
	Shares   []float64 `json:"shares"`
	MinShare float64   `json:"minShare"`
	// BusiestWindow is the most calls in any sliding window of the window's length over the whole
	// drain; WindowLimit is what the limit allows in one (Rate × Window + Burst − 1).
	BusiestWindow int  `json:"busiestWindow"`
	WindowLimit   int  `json:"windowLimit"`
	WithinLimit   bool `json:"withinLimit"`
	// BusiestSecond is the most calls in any sliding second; the limit's own allowance there is
	// Rate + Burst − 1, which a second may exceed by the jitter the limiter allows (package
	// ratelimit).
	BusiestSecond int    `json:"busiestSecond"`
	Drain         Drain  `json:"drain"`
	Problem       string `json:"problem,omitempty"`
}

func (b *bencher) rateLimit(ctx context.Context) (*RateLimit, error) {
	c := b.cfg.RateLimitBench
	if err := c.defaults(); err != nil {
		return nil, err
	}
	rl := &RateLimit{Rate: c.Rate, Burst: c.Burst, Window: c.Window.String(), WarmUp: c.WarmUp.String(), Latency: b.cfg.Latency.String()}
	jobs := c.jobs()
	// The workers space their slots for the window measured, so that a quick check with short
	// windows is held to the same promise; the default, a minute, is the workers' own.
	env := b.cfg.WorkerEnv
	defer func() { b.cfg.WorkerEnv = env }()
	b.cfg.WorkerEnv = append(slices.Clone(env), "VERSORI_RATE_WINDOW="+c.Window.String())
	for _, n := range c.Procs {
		r, err := b.run(ctx, runSpec{side: SideActivator, jobs: jobs, procs: n, servers: b.cfg.Servers,
			rateLimit: c.Rate, rateBurst: c.Burst, calls: true})
		if err != nil {
			return rl, fmt.Errorf("ratelimit, %d processes: %w", n, err)
		}
		p := rateLimitPoint(c, n, r)
		b.logf("ratelimit: processes %d  shares %s  busiest %s %d (limit %d)  busiest 1 s %d  %.0f jobs/s  other cores %.2f %s",
			n, sharesText(p.Shares), c.Window, p.BusiestWindow, p.WindowLimit, p.BusiestSecond, r.JobsPerSec, r.OtherCores, p.Problem)
		rl.Points = append(rl.Points, p)
	}
	return rl, nil
}

// rateLimitPoint reads one drain's call times into windows.
func rateLimitPoint(c RateLimitConfig, procs int, r Drain) RateLimitPoint {
	p := RateLimitPoint{Procs: procs, Drain: r, Problem: r.Problem,
		WindowLimit: int(math.Floor(float64(c.Rate)*c.Window.Seconds())) + c.Burst - 1}
	ts := slices.Clone(r.callTimes)
	slices.SortFunc(ts, time.Time.Compare)
	r.callTimes = nil // the report holds the figures, not 30,000 times per drain
	p.Drain = r
	p.BusiestWindow = window.Max(ts, c.Window)
	p.BusiestSecond = window.Max(ts, time.Second)
	p.WithinLimit = p.BusiestWindow <= p.WindowLimit
	if len(ts) == 0 {
		p.Problem = strings.TrimSpace(p.Problem + " the API saw no call")
		return p
	}
	start := ts[0].Add(c.WarmUp)
	// A window counts only while the queue still fed the limit: up to a second before the last call.
	if end := start.Add(time.Duration(c.Windows) * c.Window); end.After(ts[len(ts)-1].Add(-time.Second)) {
		p.Problem = strings.TrimSpace(p.Problem + fmt.Sprintf(" the queue ran dry %s before the last window ended: the limiter reached under 95%%",
			end.Sub(ts[len(ts)-1]).Round(time.Millisecond)))
	}
	for i := range c.Windows {
		from := start.Add(time.Duration(i) * c.Window)
		to := from.Add(c.Window)
		lo, _ := slices.BinarySearchFunc(ts, from, time.Time.Compare)
		hi, _ := slices.BinarySearchFunc(ts, to, time.Time.Compare)
		p.Calls = append(p.Calls, hi-lo)
		p.Shares = append(p.Shares, float64(hi-lo)/(float64(c.Rate)*c.Window.Seconds()))
	}
	p.MinShare = slices.Min(p.Shares)
	return p
}

func sharesText(shares []float64) string {
	s := make([]string, len(shares))
	for i, v := range shares {
		s[i] = fmt.Sprintf("%.2f%%", 100*v)
	}
	return strings.Join(s, " ")
}

func (rl *RateLimit) print(w io.Writer) {
	if rl == nil {
		return
	}
	fmt.Fprintf(w, "\nactivator, shared rate limit: worker processes on one Redis sharing VERSORI_RATE_LIMIT=%d/s burst %d VERSORI_RATE_WINDOW=%s, stand-in latency %s; "+
		"calls the API saw per %s window (from %s after its first call) over rate × window\n", rl.Rate, rl.Burst, rl.Window, rl.Latency, rl.Window, rl.WarmUp)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "processes\tcalls per window\tshare per window\tlowest share\tbusiest %s\tlimit\t<= limit\tbusiest 1 s\tjobs\tRedis cmds/job\tcalls that waited\tother cores\t\n", rl.Window)
	for _, p := range rl.Points {
		calls := make([]string, len(p.Calls))
		for i, n := range p.Calls {
			calls[i] = fmt.Sprint(n)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%.2f%%\t%d\t%d\t%v\t%d\t%d\t%.2f\t%.0f\t%.2f\t\n", p.Procs, strings.Join(calls, " "), sharesText(p.Shares),
			100*p.MinShare, p.BusiestWindow, p.WindowLimit, p.WithinLimit, p.BusiestSecond, p.Drain.Jobs, p.Drain.RedisCmdsPerJob,
			p.Drain.Metrics["activator_rate_limit_wait_seconds_count"], p.Drain.OtherCores)
	}
	tw.Flush()
	for _, p := range rl.Points {
		if p.Problem != "" {
			fmt.Fprintf(w, "PROBLEM %d processes: %s\n", p.Procs, p.Problem)
		}
	}
}
