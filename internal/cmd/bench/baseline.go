package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os/signal"
	"syscall"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/activator/tasks"
)

// BaselineWorker is the plain asynq worker activator is compared with: asynq servers with asynq's
// defaults and the same concurrency, whose handler decodes activator's task payload, POSTs its
// request once to the API and returns nil on a 2xx. No retry policy, reconciliation, rate limit,
// breaker, dead-letter store, metrics, logs per job or batch counts. It runs until SIGTERM or SIGINT
// and returns the exit code.
func BaselineWorker(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench baseline-worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("redis-addr", "127.0.0.1:6379", "Redis address")
	db := fs.Int("redis-db", 13, "Redis database")
	queue := fs.String("queue", "activations", "queue")
	concurrency := fs.Int("concurrency", 50, "jobs in flight per asynq server")
	servers := fs.Int("servers", 1, "asynq servers")
	target := fs.String("target", "", "API base URL (POST {target}/activations)")
	apiKey := fs.String("api-key", "", "sent as Authorization: Bearer")
	pprofAddr := fs.String("pprof-addr", "", "serve Go's profiler at /debug/pprof/ on this address (empty: none)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *target == "" || *concurrency < 1 || *servers < 1 {
		fmt.Fprintln(stderr, "baseline-worker: -target is required; -concurrency and -servers must be at least 1")
		return 2
	}
	pool := *concurrency * *servers
	hc := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{MaxIdleConns: pool, MaxIdleConnsPerHost: pool,
			IdleConnTimeout: 90 * time.Second},
	}
	url := *target + "/activations"
	auth := "Bearer " + *apiKey
	handler := asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		var p tasks.Payload
		if err := json.Unmarshal(t.Payload(), &p); err != nil {
			return err
		}
		body, err := json.Marshal(p.Request)
		if err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", auth)
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return err
		}
		if resp.StatusCode/100 != 2 {
			return fmt.Errorf("POST /activations: %s", resp.Status)
		}
		return nil
	})

	if *pprofAddr != "" {
		ln, err := net.Listen("tcp", *pprofAddr)
		if err != nil {
			fmt.Fprintln(stderr, "baseline-worker: -pprof-addr:", err)
			return 2
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		go func() { _ = http.Serve(ln, mux) }()
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var srvs []*asynq.Server
	for range *servers {
		srv := asynq.NewServer(asynq.RedisClientOpt{Addr: *addr, DB: *db}, asynq.Config{
			Concurrency: *concurrency,
			Queues:      map[string]int{*queue: 1},
		})
		if err := srv.Start(handler); err != nil {
			fmt.Fprintln(stderr, "baseline-worker:", err)
			return 1
		}
		srvs = append(srvs, srv)
	}
	<-ctx.Done()
	for _, srv := range srvs {
		srv.Shutdown()
	}
	return 0
}
