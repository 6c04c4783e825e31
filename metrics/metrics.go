// Package metrics defines the worker's Prometheus metrics and serves them with health and readiness
// probes. The metric names and labels are an interface: dashboards and alerts depend on them. No
// label holds a user id, an integration id or any other unbounded value.
package metrics

import (
	"math"
	"time"

	"github.com/hibiken/asynq"
	asynqmetrics "github.com/hibiken/asynq/x/metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

// Job results, the values of activator_activations_total's result label, and the batch count fields
// of jobs that ended so.
const (
	ResultActivated     = "activated"      // activate or update: this job activated the pair
	ResultAlreadyActive = "already_active" // activate: the pair was found active
	// ResultVariablesUpdated: update found the pair active and set its dynamic variables.
	ResultVariablesUpdated = "variables_updated"
	ResultDeactivated      = "deactivated"      // deactivate: this job deleted the pair's activation
	ResultAlreadyInactive  = "already_inactive" // deactivate: the pair had no activation
	// ResultSuperseded: a later operation on the pair was enqueued; the job made no call.
	ResultSuperseded = "superseded"
)

// Results lists every job result.
func Results() []string {
	return []string{ResultActivated, ResultAlreadyActive, ResultVariablesUpdated, ResultDeactivated, ResultAlreadyInactive, ResultSuperseded}
}

// Worker holds the worker's metrics.
type Worker struct {
	Activations     *prometheus.CounterVec
	DeadLetters     *prometheus.CounterVec
	Attempts        *prometheus.CounterVec
	JobDuration     *prometheus.HistogramVec
	VersoriRequests *prometheus.CounterVec
	VersoriDuration *prometheus.HistogramVec
	QueuePaused     prometheus.Gauge
	RateLimitWaits  prometheus.Histogram
	BreakerState    prometheus.Gauge
	// DuplicateActivations counts look-ups that found a pair with more than one activation.
	DuplicateActivations prometheus.Counter
	// RetryAfterCapped counts 429s whose Retry-After was longer than the most a job waits.
	RetryAfterCapped prometheus.Counter
	// RedisRestarts counts the times a worker found that Redis had restarted or failed over since it
	// last looked, and so may have lost its latest writes.
	RedisRestarts prometheus.Counter
	// RedisEvictionPolicy is 1 for Redis's maxmemory-policy ("unknown" when CONFIG GET is refused),
	// the one series present; anything but noeviction lets a full Redis drop queued jobs.
	RedisEvictionPolicy *prometheus.GaugeVec
	// EndUsersCreated counts jobs that created their end user (a 409 "already exists" included).
	EndUsersCreated prometheus.Counter
	Registry        *prometheus.Registry

	// The children every successful job records, looked up once: a label lookup hashes its values
	// and takes a lock, five times per job.
	okAttempts  prometheus.Counter
	okDuration  prometheus.Observer
	activated   prometheus.Counter
	activateOK  [2]prometheus.Counter // activate calls answered 200 and 201
	activateDur prometheus.Observer
}

// NewWorker creates the worker's metrics on a registry of their own, with Go and process collectors,
// and with every known label value initialised so that rates start at zero rather than absent.
func NewWorker() *Worker {
	reg := prometheus.NewRegistry()
	m := &Worker{
		Registry: reg,
		Activations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "activator_activations_total",
			Help: "Jobs that ended done, by result: activated, already_active, variables_updated, deactivated, already_inactive, or superseded (a later operation on the pair was enqueued; no call made).",
		}, []string{"result"}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "activator_dead_letters_total",
			Help: "Jobs newly put in the dead-letter store, by reason.",
		}, []string{"reason"}),
		Attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "activator_job_attempts_total",
			Help: "Job attempts by outcome class, retries included.",
		}, []string{"class"}),
		JobDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "activator_job_duration_seconds",
			Help:    "Duration of one job attempt, by outcome class.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"class"}),
		VersoriRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "activator_versori_requests_total",
			Help: "Calls to the Versori Embedded API by operation and HTTP status code (\"error\" when no response arrived).",
		}, []string{"operation", "code"}),
		VersoriDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "activator_versori_request_duration_seconds",
			Help:    "Duration of calls to the Versori Embedded API, by operation.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"operation"}),
		QueuePaused: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "activator_queue_paused",
			Help: "1 while the queue is paused (by a worker after the API refused the key, or by an operator), else 0.",
		}),
		RateLimitWaits: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "activator_rate_limit_wait_seconds",
			Help:    "How long calls waited for the global rate limit or a shared 429 back-off (calls that waited only).",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30, 60},
		}),
		BreakerState: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "activator_circuit_breaker_state",
			Help: "The circuit breaker over Versori calls: 0 closed, 1 half-open, 2 open.",
		}),
		DuplicateActivations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "activator_duplicate_activations_total",
			Help: "Look-ups that found a pair with more than one activation (each logged with its ids; activator deletes none).",
		}),
		RetryAfterCapped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "activator_retry_after_capped_total",
			Help: "429 answers whose Retry-After was longer than MAX_RETRY_AFTER, which was waited instead.",
		}),
		RedisRestarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "activator_redis_restarts_total",
			Help: "Times Redis was found restarted or failed over (its run id changed), after which first attempts look up their pair for a while.",
		}),
		EndUsersCreated: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "activator_end_users_created_total",
			Help: "Jobs that created their end user because the API did not know them (an answer that the user already exists counts).",
		}),
		RedisEvictionPolicy: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "activator_redis_eviction_policy",
			Help: "1 for Redis's maxmemory-policy (\"unknown\" when CONFIG GET is refused), re-read every minute; anything but noeviction lets a full Redis silently drop queued jobs and dead letters.",
		}, []string{"policy"}),
	}
	reg.MustRegister(m.RedisEvictionPolicy, m.Activations, m.DeadLetters, m.Attempts, m.JobDuration, m.VersoriRequests, m.VersoriDuration,
		m.QueuePaused, m.RateLimitWaits, m.BreakerState, m.DuplicateActivations, m.RetryAfterCapped, m.RedisRestarts,
		m.EndUsersCreated, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, r := range Results() {
		m.Activations.WithLabelValues(r)
	}
	for _, r := range tasks.Reasons() {
		m.DeadLetters.WithLabelValues(string(r))
	}
	for _, c := range versori.Classes() {
		m.Attempts.WithLabelValues(string(c))
	}
	m.Attempts.WithLabelValues(string(tasks.ClassCircuitOpen))
	m.okAttempts = m.Attempts.WithLabelValues(string(versori.ClassOK))
	m.okDuration = m.JobDuration.WithLabelValues(string(versori.ClassOK))
	m.activated = m.Activations.WithLabelValues(ResultActivated)
	for i := range m.activateOK {
		m.activateOK[i] = m.VersoriRequests.WithLabelValues(versori.OpActivate, versori.StatusLabel(200+i))
	}
	m.activateDur = m.VersoriDuration.WithLabelValues(versori.OpActivate)
	return m
}

// Activated counts one job that ended done, by its result (one of Results).
func (m *Worker) Activated(result string) {
	if result == ResultActivated {
		m.activated.Inc()
		return
	}
	m.Activations.WithLabelValues(result).Inc()
}

// ObserveVersori records one API call; it is the client's versori.Observer.
func (m *Worker) ObserveVersori(op string, status int, took time.Duration) {
	if op == versori.OpActivate {
		if i := status - 200; i >= 0 && i < len(m.activateOK) {
			m.activateOK[i].Inc()
		} else {
			m.VersoriRequests.WithLabelValues(op, versori.StatusLabel(status)).Inc()
		}
		m.activateDur.Observe(took.Seconds())
		return
	}
	m.VersoriRequests.WithLabelValues(op, versori.StatusLabel(status)).Inc()
	m.VersoriDuration.WithLabelValues(op).Observe(took.Seconds())
}

// ObserveAttempt records one job attempt's outcome class and duration.
func (m *Worker) ObserveAttempt(class versori.Class, took time.Duration) {
	if class == versori.ClassOK {
		m.okAttempts.Inc()
		m.okDuration.Observe(took.Seconds())
		return
	}
	m.Attempts.WithLabelValues(string(class)).Inc()
	m.JobDuration.WithLabelValues(string(class)).Observe(took.Seconds())
}

// WatchQueues exports asynq's queue metrics (asynq_tasks_enqueued_total{queue,state}, a gauge despite
// its name, asynq_queue_latency_seconds, asynq_queue_paused_total, ...). Each scrape runs a Lua scan
// per queue in Redis, so this is the one place it is registered, and a worker registers it only when
// configured to (QUEUE_METRICS).
func (m *Worker) WatchQueues(insp *asynq.Inspector) {
	m.Registry.MustRegister(asynqmetrics.NewQueueMetricsCollector(insp))
}

// WatchDeadLetterStore exports the dead-letter store's size, read from count at each scrape.
func (m *Worker) WatchDeadLetterStore(count func() (int64, error)) {
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "activator_dead_letter_store_size",
		Help: "Dead letters in the store (all reasons), waiting for a person to requeue or purge them.",
	}, func() float64 {
		n, err := count()
		if err != nil {
			return math.NaN()
		}
		return float64(n)
	}))
}

// SetRedisEvictionPolicy makes policy the one series of activator_redis_eviction_policy.
func (m *Worker) SetRedisEvictionPolicy(policy string) {
	m.RedisEvictionPolicy.Reset()
	m.RedisEvictionPolicy.WithLabelValues(policy).Set(1)
}
