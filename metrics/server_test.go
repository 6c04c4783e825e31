package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/versori/activator/metrics"
)

// TestStartingThenInstall checks a Server opened before its process can work: /healthz 200, /readyz
// and /metrics 503 saying why; after Install, the routes it was given, on the same listener.
func TestStartingThenInstall(t *testing.T) {
	t.Parallel()
	srv, err := metrics.Starting("127.0.0.1:0", "waiting for Redis")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + srv.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	check := func(when, path string, code int, body string) {
		t.Helper()
		if c, b := get(path); c != code || body != "" && b != body {
			t.Errorf("%s: GET %s = %d %q, want %d %q", when, path, c, b, code, body)
		}
	}
	check("starting", "/healthz", 200, "ok\n")
	check("starting", "/readyz", 503, "not ready: waiting for Redis\n")
	check("starting", "/metrics", 503, "not ready: waiting for Redis\n")

	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "installed_total"}))
	var up atomic.Bool
	srv.Install(reg, func(context.Context) error {
		if !up.Load() {
			return errors.New("down")
		}
		return nil
	})
	check("installed", "/healthz", 200, "ok\n")
	check("installed, not ready", "/readyz", 503, "not ready: down\n")
	check("installed: metrics and probes only", "/debug/pprof/", 404, "404 page not found\n")
	if c, b := get("/metrics"); c != 200 || !strings.Contains(b, "installed_total 0") {
		t.Errorf("installed: GET /metrics = %d %q", c, b)
	}
	up.Store(true)
	check("installed, ready", "/readyz", 200, "ok\n")
}
