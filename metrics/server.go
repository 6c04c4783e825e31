package metrics

import (
	"context"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/versori/activator/internal/background"
)

// Server serves /metrics, /healthz (the process is alive) and /readyz (its dependencies answer), and
// nothing else: this listener is reached by scrapers and probes, so the profiler and the queue UI
// have a listener of their own (worker.Config.AdminAddr).
// A Server from Starting answers /healthz at once and /readyz with 503 until Install gives it the
// rest, so that a process waiting for its dependencies at start is seen alive and not ready.
type Server struct {
	srv     *http.Server
	ln      net.Listener
	handler atomic.Pointer[http.Handler]
}

// Listen binds addr and returns a Server ready to Serve. ready is called by /readyz with a short
// deadline; a non-nil error answers 503 with the error's text.
func Listen(addr string, gatherer prometheus.Gatherer, ready func(context.Context) error) (*Server, error) {
	s, err := Starting(addr, "starting")
	if err != nil {
		return nil, err
	}
	s.Install(gatherer, ready)
	return s, nil
}

// Starting binds addr and returns a Server ready to Serve that answers /healthz with 200 and every
// other path (/readyz, /metrics) with 503 and "not ready: " and why, until Install.
func Starting(addr, why string) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", healthz)
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
	})
	var h http.Handler = mux
	s.handler.Store(&h)
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { (*s.handler.Load()).ServeHTTP(w, r) }),
		ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second,
	}
	return s, nil
}

// Install replaces what the server answers, while it serves: /metrics from gatherer, /healthz, and
// /readyz from ready (called with a short deadline; a non-nil error answers 503 with its text).
func (s *Server) Install(gatherer prometheus.Gatherer, ready func(context.Context) error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", healthz)
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	var h http.Handler = mux
	s.handler.Store(&h)
}

func healthz(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) }

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Serve serves until ctx is done, then shuts down within five seconds.
func (s *Server) Serve(ctx context.Context) error {
	return background.Serve(ctx, s.srv, s.ln, 5*time.Second)
}
