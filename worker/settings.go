package worker

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/versori/activator/internal/envflag"
	"github.com/versori/activator/internal/logbuf"
	"github.com/versori/activator/internal/redisconn"
	"github.com/versori/activator/versori"
)

// Settings is the worker process's whole configuration, read once at start from flags and the
// environment.
type Settings struct {
	RedisURL string
	LogLevel slog.Level
	// LogFlush is how long log lines below warning may wait to be written together; 0 writes each
	// line at once.
	LogFlush time.Duration
	Config
}

// ParseSettings reads the worker's flags and environment. Its errors are one line saying what to fix;
// they never include a secret.
func ParseSettings(args []string, lookup func(string) (string, bool), usageOut io.Writer) (Settings, error) {
	var (
		s                        Settings
		apiKey, keyID, keyFile   string
		level                    string
		timeout                  time.Duration
		retryBase, retryCap, rlw time.Duration
		settle, maxRetryAfter    time.Duration
		quick                    int
	)
	fs := envflag.New("worker", lookup, usageOut)
	// A secret, so that usage output never shows a password the URL took from the environment.
	const defaultRedisURL = "redis://127.0.0.1:6379/0"
	fs.Secret(&s.RedisURL, "redis-url", "REDIS_URL", "Redis URL: redis://[:password@]host:port/db, rediss:// for TLS, redis-sentinel://host:port,…?master=NAME for Sentinel (database 0), redis-cluster://host:port,… for Redis Cluster (default "+defaultRedisURL+")")
	fs.String(&s.Versori.BaseURL, "versori-base-url", "VERSORI_BASE_URL", versori.DefaultBaseURL, "Embedded API base URL")
	fs.Secret(&apiKey, "versori-api-key", "VERSORI_API_KEY", "API key, sent as Authorization: Bearer")
	fs.String(&keyID, "versori-signing-key-id", "VERSORI_SIGNING_KEY_ID", "", "signing key id, for per-end-user JWTs instead of an API key")
	fs.String(&keyFile, "versori-signing-key-file", "VERSORI_SIGNING_KEY_FILE", "", "PKCS#8 PEM file of the signing key")
	fs.String(&s.Versori.HubID, "versori-hub-id", "VERSORI_HUB_ID", "", "hub id, needed to look up a user's activations")
	fs.Duration(&timeout, "versori-timeout", "VERSORI_TIMEOUT", 30*time.Second, "timeout of one API call")
	fs.Int(&s.Concurrency, "concurrency", "WORKER_CONCURRENCY", 50, "API calls in flight in this process at most (it also sizes the HTTP keep-alive pool)")
	fs.Int(&s.Prefetch, "prefetch", "WORKER_PREFETCH", -1, "tasks held beyond WORKER_CONCURRENCY, so that asynq's fetch and completion overlap API calls (-1: a fifth of WORKER_CONCURRENCY, at least 1)")
	fs.Int(&s.Servers, "servers", "WORKER_SERVERS", 1, "asynq servers (fetch loops) in this process")
	fs.String(&s.Queue, "queue", "QUEUE", "activations", "queue name")
	fs.String(&s.MetricsAddr, "metrics-addr", "METRICS_ADDR", ":9464", "address serving /metrics, /healthz and /readyz (empty: none)")
	fs.Bool(&s.QueueMetrics, "queue-metrics", "QUEUE_METRICS", true, "also export asynq's queue metrics (one Redis scan per scrape)")
	fs.Duration(&s.ShutdownGrace, "shutdown-grace", "SHUTDOWN_GRACE", 10*time.Second, "how long in-flight calls may finish after SIGTERM")
	fs.Duration(&s.SweepInterval, "dlq-sweep-interval", "DLQ_SWEEP_INTERVAL", 30*time.Second, "how often asynq's archive is swept into the dead-letter store")
	fs.Duration(&s.DeadLetterMaxAge, "dlq-max-age", "DLQ_MAX_AGE", 0, "remove dead letters older than this (0: keep all)")
	var maxEntries int
	fs.Int(&maxEntries, "dlq-max-entries", "DLQ_MAX_ENTRIES", 0, "keep at most this many dead letters, dropping the oldest (0: no limit)")
	fs.Duration(&s.PollInterval, "poll-interval", "POLL_INTERVAL", time.Second, "how long an idle worker waits before looking for jobs again")
	fs.Duration(&retryBase, "retry-base", "RETRY_BASE", time.Second, "base of the exponential retry backoff")
	fs.Duration(&retryCap, "retry-cap", "RETRY_CAP", 10*time.Minute, "cap of the exponential retry backoff")
	fs.Duration(&rlw, "rate-limit-wait", "RATE_LIMIT_WAIT", 5*time.Second, "wait after a 429 that has no Retry-After")
	fs.Int(&quick, "quick-retries", "QUICK_RETRIES", 2, "transient failures known not to have reached the API (refused connections, 408, 425, failed look-ups) retried inside a job before it goes back to the queue")
	fs.Duration(&settle, "settle-time", "SETTLE_TIME", 2*time.Minute, "after a POST whose outcome is unknown (5xx, timeout, lost connection), wait at least this long before looking the pair up: the API may still commit it; longer than the API's own request timeout behind its gateway")
	fs.Duration(&maxRetryAfter, "max-retry-after", "MAX_RETRY_AFTER", 15*time.Minute, "the longest Retry-After honoured; a longer one is cut to it (logged, and counted in activator_retry_after_capped_total)")
	guard := true
	fs.Bool(&guard, "redis-restart-guard", "REDIS_RESTART_GUARD", true, "after Redis restarts or fails over (and may have lost its latest writes), jobs queued before then look up their pair before activating (false: only for a Redis that loses nothing it acknowledged)")
	fs.Int(&s.RateLimit, "rate-limit", "VERSORI_RATE_LIMIT", 0, "most API calls per second, all workers together (0: no limit)")
	fs.Int(&s.RateBurst, "rate-burst", "VERSORI_RATE_BURST", 1, "calls that may go at once after a quiet spell")
	fs.Duration(&s.MaxAge, "max-job-age", "MAX_JOB_AGE", 24*time.Hour, "dead-letter a job still failing this long after it was enqueued (0: no limit)")
	var minCalls int
	fs.Duration(&s.Breaker.Window, "breaker-window", "BREAKER_WINDOW", 30*time.Second, "how far back the circuit breaker counts calls")
	fs.Int(&minCalls, "breaker-min-calls", "BREAKER_MIN_CALLS", 20, "calls in the window before the breaker may open")
	fs.Float(&s.Breaker.FailureRatio, "breaker-failure-ratio", "BREAKER_FAILURE_RATIO", 0.5, "share of transient failures that opens the breaker")
	fs.Duration(&s.Breaker.Cooldown, "breaker-cooldown", "BREAKER_COOLDOWN", 30*time.Second, "how long the breaker stays open before probing")
	fs.Duration(&s.ProbeInterval, "probe-interval", "PROBE_INTERVAL", 30*time.Second, "how often a queue paused for a refused API key is probed")
	fs.String(&level, "log-level", "LOG_LEVEL", "info", "debug, info, warn or error")
	fs.Duration(&s.LogFlush, "log-flush-interval", "LOG_FLUSH_INTERVAL", 100*time.Millisecond, "how long info and debug lines may wait to be written together (warnings and errors are written at once, with everything before them); 0 writes every line at once")
	// The queue UI has no auth of its own: whoever reaches METRICS_ADDR can use it.
	fs.Bool(&s.AdminUI.Enabled, "admin-ui", "ADMIN_UI", false, "serve the asynqmon queue UI at /ui/ on METRICS_ADDR; it has no auth of its own, so bind METRICS_ADDR to a private interface")
	fs.Bool(&s.AdminUI.Write, "admin-ui-write", "ADMIN_UI_WRITE", false, "let the queue UI pause queues and delete, run, archive or cancel tasks (default: read-only)")
	fs.String(&s.AdminUI.PrometheusURL, "admin-ui-prometheus-url", "ADMIN_UI_PROMETHEUS_URL", "", "base URL of a Prometheus scraping the queue metrics, for the queue UI's charts (empty: none)")
	fs.Bool(&s.Pprof, "pprof", "PPROF", false, "serve Go's profiler at /debug/pprof/ on METRICS_ADDR (keep METRICS_ADDR private)")
	if err := fs.Parse(args); err != nil {
		return s, err
	}
	if s.RedisURL == "" {
		s.RedisURL = defaultRedisURL
	}
	if fs.FlagSet().NArg() > 0 {
		return s, fmt.Errorf("unexpected argument %q: the worker takes flags only", fs.FlagSet().Arg(0))
	}
	redisOpt, err := redisconn.Parse(s.RedisURL)
	if err != nil {
		return s, err
	}
	if s.Pprof && s.MetricsAddr == "" {
		return s, errors.New("PPROF needs METRICS_ADDR: profiles are served on that listener")
	}
	if err := adminUISettings(&s, redisOpt); err != nil {
		return s, err
	}
	if err := s.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return s, fmt.Errorf("LOG_LEVEL=%q: want debug, info, warn or error", level)
	}
	if s.LogFlush < 0 {
		return s, errors.New("LOG_FLUSH_INTERVAL must not be negative")
	}
	switch {
	case apiKey != "" && (keyID != "" || keyFile != ""):
		return s, errors.New("set either VERSORI_API_KEY or VERSORI_SIGNING_KEY_ID with VERSORI_SIGNING_KEY_FILE, not both")
	case apiKey != "":
		s.Versori.Auth = versori.APIKey(apiKey)
	case keyID != "" && keyFile != "":
		key, err := versori.LoadSigningKey(keyFile)
		if err != nil {
			return s, fmt.Errorf("VERSORI_SIGNING_KEY_FILE: %w", err)
		}
		auth, err := versori.NewJWTAuth(keyID, key)
		if err != nil {
			return s, err
		}
		s.Versori.Auth, s.PerUserAuth = auth, true
	case keyID != "" || keyFile != "":
		return s, errors.New("JWT auth needs both VERSORI_SIGNING_KEY_ID and VERSORI_SIGNING_KEY_FILE")
	default:
		return s, errors.New("no Versori credentials: set VERSORI_API_KEY, or VERSORI_SIGNING_KEY_ID and VERSORI_SIGNING_KEY_FILE")
	}
	if s.Versori.HubID == "" {
		return s, errors.New("VERSORI_HUB_ID is required: the worker looks up a user's activations before retrying a call whose outcome is unknown")
	}
	if s.Concurrency < 1 {
		return s, fmt.Errorf("WORKER_CONCURRENCY must be at least 1, got %d", s.Concurrency)
	}
	switch {
	case s.Prefetch == -1:
		s.Prefetch = max(s.Concurrency/5, 1)
	case s.Prefetch < 0:
		return s, fmt.Errorf("WORKER_PREFETCH must be 0 or more (-1: a fifth of WORKER_CONCURRENCY), got %d", s.Prefetch)
	}
	if s.Servers < 1 || s.Servers > 64 {
		return s, fmt.Errorf("WORKER_SERVERS must be 1 to 64, got %d", s.Servers)
	}
	if strings.TrimSpace(s.Queue) == "" {
		return s, errors.New("QUEUE must not be empty")
	}
	if timeout <= 0 || s.ShutdownGrace <= 0 {
		return s, errors.New("VERSORI_TIMEOUT and SHUTDOWN_GRACE must be positive")
	}
	if s.DeadLetterMaxAge < 0 || maxEntries < 0 {
		return s, errors.New("DLQ_MAX_AGE and DLQ_MAX_ENTRIES must not be negative")
	}
	s.DeadLetterMaxEntries = int64(maxEntries)
	if s.RateLimit < 0 || s.RateBurst < 1 {
		return s, errors.New("VERSORI_RATE_LIMIT must not be negative and VERSORI_RATE_BURST must be at least 1")
	}
	if s.MaxAge < 0 {
		return s, errors.New("MAX_JOB_AGE must not be negative")
	}
	if minCalls < 1 || s.Breaker.FailureRatio <= 0 || s.Breaker.FailureRatio > 1 || s.Breaker.Window <= 0 || s.Breaker.Cooldown <= 0 {
		return s, errors.New("BREAKER_MIN_CALLS must be at least 1, BREAKER_FAILURE_RATIO in (0, 1], BREAKER_WINDOW and BREAKER_COOLDOWN positive")
	}
	s.Breaker.MinCalls = uint32(minCalls)
	if s.ProbeInterval <= 0 {
		return s, errors.New("PROBE_INTERVAL must be positive")
	}
	s.Versori.Timeout = timeout
	if retryBase <= 0 || retryCap < retryBase || rlw <= 0 || quick < 0 {
		return s, errors.New("RETRY_BASE and RATE_LIMIT_WAIT must be positive, RETRY_CAP at least RETRY_BASE, QUICK_RETRIES not negative")
	}
	s.Policy.Base, s.Policy.Cap, s.Policy.RateLimitWait, s.Policy.QuickRetries = retryBase, retryCap, rlw, quick
	if settle <= 0 || maxRetryAfter <= 0 {
		return s, errors.New("SETTLE_TIME and MAX_RETRY_AFTER must be positive")
	}
	s.Policy.SettleTime, s.Policy.MaxRetryAfter = settle, maxRetryAfter
	s.NoRedisRestartGuard = !guard
	return s, nil
}

// newLogger returns the worker's JSON logger on out. With a positive flush interval, lines below
// warning are written in batches (one job's line each, thousands a second); stop writes what is left.
func newLogger(out io.Writer, level slog.Level, flush time.Duration) (log *slog.Logger, stop func()) {
	opts := &slog.HandlerOptions{Level: level}
	if flush <= 0 {
		return slog.New(slog.NewJSONHandler(out, opts)), func() {}
	}
	w := logbuf.New(out, logbuf.DefaultSize)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx, flush)
	}()
	return slog.New(logbuf.FlushAt(slog.NewJSONHandler(w, opts), w, slog.LevelWarn)), func() {
		cancel()
		<-done
	}
}

// Main runs a worker process: it parses args and the environment, runs until ctx is done, and
// returns the process's exit code (2 for a configuration error).
func Main(ctx context.Context, args []string, lookup func(string) (string, bool), stderr io.Writer) int {
	s, err := ParseSettings(args, lookup, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "worker:", err)
		return 2
	}
	log, stopLog := newLogger(stderr, s.LogLevel, s.LogFlush)
	defer stopLog()
	s.Logger = log
	rdb, err := redisconn.Open(s.RedisURL)
	if err != nil {
		fmt.Fprintln(stderr, "worker:", err)
		return 2
	}
	defer rdb.Close()
	w, err := New(rdb, s.Config)
	if err != nil {
		fmt.Fprintln(stderr, "worker:", err)
		return 2
	}
	log.Info("connecting", "redis", redisconn.Redacted(s.RedisURL), "versori", s.Versori.BaseURL)
	if err := w.Run(ctx); err != nil {
		log.Error("worker failed", "error", err.Error())
		return 1
	}
	return 0
}
