// Package workercmd is the worker command: it reads the worker's flags and environment into a
// worker.Config, and runs the worker. cmd/worker only calls Main. This package and enqueuecmd are
// the only places that name environment variables; docs/configuration.md lists them
// (TestConfigurationDoc keeps the two in step).
package workercmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/buildinfo"
	"github.com/versori/activator/internal/cmd/envflag"
	"github.com/versori/activator/internal/configerr"
	"github.com/versori/activator/internal/logging"
	"github.com/versori/activator/internal/redisconn"
	"github.com/versori/activator/metrics"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/worker"
)

// Settings is the worker process's whole configuration, read once at start from flags and the
// environment.
type Settings struct {
	RedisURL string
	LogLevel slog.Level
	// LogFlush is how long log lines below warning may wait to be written together; 0 writes each
	// line at once.
	LogFlush time.Duration
	// LogFormat is how log lines are written: JSON, or text for a terminal.
	LogFormat logging.Format
	// LogRepeat is how often a warning or error repeated word for word is written, with its count;
	// 0 writes every one.
	LogRepeat time.Duration
	worker.Config
}

// defaultLogFlush is the default of LOG_FLUSH_INTERVAL.
const defaultLogFlush = 100 * time.Millisecond

// raw holds what the flags read that is not yet a Settings field.
type raw struct {
	apiKey, keyID, keyFile string
	level, format          string
	guard                  bool
	keys                   string
}

// newFlags defines the worker's flags on s and r, each defaulting to its variable, then to
// worker.DefaultConfig.
func newFlags(s *Settings, r *raw, lookup func(string) (string, bool), usageOut io.Writer) *envflag.Set {
	d := worker.DefaultConfig()
	fs := envflag.New("worker", lookup, usageOut)
	// A secret: the URL may hold a password.
	fs.Secret(&s.RedisURL, "redis-url", "REDIS_URL", redisconn.DefaultURL, "Redis URL: redis://[:password@]host:port/db, rediss:// for TLS, redis-sentinel://host:port,…?master=NAME for Sentinel (database 0), redis-cluster://host:port,… for Redis Cluster; rediss-sentinel:// and rediss-cluster:// for those over TLS")
	fs.String(&s.Versori.BaseURL, "versori-base-url", "VERSORI_BASE_URL", d.Versori.BaseURL, "Embedded API base URL")
	fs.Secret(&r.apiKey, "versori-api-key", "VERSORI_API_KEY", "", "API key, sent as Authorization: Bearer")
	fs.String(&r.keyID, "versori-signing-key-id", "VERSORI_SIGNING_KEY_ID", "", "signing key id, for per-end-user JWTs instead of an API key")
	fs.String(&r.keyFile, "versori-signing-key-file", "VERSORI_SIGNING_KEY_FILE", "", "PKCS#8 PEM file of the signing key")
	fs.String(&s.Versori.HubID, "versori-hub-id", "VERSORI_HUB_ID", d.Versori.HubID, "hub id, needed to look up a user's activations")
	fs.Duration(&s.Versori.Timeout, "versori-timeout", "VERSORI_TIMEOUT", d.Versori.Timeout, "timeout of one API call")
	fs.Int(&s.Concurrency, "concurrency", "WORKER_CONCURRENCY", d.Concurrency, "API calls in flight in this process at most (it also sizes the HTTP keep-alive pool)")
	fs.Int(&s.Prefetch, "prefetch", "WORKER_PREFETCH", d.Prefetch, "tasks held beyond WORKER_CONCURRENCY, so that asynq's fetch and completion overlap API calls (-1: a fifth of WORKER_CONCURRENCY, at least 1)")
	fs.Int(&s.Servers, "servers", "WORKER_SERVERS", d.Servers, fmt.Sprintf("asynq servers (fetch loops) in this process, 1 to 64 (-1: one per %d of WORKER_CONCURRENCY, at most %d)", worker.CallsPerServer, worker.MaxAutoServers))
	fs.String(&s.Queue, "queue", "QUEUE", d.Queue, "queue name")
	fs.StringEmpty(&s.MetricsAddr, "metrics-addr", "METRICS_ADDR", d.MetricsAddr, "address serving /metrics, /healthz and /readyz (empty, METRICS_ADDR= or -metrics-addr=: none)")
	fs.Bool(&s.QueueMetrics, "queue-metrics", "QUEUE_METRICS", d.QueueMetrics, "also export asynq's queue metrics (one Redis scan per scrape)")
	fs.Duration(&s.ShutdownGrace, "shutdown-grace", "SHUTDOWN_GRACE", d.ShutdownGrace, "how long in-flight calls may finish after SIGTERM")
	fs.Duration(&s.SweepInterval, "dlq-sweep-interval", "DLQ_SWEEP_INTERVAL", d.SweepInterval, "how often asynq's archive is swept into the dead-letter store")
	fs.Duration(&s.DeadLetterMaxAge, "dlq-max-age", "DLQ_MAX_AGE", d.DeadLetterMaxAge, "remove dead letters older than this (0: keep all)")
	fs.Int64(&s.DeadLetterMaxEntries, "dlq-max-entries", "DLQ_MAX_ENTRIES", d.DeadLetterMaxEntries, "keep at most this many dead letters, dropping the oldest (0: no limit)")
	fs.Duration(&s.PollInterval, "poll-interval", "POLL_INTERVAL", d.PollInterval, "how long an idle worker waits before looking for jobs again")
	fs.Duration(&s.Policy.Base, "retry-base", "RETRY_BASE", d.Policy.Base, "base of the exponential retry backoff")
	fs.Duration(&s.Policy.Cap, "retry-cap", "RETRY_CAP", d.Policy.Cap, "cap of the exponential retry backoff")
	fs.Duration(&s.Policy.RateLimitWait, "rate-limit-wait", "RATE_LIMIT_WAIT", d.Policy.RateLimitWait, "wait after a 429 that has no Retry-After")
	fs.Int(&s.Policy.QuickRetries, "quick-retries", "QUICK_RETRIES", d.Policy.QuickRetries, "transient failures known not to have reached the API (refused connections, 408, 425, failed look-ups) retried inside a job before it goes back to the queue")
	fs.Duration(&s.Policy.SettleTime, "settle-time", "SETTLE_TIME", d.Policy.SettleTime, "after a POST whose outcome is unknown (5xx, timeout, lost connection), wait at least this long before looking the pair up: the API may still commit it; longer than the API's own request timeout behind its gateway")
	fs.Duration(&s.Policy.MaxRetryAfter, "max-retry-after", "MAX_RETRY_AFTER", d.Policy.MaxRetryAfter, "the longest Retry-After honoured; a longer one is cut to it (logged, and counted in activator_retry_after_capped_total)")
	fs.Bool(&r.guard, "redis-restart-guard", "REDIS_RESTART_GUARD", !d.NoRedisRestartGuard, "after Redis restarts or fails over (and may have lost its latest writes), jobs queued before then look up their pair before activating (false: only for a Redis that loses nothing it acknowledged)")
	fs.Int(&s.RateLimit, "rate-limit", "VERSORI_RATE_LIMIT", d.RateLimit, "most API calls per second, all workers together (0: no limit)")
	fs.Int(&s.RateBurst, "rate-burst", "VERSORI_RATE_BURST", d.RateBurst, "calls that may go at once after a quiet spell")
	fs.Duration(&s.RateWindow, "rate-window", "VERSORI_RATE_WINDOW", d.RateWindow, "the API never sees more than VERSORI_RATE_LIMIT × this + VERSORI_RATE_BURST − 1 calls in a window this long; set it to the shortest window the API counts calls over (1s reaches 88% of the limit, 1m 99.8%)")
	fs.Duration(&s.MaxAge, "max-job-age", "MAX_JOB_AGE", d.MaxAge, "dead-letter a job still failing this long after it was enqueued (0: no limit)")
	fs.Duration(&s.Breaker.Window, "breaker-window", "BREAKER_WINDOW", d.Breaker.Window, "how far back the circuit breaker counts calls")
	fs.Uint32(&s.Breaker.MinCalls, "breaker-min-calls", "BREAKER_MIN_CALLS", d.Breaker.MinCalls, "calls in the window before the breaker may open")
	fs.Float(&s.Breaker.FailureRatio, "breaker-failure-ratio", "BREAKER_FAILURE_RATIO", d.Breaker.FailureRatio, "share of transient failures that opens the breaker")
	fs.Duration(&s.Breaker.Cooldown, "breaker-cooldown", "BREAKER_COOLDOWN", d.Breaker.Cooldown, "how long the breaker stays open before probing")
	fs.Duration(&s.ProbeInterval, "probe-interval", "PROBE_INTERVAL", d.ProbeInterval, "how often a queue paused for a refused API key or signing key is probed")
	fs.String(&r.level, "log-level", "LOG_LEVEL", "info", "debug, info, warn or error")
	fs.String(&r.format, "log-format", "LOG_FORMAT", string(logging.JSON), "json, or text for a terminal")
	fs.Duration(&s.LogRepeat, "log-repeat-interval", "LOG_REPEAT_INTERVAL", logging.DefaultRepeatInterval, "a warning or error repeated word for word (Redis refusing connections, say) is written once per interval, with how many times it was repeated; 0 writes every one")
	fs.Duration(&s.LogFlush, "log-flush-interval", "LOG_FLUSH_INTERVAL", defaultLogFlush, "how long info and debug lines may wait to be written together (warnings and errors are written at once, with everything before them); 0 writes every line at once")
	// The queue UI and the profiler have no auth of their own: whoever reaches ADMIN_ADDR can use them.
	fs.StringEmpty(&s.AdminAddr, "admin-addr", "ADMIN_ADDR", d.AdminAddr, "address serving PPROF and ADMIN_UI, and nothing else, when one is on; keep it private (empty, ADMIN_ADDR= or -admin-addr=: none)")
	fs.Bool(&s.AdminUI.Enabled, "admin-ui", "ADMIN_UI", d.AdminUI.Enabled, "serve the asynqmon queue UI at /ui/ on ADMIN_ADDR; it has no auth of its own")
	fs.Bool(&s.AdminUI.Write, "admin-ui-write", "ADMIN_UI_WRITE", d.AdminUI.Write, "let the queue UI pause queues and delete, run, archive or cancel tasks (default: read-only)")
	fs.String(&s.AdminUI.PrometheusURL, "admin-ui-prometheus-url", "ADMIN_UI_PROMETHEUS_URL", d.AdminUI.PrometheusURL, "base URL of a Prometheus scraping the queue metrics, for the queue UI's charts (empty: none)")
	fs.Bool(&s.Pprof, "pprof", "PPROF", d.Pprof, "serve Go's profiler at /debug/pprof/ on ADMIN_ADDR")
	fs.Secret(&r.keys, "encryption-keys", tasks.EncryptionKeysVar, "", "keys that open end users' sealed credentials: id:base64(32 bytes),… (every key a queued job may be sealed with; the first seals)")
	return fs
}

// ParseSettings reads the worker's flags and environment. Its errors are one line saying what to fix,
// naming the variable to set; they never include a secret. -h writes the usage to usageOut (Main's
// stdout), and -version the build's version; both then return flag.ErrHelp.
func ParseSettings(args []string, lookup func(string) (string, bool), usageOut io.Writer) (Settings, error) {
	s := Settings{Config: worker.DefaultConfig()}
	var r raw
	fs := newFlags(&s, &r, lookup, usageOut)
	f := fs.FlagSet()
	// Not an envflag setting: it has no variable, and is no part of the configuration.
	version := f.Bool("version", false, "print the module version and VCS revision of this build, and exit")
	// The flag package answers a bad flag with the error and then the whole usage; here it is one
	// line, which Main prints.
	badFlag := false
	f.SetOutput(io.Discard)
	f.Usage = func() { badFlag = true } // called for -h and for a bad flag
	err := fs.Parse(args)
	f.SetOutput(usageOut)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprintln(usageOut, "usage: worker [flags]; every flag but -version also reads the environment variable it names")
		fs.PrintDefaults()
		return s, err
	case err != nil && badFlag:
		return s, fmt.Errorf("%w; see worker -h", err)
	case *version:
		fmt.Fprintln(usageOut, buildinfo.Version("worker"))
		return s, flag.ErrHelp
	case err != nil:
		return s, err
	}
	if fs.FlagSet().NArg() > 0 {
		return s, fmt.Errorf("unexpected argument %q: the worker takes flags only", fs.FlagSet().Arg(0))
	}
	redisOpt, err := redisconn.Parse(s.RedisURL)
	if err != nil {
		return s, explainRedis(err)
	}
	if err := s.LogLevel.UnmarshalText([]byte(r.level)); err != nil {
		return s, fmt.Errorf("LOG_LEVEL=%q: want debug, info, warn or error", r.level)
	}
	if s.LogFormat, err = logging.ParseFormat(r.format); err != nil {
		return s, fmt.Errorf("LOG_FORMAT=%v", err)
	}
	if s.LogRepeat < 0 {
		return s, errors.New("LOG_REPEAT_INTERVAL must not be negative")
	}
	if s.LogFlush < 0 {
		return s, errors.New("LOG_FLUSH_INTERVAL must not be negative")
	}
	if err := auth(&s, r); err != nil {
		return s, err
	}
	if s.Keys, err = tasks.ParseKeyring(r.keys); err != nil {
		return s, err
	}
	s.NoRedisRestartGuard = !r.guard
	// As worker.New does: a setting whose zero means "not set" (DLQ_SWEEP_INTERVAL=0, say) takes its
	// default; a negative one is left for Validate to refuse.
	s.Config = s.WithDefaults()
	if err := s.Validate(); err != nil {
		return s, explain(err)
	}
	if s.AdminUI.Enabled {
		// Its own connection, so that browsing cannot starve the worker's pool.
		s.AdminUI.Redis = redisOpt
	}
	return s, nil
}

// auth sets the Versori credentials from the variables that carry them.
func auth(s *Settings, r raw) error {
	switch {
	case r.apiKey != "" && (r.keyID != "" || r.keyFile != ""):
		return errors.New("set either VERSORI_API_KEY or VERSORI_SIGNING_KEY_ID with VERSORI_SIGNING_KEY_FILE, not both")
	case r.apiKey != "":
		s.Versori.Auth = versori.APIKey(r.apiKey)
	case r.keyID != "" && r.keyFile != "":
		key, err := versori.LoadSigningKey(r.keyFile)
		if err != nil {
			return fmt.Errorf("VERSORI_SIGNING_KEY_FILE: %w", err)
		}
		a, err := versori.NewJWTAuth(r.keyID, key)
		if err != nil {
			return err
		}
		s.Versori.Auth, s.PerUserAuth = a, true
	case r.keyID != "" || r.keyFile != "":
		return errors.New("JWT auth needs both VERSORI_SIGNING_KEY_ID and VERSORI_SIGNING_KEY_FILE")
	default:
		return errors.New("no Versori credentials: set VERSORI_API_KEY, or VERSORI_SIGNING_KEY_ID and VERSORI_SIGNING_KEY_FILE")
	}
	return nil
}

// Main runs a worker process: it parses args and the environment, runs until ctx is done, and
// returns the process's exit code (2 for a configuration error). -h and -version write to stdout and
// return 0; errors and the log go to stderr. It sets up the process's log, the libraries' loggers
// included (logging.Install), before it opens Redis; and it serves METRICS_ADDR from the start, so
// that /healthz answers while it waits for Redis, and /readyz says 503 until the worker has started;
// ADMIN_ADDR, when the profiler or the queue UI is on, is opened then too.
func Main(ctx context.Context, args []string, lookup func(string) (string, bool), stdout, stderr io.Writer) int {
	s, err := ParseSettings(args, lookup, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "worker:", err)
		return 2
	}
	repeat := s.LogRepeat
	if repeat == 0 {
		repeat = -1 // every one
	}
	log, stopLog := logging.New(stderr, logging.Options{Format: s.LogFormat, Level: s.LogLevel, Flush: s.LogFlush, Repeat: repeat})
	defer stopLog()
	logging.Install(log)
	s.Logger = log
	rdb, err := redisconn.Open(s.RedisURL)
	if err != nil {
		fmt.Fprintln(stderr, "worker:", explainRedis(err))
		return 2
	}
	defer rdb.Close()
	if s.Pprof || s.AdminUI.Enabled {
		// Opened now, as METRICS_ADDR is, so that a taken address stops the process before it waits
		// for Redis; the worker serves it.
		ln, err := net.Listen("tcp", s.AdminAddr)
		if err != nil {
			stopLog()
			fmt.Fprintln(stderr, "worker:", explain(configerr.New("worker", "AdminAddr", "%s cannot be listened on: %v", s.AdminAddr, err)))
			return 2
		}
		s.AdminListener = ln
	}
	if s.MetricsAddr != "" {
		ms, err := metrics.Starting(s.MetricsAddr, "the worker has not started: it waits for Redis to answer")
		if err != nil {
			stopLog()
			fmt.Fprintln(stderr, "worker:", explain(configerr.New("worker", "MetricsAddr", "%s cannot be listened on: %v", s.MetricsAddr, err)))
			return 2
		}
		stopMetrics := serveMetrics(ms, log)
		defer stopMetrics() // after the worker's shutdown, as when the worker served it itself
		s.MetricsServer = ms
	}
	if err := waitForRedis(ctx, rdb, s.RedisURL, log); err != nil {
		if ctx.Err() != nil {
			log.Info("stopped before Redis answered")
			return 0
		}
		stopLog() // what was logged before the one line saying what to fix
		fmt.Fprintln(stderr, "worker:", explainRedis(err))
		return 2
	}
	w, err := worker.New(rdb, s.Config)
	if err != nil {
		stopLog()
		fmt.Fprintln(stderr, "worker:", explain(err))
		return 2
	}
	log.Info("connected to Redis", "redis", redisconn.Redacted(s.RedisURL), "versori", s.Versori.BaseURL)
	if err := w.Run(ctx); err != nil {
		log.Error("worker failed", "error", err.Error())
		return 1
	}
	return 0
}

// serveMetrics serves ms until the returned stop is called, which waits for it to shut down.
func serveMetrics(ms *metrics.Server, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := ms.Serve(ctx); err != nil {
			log.Error("metrics server failed", "addr", ms.Addr(), "error", err.Error())
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// redisWait is how long the worker waits between PINGs while Redis does not answer at start.
const redisWait = time.Second

// waitForRedis returns once Redis answers a PING on the configured database, so that the worker
// says it started only once it can work. What Redis refuses of REDIS_URL (a database it does not
// have, the password) is a bad setting, returned at once; a Redis that does not answer is waited for,
// as one warning repeated (logging collapses its repeats into a count), until ctx is done.
func waitForRedis(ctx context.Context, rdb redis.UniversalClient, url string, log *slog.Logger) error {
	for {
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := rdb.Ping(pctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		if refused := redisconn.Refused(url, err); refused != nil {
			return refused
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		log.Warn("waiting for Redis: it does not answer", "redis", redisconn.Redacted(url), "error", err.Error())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(redisWait):
		}
	}
}

// explain names the variable behind a worker.Config field that Validate (or New) refused.
func explain(err error) error {
	var s Settings
	fs := newFlags(&s, &raw{}, noEnv, io.Discard)
	return envflag.Explain(err, fs.Fields(&s.Config))
}

// explainRedis names REDIS_URL in a redisconn error, which names the URL it was given.
func explainRedis(err error) error {
	v, _ := newFlags(&Settings{}, &raw{}, noEnv, io.Discard).Lookup("REDIS_URL")
	return envflag.Explain(err, map[string]envflag.Var{"URL": v})
}

func noEnv(string) (string, bool) { return "", false }

// Vars lists the worker's settings: variable, flag and default.
func Vars() []envflag.Var {
	return newFlags(&Settings{}, &raw{}, noEnv, io.Discard).Vars()
}
