package worker

import (
	"net/http"
	"net/http/pprof"
	"strings"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/tasks"
)

// AdminUIPath is where the queue UI is served on the MetricsAddr listener (pages and its JSON API
// under /ui/api/).
const AdminUIPath = "/ui/"

// AdminUI configures asynqmon's queue web UI, served at AdminUIPath on the MetricsAddr listener next
// to /metrics, /healthz and /readyz. It is off unless Enabled.
//
// The UI has no authentication or authorisation of its own: anyone who can reach MetricsAddr sees
// every queued task with its payload (end-user and connection ids; end users' credentials are
// withheld), and with Write can pause the
// queue and delete, run, archive or cancel tasks. Bind METRICS_ADDR to a private interface (or put an
// authenticating proxy in front of it) before turning the UI on; never expose it publicly.
type AdminUI struct {
	Enabled bool
	// Write allows the UI's mutating actions. Without it (the default) the UI is read-only:
	// asynqmon answers every API request other than GET with 405 Method Not Allowed.
	Write bool
	// Redis is how the UI connects to Redis: it opens its own client and inspector with it, so that
	// browsing cannot starve the worker's connection pool. The worker command builds it from REDIS_URL;
	// nil shares the worker's client.
	Redis asynq.RedisConnOpt
	// PrometheusURL, if set, is the base URL of a Prometheus that scrapes the workers' asynq queue
	// metrics (QUEUE_METRICS); the UI's metrics page draws its charts from it. The worker, not the
	// browser, queries it.
	PrometheusURL string
}

// sharedRedis hands asynqmon the worker's own client; the UI must then never be closed, since
// closing it would close that client.
type sharedRedis struct{ c redis.UniversalClient }

func (s sharedRedis) MakeRedisClient() any { return s.c }

// adminHandlers returns the extra routes of the MetricsAddr listener: the profiler and the queue UI
// when they are on.
// w.closeAdmin releases the UI's own Redis connections.
func (w *Worker) adminHandlers() map[string]http.Handler {
	extra := map[string]http.Handler{}
	if w.cfg.Pprof {
		// pprof.Index serves the named profiles (allocs, heap, goroutine, …) under its prefix.
		extra["/debug/pprof/"] = http.HandlerFunc(pprof.Index)
		extra["/debug/pprof/profile"] = http.HandlerFunc(pprof.Profile)
		extra["/debug/pprof/trace"] = http.HandlerFunc(pprof.Trace)
		extra["/debug/pprof/symbol"] = http.HandlerFunc(pprof.Symbol)
		extra["/debug/pprof/cmdline"] = http.HandlerFunc(pprof.Cmdline)
	}
	ui := w.cfg.AdminUI
	if !ui.Enabled {
		return extra
	}
	opt := ui.Redis
	if opt == nil {
		opt = sharedRedis{w.rdb}
	}
	h := asynqmon.New(asynqmon.Options{
		RootPath:          strings.TrimSuffix(AdminUIPath, "/"),
		RedisConnOpt:      opt,
		ReadOnly:          !ui.Write,
		PrometheusAddress: ui.PrometheusURL,
		PayloadFormatter:  asynqmon.PayloadFormatterFunc(uiPayload),
	})
	if ui.Redis != nil {
		w.closeUI = func() { _ = h.Close() }
	}
	// asynqmon routes on the full path under its RootPath, so it is mounted with the prefix.
	extra[AdminUIPath] = h
	if ui.Write {
		w.log.Warn("queue UI is on with write actions: it has no auth of its own; keep METRICS_ADDR private", "path", AdminUIPath)
	} else {
		w.log.Info("queue UI is on, read-only: it has no auth of its own; keep METRICS_ADDR private", "path", AdminUIPath)
	}
	return extra
}

// uiPayload is a task's payload as the queue UI shows it: end users' credentials withheld, sealed
// or not (tasks.RedactPayload).
func uiPayload(_ string, payload []byte) string {
	if b, ok := tasks.RedactPayload(payload); ok {
		return string(b)
	}
	return "(not shown: not an activation job's JSON, so what in it is secret cannot be told)"
}

// closeAdmin releases the queue UI's Redis connections, if it opened any.
func (w *Worker) closeAdmin() {
	if w.closeUI != nil {
		w.closeUI()
		w.closeUI = nil
	}
}
