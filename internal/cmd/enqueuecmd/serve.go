package enqueuecmd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/versori/activator/internal/cmd/envflag"
	"github.com/versori/activator/internal/intake"
	"github.com/versori/activator/internal/redisconn"
	"github.com/versori/activator/producer"
)

// serveSettings are what `enqueue serve` reads.
type serveSettings struct {
	c               common
	cfg             intake.Config
	secrets, tokens string
}

func serveFlags(env Env, s *serveSettings) *envflag.Set {
	fs := newFlags("serve", env, &s.c)
	fs.String(&s.cfg.Addr, "addr", "INTAKE_ADDR", intake.DefaultAddr, "listen address")
	fs.Bool(&s.cfg.Insecure, "insecure", "", false, "start without INTAKE_WEBHOOK_SECRET or INTAKE_TOKENS, accepting unauthenticated requests (local testing only)")
	fs.Int(&s.cfg.MaxBatch, "max-batch", "INTAKE_MAX_BATCH", intake.DefaultMaxBatch, "most requests in one POST /v1/activations:batch")
	fs.String(&s.cfg.Batch, "batch", "INTAKE_BATCH", intake.DefaultBatch, "batch id tagged on every job the intake queues")
	fs.Secret(&s.secrets, "webhook-secret", "INTAKE_WEBHOOK_SECRET", "", "Standard Webhooks signing secrets (whsec_...), comma-separated for rotation")
	fs.Secret(&s.tokens, "tokens", "INTAKE_TOKENS", "", "bearer tokens, comma-separated; GET /v1/activations/{id} takes only these")
	return fs
}

// explainIntake names the variables behind an intake.Config that New refused.
func explainIntake(err error, fs *envflag.Set, cfg *intake.Config) error {
	if errors.Is(err, intake.ErrNoAuth) {
		return errors.New("refusing to start without INTAKE_WEBHOOK_SECRET or INTAKE_TOKENS (pass --insecure to accept unauthenticated requests, for local testing only)")
	}
	fields := fs.Fields(cfg)
	// Set through the comma-separated strings, so Fields cannot see them.
	fields["Secrets"], _ = fs.Lookup("INTAKE_WEBHOOK_SECRET")
	fields["Tokens"], _ = fs.Lookup("INTAKE_TOKENS")
	return envflag.Explain(err, fields)
}

// runServe is `enqueue serve`: the HTTP intake for signup events, until ctx is done.
func runServe(ctx context.Context, args []string, env Env) (int, error) {
	var s serveSettings
	fs := serveFlags(env, &s)
	c, cfg := &s.c, &s.cfg
	secrets, tokens := &s.secrets, &s.tokens
	pos, err := parse(fs, args)
	if err != nil {
		return ExitUsage, err
	}
	if len(pos) > 0 {
		return ExitUsage, usageError{errors.New("serve takes no arguments")}
	}
	if cfg.MaxBatch < 1 {
		return ExitUsage, usageError{fmt.Errorf("--max-batch %d: want at least 1", cfg.MaxBatch)}
	}
	cfg.Secrets, cfg.Tokens = intake.SplitList(*secrets), intake.SplitList(*tokens)
	log, err := c.log.start(c.logFormat)
	if err != nil {
		return ExitUsage, err
	}
	cfg.Logger = log

	if err := cfg.Validate(); err != nil {
		return ExitUsage, usageError{explainIntake(err, fs, cfg)}
	}
	rdb, err := openRedis(*c)
	if err != nil {
		return ExitUsage, err
	}
	defer rdb.Close()
	pcfg, err := c.secrets()
	if err != nil {
		return ExitUsage, err
	}
	pcfg.Queue = c.queue
	srv, err := intake.New(*cfg, rdb, producer.New(rdb, pcfg))
	if err != nil {
		return ExitUsage, usageError{err}
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		// A taken or bad address is a configuration problem, as it is for the worker's METRICS_ADDR.
		return ExitUsage, usageError{err}
	}
	// Redis being down is no reason not to start: /readyz says so, and requests get 503 until it is back.
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	if err := rdb.Ping(pctx).Err(); err != nil {
		if refused := redisconn.Refused(c.redisURL, err); refused != nil {
			// Not down but refusing REDIS_URL (a database it does not have, the password): every
			// request would get 503 until the setting is fixed.
			cancel()
			ln.Close()
			return ExitUsage, usageError{explainRedisURL(refused)}
		}
		cfg.Logger.Warn("Redis does not answer yet; requests get 503 until it does", "redis", redisconn.Redacted(c.redisURL), "error", err.Error())
	} else {
		_ = srv.CheckEviction(pctx) // it logs an evicting policy itself, before "intake listening"; Serve re-reads it
	}
	cancel()
	cfg.Logger.Info("intake listening", "addr", ln.Addr().String(), "queue", c.queue, "batch", srv.Config().Batch,
		"webhook_secrets", len(cfg.Secrets), "tokens", len(cfg.Tokens))
	if err := srv.Serve(ctx, ln); err != nil {
		return ExitFailed, err
	}
	cfg.Logger.Info("intake stopped")
	return ExitOK, nil
}
