package worker

import (
	"cmp"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/versori/activator/internal/breaker"
	"github.com/versori/activator/internal/configerr"
	"github.com/versori/activator/metrics"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

// Config configures a worker. DefaultConfig holds every default, once; the worker command's flags
// take theirs from it. New gives a field left zero its default where zero means "not set" (see
// WithDefaults), then refuses a Config that does not pass Validate.
type Config struct {
	Queue       string
	Concurrency int // API calls in flight in the process at most; required, 0 is refused
	// Prefetch is how many tasks the process holds beyond Concurrency, shared out among its asynq
	// servers with the rest: a job whose task is held waits for a free call slot. asynq holds a slot
	// while it fetches a task and while it marks it done, two Redis round trips per job; with tasks
	// held ahead, those overlap other jobs' calls instead of leaving a call slot idle. 0 holds none;
	// PrefetchAuto (DefaultConfig's) a fifth of Concurrency, at least 1.
	Prefetch int
	// Servers is how many asynq servers (fetch loops) the process runs against the queue; one asynq
	// server fetches one task per Redis round trip, which caps it when jobs are fast or many are in
	// flight. ServersAuto (DefaultConfig's) runs one per CallsPerServer of Concurrency.
	Servers int
	// ShutdownGrace is how long in-flight calls may take to finish after a stop signal; calls still
	// running then are cut short and their jobs retried (after a look-up, since their outcome is
	// unknown).
	ShutdownGrace time.Duration
	// SweepInterval is how often the asynq archive is swept into the dead-letter store.
	SweepInterval time.Duration
	// DeadLetterMaxAge and DeadLetterMaxEntries, when set, bound the dead-letter store: older or
	// excess entries are removed at each sweep. Both zero keep everything.
	DeadLetterMaxAge     time.Duration
	DeadLetterMaxEntries int64
	// PollInterval is how long an idle fetch loop waits before looking for new tasks again (asynq
	// sleeps half to one and a half times it): the pickup delay of a job queued while the worker is
	// idle, against one dequeue script per interval per asynq server while it is
	// (docs/operations.md, "Pickup latency").
	PollInterval time.Duration
	MetricsAddr  string // "" serves no metrics
	// MetricsServer, if set, is a metrics listener its caller already serves, and stops after Run
	// returns: the worker installs its routes on it (metrics.Server.Install) instead of listening on
	// MetricsAddr. The worker command opens it before Redis answers, so that /healthz answers (and
	// /readyz says 503) while the worker waits for Redis at start.
	MetricsServer *metrics.Server
	// QueueMetrics exports asynq's queue metrics too (a Redis scan per scrape): turn it on in one
	// scraped process, or in all when they are few.
	QueueMetrics bool
	Versori      versori.Config // HubID is required
	PerUserAuth  bool
	Policy       RetryPolicy
	// MaxAge, if positive, dead-letters a job still failing this long after it was enqueued; 0 is no
	// limit.
	MaxAge time.Duration
	// RateLimit is the most calls per second all workers on this Redis and queue send together
	// (0: no limit); RateBurst is how many may go at once after a quiet spell.
	RateLimit, RateBurst int
	// RateWindow is the length of the windows over which the API never sees more than RateLimit ×
	// RateWindow + RateBurst − 1 calls: the longer, the closer to RateLimit a backlog drains, and
	// the more a shorter window may hold (package ratelimit).
	RateWindow time.Duration
	// Breaker configures the circuit breaker over API calls.
	Breaker breaker.Config
	// ProbeInterval is how often a queue paused for a refused API key is probed: when the key works
	// again, the queue is resumed.
	ProbeInterval time.Duration
	// NoRedisRestartGuard turns off the guard that makes jobs queued before a Redis restart or
	// failover (which may have lost its latest writes) look up their pair before activating. Only for
	// a Redis that loses nothing it acknowledged (appendfsync always, replicas in sync).
	NoRedisRestartGuard bool
	Logger              *slog.Logger // default slog.Default()
	// AdminAddr is the address of the admin listener, which serves Pprof and AdminUI and nothing
	// else; it is opened only when one of them is on. "" serves neither (and refuses them on).
	// DefaultConfig's is DefaultAdminAddr, loopback only: neither has auth of its own.
	AdminAddr string
	// AdminListener, if set, is a listener the caller opened on AdminAddr, which the worker serves
	// the admin routes on, and closes, instead of listening itself. The worker command opens it at
	// start, so that a taken ADMIN_ADDR stops the process before it waits for Redis.
	AdminListener net.Listener
	// AdminUI serves asynqmon's queue UI at /ui/ on AdminAddr (off by default, read-only unless
	// AdminUI.Write). It has no auth of its own: keep AdminAddr private.
	AdminUI AdminUI
	// Pprof serves net/http/pprof at /debug/pprof/ on AdminAddr, for CPU and allocation profiles
	// under load. Profiles show payloads' shapes and cost CPU while taken: keep AdminAddr private.
	Pprof bool
	// Keys open the sealed credentials of jobs (ACTIVATOR_ENCRYPTION_KEYS): every key a queued job
	// or dead letter may be sealed with. nil opens none: a job with sealed credentials is then
	// dead-lettered as secret_unreadable, keeping them sealed.
	Keys *tasks.Keyring
}

// DefaultPollInterval is DefaultConfig's PollInterval: a signup event waits 50 to 150 ms for an idle
// worker to look (median about 55 ms), for about 10 dequeue scripts a second per idle asynq server.
const DefaultPollInterval = 100 * time.Millisecond

// PrefetchAuto, as Config.Prefetch, holds a fifth of Concurrency beyond it, at least 1.
const PrefetchAuto = -1

// ServersAuto, as Config.Servers, runs one asynq server per CallsPerServer of Concurrency, 1 to
// MaxAutoServers.
const ServersAuto = -1

// CallsPerServer is the share of Concurrency one fetch loop feeds under ServersAuto. One loop
// fetches a task per Redis round trip, which takes longer as the CPU fills, and the jobs it starts
// one after another share fewer of the pair turns' calls (pairorder.Batcher): on a 2-core machine at
// 200 ms per call, 500 calls in flight on one loop reached 60-70% of the plain asynq worker's jobs/s,
// on two 93%, on four 99.5%; at the default 50 and no API latency, two loops cut the worker's CPU
// per job by a fifth (BENCHMARKS.md). Each server costs Redis about 13 round trips a second of its
// own while the queue is idle (docs/operations.md, "Pickup latency").
const CallsPerServer = 25

// MaxAutoServers bounds ServersAuto: past a few fetch loops the CPU, not the fetching, is the limit.
const MaxAutoServers = 8

// DefaultConfig is the worker's configuration when nothing is set: the worker command's defaults
// and the source of those WithDefaults gives. Versori.Auth and Versori.HubID have none.
func DefaultConfig() Config {
	return Config{
		Queue:         tasks.DefaultQueue,
		Concurrency:   50,
		Prefetch:      PrefetchAuto,
		Servers:       ServersAuto,
		ShutdownGrace: 10 * time.Second,
		SweepInterval: 30 * time.Second,
		PollInterval:  DefaultPollInterval,
		MetricsAddr:   ":9464",
		AdminAddr:     DefaultAdminAddr,
		QueueMetrics:  true,
		Versori:       versori.DefaultConfig(),
		Policy:        DefaultRetryPolicy(),
		MaxAge:        24 * time.Hour,
		RateBurst:     1,
		RateWindow:    time.Minute,
		Breaker:       breaker.DefaultConfig(),
		ProbeInterval: 30 * time.Second,
	}
}

// WithDefaults returns c with each field left zero whose zero means "not set" (Queue, Servers,
// the intervals, RateBurst, RateWindow, Logger, and those of Versori, Policy and Breaker) set from
// DefaultConfig, and PrefetchAuto and ServersAuto worked out. Fields whose zero means something (Concurrency:
// refused; Prefetch: none; MetricsAddr and AdminAddr: no listener; QueueMetrics, MaxAge, RateLimit and the
// dead-letter bounds: off) are left as they are: start from DefaultConfig to get the command's.
func (c Config) WithDefaults() Config {
	d := DefaultConfig()
	c.Queue = cmp.Or(c.Queue, d.Queue)
	if c.Prefetch == PrefetchAuto {
		c.Prefetch = max(c.Concurrency/5, 1)
	}
	c.Servers = cmp.Or(c.Servers, d.Servers)
	if c.Servers == ServersAuto {
		c.Servers = min(max((c.Concurrency+CallsPerServer-1)/CallsPerServer, 1), MaxAutoServers)
	}
	c.ShutdownGrace = cmp.Or(c.ShutdownGrace, d.ShutdownGrace)
	c.SweepInterval = cmp.Or(c.SweepInterval, d.SweepInterval)
	c.PollInterval = cmp.Or(c.PollInterval, d.PollInterval)
	c.ProbeInterval = cmp.Or(c.ProbeInterval, d.ProbeInterval)
	c.RateBurst = cmp.Or(c.RateBurst, d.RateBurst)
	c.RateWindow = cmp.Or(c.RateWindow, d.RateWindow)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	c.Versori = c.Versori.WithDefaults()
	c.Policy = c.Policy.WithDefaults()
	c.Breaker = c.Breaker.WithDefaults()
	return c
}

// Validate reports the first problem with c as it is, defaults not applied. Its errors are
// *configerr.Error and name the field ("worker: Concurrency must be at least 1, got 0"); they never
// show a credential.
func (c Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return configerr.New("worker", field, format, args...)
	}
	switch {
	case strings.TrimSpace(c.Queue) == "":
		return bad("Queue", "must not be empty")
	case c.Concurrency < 1:
		return bad("Concurrency", "must be at least 1, got %d", c.Concurrency)
	case c.Prefetch < PrefetchAuto:
		return bad("Prefetch", "must be 0 or more (-1: a fifth of Concurrency), got %d", c.Prefetch)
	case (c.Servers < 1 || c.Servers > 64) && c.Servers != ServersAuto:
		return bad("Servers", "must be 1 to 64 (-1: one per %d of Concurrency), got %d", CallsPerServer, c.Servers)
	case c.ShutdownGrace <= 0:
		return bad("ShutdownGrace", "must be positive, got %s", c.ShutdownGrace)
	case c.SweepInterval <= 0:
		return bad("SweepInterval", "must be positive, got %s", c.SweepInterval)
	case c.PollInterval <= 0:
		return bad("PollInterval", "must be positive, got %s", c.PollInterval)
	case c.ProbeInterval <= 0:
		return bad("ProbeInterval", "must be positive, got %s", c.ProbeInterval)
	case c.DeadLetterMaxAge < 0:
		return bad("DeadLetterMaxAge", "must not be negative, got %s", c.DeadLetterMaxAge)
	case c.DeadLetterMaxEntries < 0:
		return bad("DeadLetterMaxEntries", "must not be negative, got %d", c.DeadLetterMaxEntries)
	case c.RateLimit < 0:
		return bad("RateLimit", "must not be negative, got %d", c.RateLimit)
	case c.RateBurst < 1:
		return bad("RateBurst", "must be at least 1, got %d", c.RateBurst)
	case c.RateWindow < 0:
		return bad("RateWindow", "must not be negative, got %s", c.RateWindow)
	case c.MaxAge < 0:
		return bad("MaxAge", "must not be negative, got %s", c.MaxAge)
	case c.Pprof && c.AdminAddr == "" && c.AdminListener == nil:
		return bad("Pprof", "needs AdminAddr: profiles are served only on the admin listener")
	}
	if err := c.Versori.Validate(); err != nil {
		return configerr.Within(err, "worker", "Versori")
	}
	if c.Versori.HubID == "" {
		return bad("Versori.HubID", "is required: the worker looks up a user's activations before retrying a call whose outcome is unknown")
	}
	if err := c.Policy.Validate(); err != nil {
		return configerr.Within(err, "worker", "Policy")
	}
	if err := c.Breaker.Validate(); err != nil {
		return configerr.Within(err, "worker", "Breaker")
	}
	return c.validateAdminUI()
}

func (c Config) validateAdminUI() error {
	ui := c.AdminUI
	switch {
	case !ui.Enabled && ui.Write:
		return configerr.New("worker", "AdminUI.Write", "and PrometheusURL need Enabled=true")
	case !ui.Enabled && ui.PrometheusURL != "":
		return configerr.New("worker", "AdminUI.PrometheusURL", "and Write need Enabled=true")
	case ui.Enabled && c.AdminAddr == "" && c.AdminListener == nil:
		return configerr.New("worker", "AdminUI.Enabled", "needs AdminAddr: the queue UI is served only on the admin listener")
	}
	if ui.PrometheusURL != "" {
		u, err := url.Parse(ui.PrometheusURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return configerr.New("worker", "AdminUI.PrometheusURL", "must be http://host:port of a Prometheus server")
		}
	}
	return nil
}
