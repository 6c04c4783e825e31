package intake

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus metrics, on a registry of their own. No label holds a user
// id, a task id or any other unbounded value.
type metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec   // route, code
	enqueue  *prometheus.HistogramVec // outcome
	inFlight prometheus.Gauge
	evict    *prometheus.GaugeVec // policy
}

// Values of intake_enqueue_duration_seconds's outcome label besides the producer's statuses.
const outcomeError = "error"

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "intake_requests_total",
			Help: "HTTP requests answered by the intake, by route pattern and status code.",
		}, []string{"route", "code"}),
		enqueue: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "intake_enqueue_duration_seconds",
			Help:    "Duration of one enqueue into the queue, by outcome: enqueued, duplicate, dead_lettered or error.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"outcome"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "intake_in_flight_requests",
			Help: "/v1 requests being handled now; more than the configured maximum are answered 429.",
		}),
		// The worker's metric, under its name: an intake may use a Redis other than the workers',
		// and one expression can alert on both.
		evict: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "activator_redis_eviction_policy",
			Help: "1 for Redis's maxmemory-policy (\"unknown\" when CONFIG GET is refused), re-read every minute; anything but noeviction lets a full Redis silently drop queued jobs and dead letters.",
		}, []string{"policy"}),
	}
	m.registry.MustRegister(m.requests, m.enqueue, m.inFlight, m.evict)
	for _, o := range []string{"enqueued", "duplicate", "dead_lettered", outcomeError} {
		m.enqueue.WithLabelValues(o)
	}
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// setEvictionPolicy makes policy the one series of activator_redis_eviction_policy.
func (m *metrics) setEvictionPolicy(policy string) {
	m.evict.Reset()
	m.evict.WithLabelValues(policy).Set(1)
}

func (m *metrics) observeEnqueue(outcome string, start time.Time) {
	m.enqueue.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
}

// instrument counts every request served by mux by the pattern it matched ("unmatched" for none).
func (m *metrics) instrument(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, pattern := mux.Handler(r)
		route := "unmatched"
		if pattern != "" {
			// "POST /v1/activations" -> "/v1/activations"
			if i := strings.IndexByte(pattern, ' '); i >= 0 {
				pattern = pattern[i+1:]
			}
			route = pattern
		}
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		mux.ServeHTTP(rec, r)
		m.requests.WithLabelValues(route, strconv.Itoa(rec.code)).Inc()
	})
}

// statusRecorder remembers the status code written through it.
type statusRecorder struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.code, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }
