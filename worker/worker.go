// Package worker runs activation jobs: it wires the Versori client, the job handler, the dead-letter
// store, the archive sweeper and the metrics server around one or more asynq servers, and shuts them
// down so that no call in flight is lost or repeated.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"

	"github.com/versori/activator/internal/background"
	"github.com/versori/activator/internal/batch"
	"github.com/versori/activator/internal/breaker"
	"github.com/versori/activator/internal/configerr"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/pairorder"
	"github.com/versori/activator/internal/pairs"
	"github.com/versori/activator/internal/queuestate"
	"github.com/versori/activator/internal/ratelimit"
	"github.com/versori/activator/internal/redisevict"
	"github.com/versori/activator/internal/redisguard"
	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/results"
	"github.com/versori/activator/metrics"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

// Worker is a running worker.
type Worker struct {
	cfg       Config
	rdb       redis.UniversalClient
	log       *slog.Logger
	metrics   *metrics.Worker
	store     *deadletter.Store
	inspector *asynq.Inspector
	sweeper   *sweeper
	servers   []*asynq.Server
	mserver   *metrics.Server
	interrupt context.CancelFunc
	batches   *batch.Counter
	results   *results.Writer
	gate      *ratelimit.Gate
	breaker   *breaker.Breaker
	state     *queuestate.Controller
	client    *versori.Client
	keys      *keyChecker
	guard     *redisguard.Guard
	evict     *redisevict.Watcher
	pairs     *pairs.Registry
	handler   *handler
	closeUI   func()
	admin     *http.Server // serves adminLn, when the profiler or the queue UI is on
	adminLn   net.Listener
}

// New wires a worker on rdb. Zero fields of cfg take their defaults (Config.WithDefaults); the
// rest must pass Config.Validate. The caller keeps ownership of rdb.
func New(rdb redis.UniversalClient, cfg Config) (*Worker, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	w := &Worker{cfg: cfg, rdb: rdb, log: cfg.Logger, state: queuestate.New(rdb, cfg.Queue), pairs: pairs.New(rdb)}

	w.metrics = metrics.NewWorker()
	w.store = deadletter.NewStore(rdb, cfg.Queue)
	w.metrics.WatchDeadLetterStore(func() (int64, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return w.store.Count(ctx, "")
	})
	w.inspector = asynq.NewInspectorFromRedisClient(rdb)
	if cfg.QueueMetrics {
		w.metrics.WatchQueues(w.inspector)
	}
	interruptCtx, interrupt := context.WithCancel(context.Background())
	w.interrupt = interrupt
	// On the client asynq shares: a second worker on the same client adds a second hook, which
	// is harmless (the inner one has already retried as long as the outer one would).
	rdb.AddHook(jobEndRetry{stop: interruptCtx, every: 250 * time.Millisecond, log: w.log})
	w.guard = redisguard.New(rdb, redisguard.Config{Queue: cfg.Queue, Off: cfg.NoRedisRestartGuard,
		Logger: w.log, OnChange: w.metrics.RedisRestarts.Inc})
	w.evict = redisevict.NewWatcher(rdb, w.log, func(s redisevict.Status) { w.metrics.SetRedisEvictionPolicy(s.Policy) })
	w.batches = batch.NewCounter(rdb, cfg.Queue, batch.Config{})
	w.results = results.New(rdb, results.Config{Logger: w.log})
	w.sweeper = newSweeper(w.inspector, w.store, cfg.Queue, w.metrics, w.log)
	w.sweeper.batches, w.sweeper.keys = w.batches, cfg.Keys

	gate, err := ratelimit.New(rdb, ratelimit.Config{Rate: cfg.RateLimit, Burst: cfg.RateBurst, Window: cfg.RateWindow, Queue: cfg.Queue,
		Observe: func(d time.Duration) { w.metrics.RateLimitWaits.Observe(d.Seconds()) }})
	if err != nil {
		return nil, err
	}
	w.gate = gate
	bcfg := cfg.Breaker
	bcfg.OnStateChange = func(from, to gobreaker.State) {
		w.metrics.BreakerState.Set(float64(to))
		w.log.Warn("circuit breaker "+to.String(), "from", from.String(), "cooldown", w.breaker.Cooldown().String())
	}
	w.breaker = breaker.New(bcfg)

	vcfg := cfg.Versori
	vcfg.Observe = w.metrics.ObserveVersori
	vcfg.Concurrency = cfg.Concurrency
	vcfg.Limiter = gate
	client, err := versori.New(vcfg)
	if err != nil {
		return nil, err
	}
	w.client = client
	w.keys = &keyChecker{client: client, ttl: keyCheckTTL, rdb: rdb}
	if cfg.PerUserAuth {
		w.keys.userKey = rediskeys.ProbeUser(cfg.Queue)
	}
	h, err := newHandler(handlerConfig{
		Client: client, Store: w.store, Metrics: w.metrics, Logger: w.log,
		Policy: cfg.Policy, PerUserAuth: cfg.PerUserAuth, Pause: w.pauseQueue, CheckKey: w.keys.Check, KeyWorked: w.keys.Worked,
		LookFirst: w.guard.LookFirst, Interrupt: interruptCtx,
		Breaker: w.breaker, Backoff: gate.Backoff, MaxAge: cfg.MaxAge, Batches: w.batches, Results: w.results,
		Keys: cfg.Keys, Order: pairorder.New(rdb),
	})
	if err != nil {
		return nil, err
	}
	w.handler = h
	mux := asynq.NewServeMux()
	mux.Handle(tasks.TypeActivate, h)
	pol := cfg.Policy
	// The tasks held are shared out exactly, the first servers taking one more when they do not
	// divide evenly, and no server is left with none (asynq would run runtime.NumCPU() for it).
	held := cfg.Concurrency + max(cfg.Prefetch, 0)
	servers := min(cfg.Servers, held)
	for i := range servers {
		share := held / servers
		if i < held%servers {
			share++
		}
		srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
			Concurrency:    share,
			Queues:         map[string]int{cfg.Queue: 1},
			RetryDelayFunc: pol.RetryDelay,
			IsFailure:      isFailure,
			// Handlers return by ShutdownGrace (their calls are cut short then), well before asynq
			// would requeue their tasks with a retry count of zero.
			ShutdownTimeout:          cfg.ShutdownGrace + 10*time.Second,
			DelayedTaskCheckInterval: time.Second,
			TaskCheckInterval:        cfg.PollInterval,
			Logger:                   asynqLogger{w.log},
			LogLevel:                 asynq.WarnLevel,
		})
		w.servers = append(w.servers, srv)
	}
	if err := w.start(mux); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *Worker) start(mux *asynq.ServeMux) error {
	// Before the first job: a Redis that restarted while no worker ran is noticed before its jobs run.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	w.guard.Check(ctx)
	cancel()
	if err := w.listenAdmin(); err != nil {
		return err
	}
	// Before the first job too, so that an evicting Redis is in the log before it can drop a job.
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	_ = w.evict.Check(ctx) // a Redis that does not answer yet is checked again every minute
	cancel()
	switch {
	case w.cfg.MetricsServer != nil:
		w.cfg.MetricsServer.Install(w.metrics.Registry, w.ready)
		w.mserver = w.cfg.MetricsServer
	case w.cfg.MetricsAddr != "":
		ms, err := metrics.Listen(w.cfg.MetricsAddr, w.metrics.Registry, w.ready)
		if err != nil {
			w.stopAdmin()
			return configerr.New("worker", "MetricsAddr", "%s cannot be listened on: %v", w.cfg.MetricsAddr, err)
		}
		w.mserver = ms
	}
	for _, srv := range w.servers {
		if err := srv.Start(mux); err != nil {
			return fmt.Errorf("starting asynq server: %w", err)
		}
	}
	return nil
}

// MetricsAddr is the address metrics are served on, once Run has started.
func (w *Worker) MetricsAddr() string {
	if w.mserver == nil {
		return ""
	}
	return w.mserver.Addr()
}

// Metrics returns the worker's metrics.
func (w *Worker) Metrics() *metrics.Worker { return w.metrics }

// Run processes jobs until ctx is done, then shuts down: it stops fetching, lets calls in flight
// finish within the grace period, cuts the rest short (their jobs are retried after a look-up), sweeps
// the archive a last time and returns.
func (w *Worker) Run(ctx context.Context) error {
	bg := background.NewGroup(w.log)
	if w.mserver != nil && w.cfg.MetricsServer == nil { // not the caller's, which it serves
		bg.Go("metrics server", w.mserver.Serve)
	}
	if w.admin != nil {
		bg.Go("admin server", w.serveAdmin)
	}
	bg.Every("archive sweep", w.cfg.SweepInterval, background.AtOnce, w.sweep)
	bg.Go("shared back-off poll", w.gate.Run)
	bg.Every("key probe", w.cfg.ProbeInterval, background.AfterInterval, w.probe)
	// Re-read, because CONFIG SET or a managed Redis's parameter group can change the policy at any time.
	bg.Every("Redis eviction policy check", evictionCheckInterval, background.AfterInterval, w.evict.Check)
	bg.Go("batch counts", w.batches.Run)
	bg.Go("job results", w.results.Run)
	w.log.Info("worker started", "queue", w.cfg.Queue, "concurrency", w.cfg.Concurrency, "prefetch", w.cfg.Prefetch,
		"servers", len(w.servers), "metrics_addr", w.MetricsAddr(), "admin_addr", w.AdminAddr())

	<-ctx.Done()
	w.log.Info("shutting down: no new jobs; in-flight calls may finish", "grace", w.cfg.ShutdownGrace.String())
	for _, srv := range w.servers {
		srv.Stop()
	}
	cut := time.AfterFunc(w.cfg.ShutdownGrace, w.interrupt)
	var sw sync.WaitGroup
	for _, srv := range w.servers {
		sw.Go(srv.Shutdown)
	}
	sw.Wait()
	cut.Stop()
	w.interrupt()
	w.handler.wait() // the pair turns given back behind the last jobs

	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := w.sweeper.Sweep(sctx); err != nil {
		w.log.Warn("final archive sweep failed", "error", err.Error())
	}
	// After the last sweep, whose dead letters the batch counts' last flush then writes.
	bg.Stop()
	w.closeAdmin()
	w.log.Info("worker stopped")
	return nil
}

// sweep copies the archive into the dead-letter store, applies the retention and refreshes the
// paused gauge.
func (w *Worker) sweep(ctx context.Context) error {
	n, err := w.sweeper.Sweep(ctx)
	if err == nil && n > 0 {
		w.log.Info("archive sweep stored dead letters", "count", n)
	}
	w.trim(ctx)
	w.refreshPaused()
	return err
}

// trim applies the dead-letter retention an operator configured, if any.
func (w *Worker) trim(ctx context.Context) {
	if w.cfg.DeadLetterMaxAge <= 0 && w.cfg.DeadLetterMaxEntries <= 0 {
		return
	}
	var before time.Time
	if w.cfg.DeadLetterMaxAge > 0 {
		before = time.Now().Add(-w.cfg.DeadLetterMaxAge)
	}
	ids, err := w.store.Trim(ctx, before, w.cfg.DeadLetterMaxEntries)
	if err != nil {
		w.log.Warn("dead-letter retention failed", "error", err.Error())
		return
	}
	if len(ids) == 0 {
		return
	}
	w.log.Info("dead-letter retention removed entries", "count", len(ids))
	// As a purge does: the pairs may be queued again, on any queue, looking first.
	if _, err := w.pairs.Release(ctx, w.cfg.Queue, ids); err != nil {
		w.log.Warn("dead-letter retention could not release its pairs", "error", err.Error())
	}
}

func (w *Worker) refreshPaused() {
	paused, _, err := w.state.Paused(context.Background())
	if err != nil {
		return
	}
	if paused {
		w.metrics.QueuePaused.Set(1)
	} else {
		w.metrics.QueuePaused.Set(0)
	}
}

func (w *Worker) ready(ctx context.Context) error {
	if err := w.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

func (w *Worker) pauseQueue(ctx context.Context) error {
	return w.state.Pause(ctx, queuestate.ReasonUnauthorized)
}

// evictionCheckInterval is how often Redis's maxmemory-policy is read again.
const evictionCheckInterval = time.Minute

// probeUser is the end user a probe asks about while no end user is known to have worked; whether
// it exists does not matter, only whether the API accepts the key.
const probeUser = "activator-probe"

// keyCheckTTL is how long a probe's verdict on the API key is reused: a burst of refusals costs one
// probe, and a key refused or restored is noticed within it.
const keyCheckTTL = 5 * time.Second

// keyChecker tells whether the API accepts the API key or the signing key, by a probe call: listing
// the activations of an end user needs the key and nothing else.
//
// With per-user tokens the probe's token is for that user. The API documents no answer for a user it
// does not know: 200 (empty), 404, or a refusal of the token, 403 or even 401, alike for a user that
// does not exist and a key it no longer accepts. So the probe asks about the last end user whose
// token was accepted (kept in Redis, for the other workers and the next start), who exists, and only
// without one about a made-up user; for the made-up user a 403 says the token was authenticated and
// the user is not allowed, so the key is accepted: otherwise a single refused user, seen before any
// job worked, would pause the queue with nothing ever to resume it.
type keyChecker struct {
	client  *versori.Client
	ttl     time.Duration
	rdb     redis.UniversalClient
	userKey string // rediskeys.ProbeUser; "" in API-key mode

	mu    sync.Mutex // held during a probe, so that the jobs asking at once share it
	at    time.Time
	state keyState
	// restoredAt is when a probe first found the key accepted after one found it refused: a request
	// sent before then and refused may have been refused for the key, however late its answer.
	restoredAt time.Time

	known   atomic.Pointer[string] // the last end user a token was accepted for
	written atomic.Int64           // when known was last written to Redis (unix ns): once a minute at most
}

// probeUserWriteInterval is how often the last end user that worked is written to Redis: recent
// enough that a user deleted since is unlikely, at one write a minute per worker.
const probeUserWriteInterval = time.Minute

// Worked records that the API accepted a token for userID.
func (k *keyChecker) Worked(ctx context.Context, userID string) {
	if k.userKey == "" || userID == "" {
		return
	}
	if p := k.known.Load(); p == nil || *p != userID {
		k.known.Store(&userID)
	}
	last, now := k.written.Load(), time.Now().UnixNano()
	if (last == 0 || time.Duration(now-last) >= probeUserWriteInterval) && k.written.CompareAndSwap(last, now) {
		if err := k.rdb.Set(ctx, k.userKey, userID, 0).Err(); err != nil {
			k.written.Store(0)
		}
	}
}

// user returns the end user to probe with, and whether that user's token was accepted before.
func (k *keyChecker) user(ctx context.Context) (string, bool) {
	if k.userKey == "" {
		return probeUser, false
	}
	if p := k.known.Load(); p != nil {
		return *p, true
	}
	if u, err := k.rdb.Get(ctx, k.userKey).Result(); err == nil && u != "" {
		k.known.CompareAndSwap(nil, &u)
		return u, true
	}
	return probeUser, false
}

// Check returns the key's state for a refusal of a request sent at sent, probing unless a probe
// answered within the TTL. An accepted key that was refused after sent is keyRestored.
func (k *keyChecker) Check(ctx context.Context, sent time.Time) keyState {
	k.mu.Lock()
	defer k.mu.Unlock()
	st := k.state
	if k.at.IsZero() || time.Since(k.at) >= k.ttl {
		st, _ = k.probeLocked(ctx)
	}
	if st == keyAccepted && sent.Before(k.restoredAt) {
		return keyRestored
	}
	return st
}

// Probe probes now, whatever the last verdict, and returns the key's state and the probe's class.
func (k *keyChecker) Probe(ctx context.Context) (keyState, versori.Class) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.probeLocked(ctx)
}

func (k *keyChecker) probeLocked(ctx context.Context) (keyState, versori.Class) {
	user, known := k.user(ctx)
	_, err := k.client.ListUserActivations(ctx, user, "")
	c := versori.Classify(err)
	st := keyUnknown
	switch c {
	case versori.ClassOK, versori.ClassNotFound:
		st = keyAccepted
	case versori.ClassUnauthorized:
		st = keyRefused
		var ae *versori.Error
		if k.userKey != "" && !known && errors.As(err, &ae) && ae.StatusCode == http.StatusForbidden {
			st = keyAccepted
		}
	}
	if st != keyUnknown {
		if st == keyAccepted && k.state == keyRefused {
			k.restoredAt = time.Now()
		}
		k.at, k.state = time.Now(), st
	}
	return st, c
}

// probe resumes a queue that a worker paused for a refused API key or signing key, once a probe call
// shows the key is accepted again. A queue an operator paused is left alone. It logs what it finds itself.
func (w *Worker) probe(ctx context.Context) error {
	paused, reason, err := w.state.Paused(ctx)
	if err != nil || !paused || reason != queuestate.ReasonUnauthorized {
		return nil
	}
	switch st, c := w.keys.Probe(ctx); st {
	case keyAccepted:
		if err := w.state.Resume(ctx); err != nil {
			w.log.Error("the API key works again, but resuming the queue failed", "error", err.Error())
			return nil
		}
		w.metrics.QueuePaused.Set(0)
		w.log.Warn("the " + w.credential() + " works again: queue resumed")
	case keyRefused:
		attrs := []any{}
		if skew, ok := w.client.ClockSkew(); ok && w.cfg.PerUserAuth {
			attrs = append(attrs, "api_clock_skew", skew.String())
		}
		w.log.Error("the API still refuses the "+w.credential()+": queue stays paused; fix the key (or the clock), and "+
			"the next accepted probe resumes it", attrs...)
	default:
		w.log.Warn("probe of the "+w.credential()+" was inconclusive", "class", string(c))
	}
	return nil
}

// credential names what authenticates the worker's calls, for messages.
func (w *Worker) credential() string {
	if w.cfg.PerUserAuth {
		return "signing key"
	}
	return "API key"
}
