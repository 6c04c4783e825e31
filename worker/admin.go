package worker

import (
	"context"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/background"
	"github.com/versori/activator/internal/configerr"
	"github.com/versori/activator/tasks"
)

// AdminUIPath is where the queue UI is served on the AdminAddr listener (pages and its JSON API
// under /ui/api/).
const AdminUIPath = "/ui/"

// DefaultAdminAddr is where the admin listener (Pprof, AdminUI) binds by default: loopback only,
// since neither has auth of its own.
const DefaultAdminAddr = "127.0.0.1:9465"

// AdminUI configures asynqmon's queue web UI, served at AdminUIPath on the AdminAddr listener, apart
// from the metrics and probes of MetricsAddr, which scrapers and load balancers reach. It is off
// unless Enabled.
//
// The UI has no authentication or authorisation of its own: anyone who can reach AdminAddr sees
// every queued task with its payload (end-user and connection ids; end users' credentials are
// withheld), and with Write can pause the
// queue and delete, run, archive or cancel tasks. Keep ADMIN_ADDR on loopback (its default) or a
// private interface, or put an authenticating proxy in front of it; never expose it publicly.
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

// adminHandlers returns the routes of the AdminAddr listener: the profiler and the queue UI when
// they are on. w.closeAdmin releases the UI's own Redis connections.
func (w *Worker) adminHandlers() *http.ServeMux {
	mux := http.NewServeMux()
	if w.cfg.Pprof {
		// pprof.Index serves the named profiles (allocs, heap, goroutine, …) under its prefix.
		// /debug/pprof/cmdline is served too: no secret is ever on the command line (envflag.Secret).
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	}
	ui := w.cfg.AdminUI
	if !ui.Enabled {
		return mux
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
	mux.Handle(AdminUIPath, h)
	if ui.Write {
		w.log.Warn("queue UI is on with write actions: it has no auth of its own; keep ADMIN_ADDR private", "path", AdminUIPath)
	} else {
		w.log.Info("queue UI is on, read-only: it has no auth of its own; keep ADMIN_ADDR private", "path", AdminUIPath)
	}
	return mux
}

// adminOn reports whether anything is served on the admin listener.
func (c Config) adminOn() bool { return c.Pprof || c.AdminUI.Enabled }

// listenAdmin opens the admin listener when the profiler or the queue UI is on: the caller's
// (Config.AdminListener) or one on AdminAddr.
func (w *Worker) listenAdmin() error {
	if !w.cfg.adminOn() {
		if w.cfg.AdminListener != nil {
			_ = w.cfg.AdminListener.Close()
		}
		return nil
	}
	ln := w.cfg.AdminListener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", w.cfg.AdminAddr); err != nil {
			return configerr.New("worker", "AdminAddr", "%s cannot be listened on: %v", w.cfg.AdminAddr, err)
		}
	}
	w.admin = &http.Server{
		Handler: w.adminHandlers(),
		// No WriteTimeout: a CPU profile or trace streams for as long as it was asked to.
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second,
	}
	w.adminLn = ln
	return nil
}

// serveAdmin serves the admin listener until ctx is done, then shuts it down within five seconds.
func (w *Worker) serveAdmin(ctx context.Context) error {
	return background.Serve(ctx, w.admin, w.adminLn, 5*time.Second)
}

// AdminAddr is the address the profiler and the queue UI are served on, once New has returned;
// "" when neither is on.
func (w *Worker) AdminAddr() string {
	if w.adminLn == nil {
		return ""
	}
	return w.adminLn.Addr().String()
}

// uiPayload is a task's payload as the queue UI shows it: end users' credentials withheld, sealed
// or not (tasks.RedactPayload).
func uiPayload(_ string, payload []byte) string {
	if b, ok := tasks.RedactPayload(payload); ok {
		return string(b)
	}
	return "(not shown: not an activation job's JSON, so what in it is secret cannot be told)"
}

// closeAdmin releases the queue UI's Redis connections, if it opened any. The listener itself is
// closed by serveAdmin's shutdown, or by start when the worker does not start.
func (w *Worker) closeAdmin() {
	if w.closeUI != nil {
		w.closeUI()
		w.closeUI = nil
	}
}

// stopAdmin undoes listenAdmin for a worker that does not start.
func (w *Worker) stopAdmin() {
	if w.adminLn != nil {
		_ = w.adminLn.Close()
	}
	w.closeAdmin()
}
