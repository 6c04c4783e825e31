package intake

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/versori/activator/internal/configerr"
)

// Defaults of Config.
const (
	DefaultAddr              = "127.0.0.1:8080"
	DefaultMaxBatch          = 100
	DefaultMaxBodyBytes      = 1 << 20 // 1 MiB
	DefaultMaxConcurrent     = 64
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 30 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	DefaultMaxHeaderBytes    = 16 << 10 // 16 KiB
	DefaultBatch             = "intake"
	DefaultShutdownTimeout   = 15 * time.Second
	// DefaultEvictionCheckInterval is the worker's: CONFIG SET or a managed Redis's parameter group
	// can change the policy at any time.
	DefaultEvictionCheckInterval = time.Minute
)

// MinTokenBytes is the shortest bearer token accepted: a short token can be guessed.
const MinTokenBytes = 16

// MinSecretBytes is the shortest webhook signing key accepted, after base64 decoding.
const MinSecretBytes = 16

// ErrNoAuth is returned by New when neither a webhook secret nor a bearer token is configured and
// Config.Insecure is not set.
var ErrNoAuth = errors.New("intake: refusing to start without Secrets or Tokens (set Insecure to accept unauthenticated requests, for local testing only)")

// Config configures a Server. Its zero value, with Insecure set, is a working local server. Secrets
// and Tokens never appear in the Server's logs or errors, and fmt and slog print a Config with them
// redacted.
type Config struct {
	// Addr is the address ListenAndServe listens on (default DefaultAddr).
	Addr string
	// Secrets are Standard Webhooks signing secrets, each "whsec_" followed by the base64 key. A
	// request verifies if its signature matches any of them, so a secret is rotated by adding the new
	// one, moving the senders, then dropping the old.
	Secrets []string
	// Tokens are accepted bearer tokens, each at least MinTokenBytes long.
	Tokens []string
	// Insecure lets the server start without any secret or token, accepting every request. It has
	// no effect when a secret or token is set.
	Insecure bool
	// MaxBatch is the most requests POST /v1/activations:batch takes (default DefaultMaxBatch).
	MaxBatch int
	// MaxBodyBytes bounds a request body (default DefaultMaxBodyBytes); a larger one is answered 413.
	MaxBodyBytes int64
	// MaxConcurrent bounds the /v1 requests in flight (default DefaultMaxConcurrent); more are
	// answered 429 at once.
	MaxConcurrent int
	// Timeouts and header limit of the http.Server (defaults: the Default… constants).
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	// Batch is the batch id tagged on every job the server queues (default DefaultBatch).
	Batch string
	// ShutdownTimeout bounds the wait for in-flight requests at shutdown (default
	// DefaultShutdownTimeout).
	ShutdownTimeout time.Duration
	// EvictionCheckInterval is how often Serve reads Redis's maxmemory-policy again for
	// activator_redis_eviction_policy (default DefaultEvictionCheckInterval, as the worker).
	EvictionCheckInterval time.Duration
	// Logger receives the server's logs (default: slog.Default()).
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	c.Addr = cmp.Or(c.Addr, DefaultAddr)
	c.MaxBatch = cmp.Or(c.MaxBatch, DefaultMaxBatch)
	c.MaxBodyBytes = cmp.Or(c.MaxBodyBytes, DefaultMaxBodyBytes)
	c.MaxConcurrent = cmp.Or(c.MaxConcurrent, DefaultMaxConcurrent)
	c.ReadHeaderTimeout = cmp.Or(c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	c.ReadTimeout = cmp.Or(c.ReadTimeout, DefaultReadTimeout)
	c.WriteTimeout = cmp.Or(c.WriteTimeout, DefaultWriteTimeout)
	c.IdleTimeout = cmp.Or(c.IdleTimeout, DefaultIdleTimeout)
	c.MaxHeaderBytes = cmp.Or(c.MaxHeaderBytes, DefaultMaxHeaderBytes)
	c.Batch = cmp.Or(c.Batch, DefaultBatch)
	c.ShutdownTimeout = cmp.Or(c.ShutdownTimeout, DefaultShutdownTimeout)
	if c.EvictionCheckInterval <= 0 { // a ticker of zero or less panics
		c.EvictionCheckInterval = DefaultEvictionCheckInterval
	}
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// Validate reports the first problem with c; a zero field is no problem (New gives it its default).
// Its errors are *configerr.Error, naming the field, or ErrNoAuth; they name a secret or token by its
// position only.
func (c Config) Validate() error {
	bad := func(field, format string, args ...any) error { return configerr.New("intake", field, format, args...) }
	switch {
	case c.MaxBatch < 0:
		return bad("MaxBatch", "must not be negative, got %d", c.MaxBatch)
	case c.MaxBodyBytes < 0:
		return bad("MaxBodyBytes", "must not be negative, got %d", c.MaxBodyBytes)
	case c.MaxConcurrent < 0:
		return bad("MaxConcurrent", "must not be negative, got %d", c.MaxConcurrent)
	case c.MaxHeaderBytes < 0:
		return bad("MaxHeaderBytes", "must not be negative, got %d", c.MaxHeaderBytes)
	case strings.TrimSpace(c.Batch) != c.Batch || strings.ContainsAny(c.Batch, "\r\n\t"):
		return bad("Batch", "must not hold whitespace at either end or control characters")
	}
	for i, tok := range c.Tokens {
		switch {
		case len(tok) < MinTokenBytes:
			return bad("Tokens", "has bearer token #%d shorter than %d bytes", i+1, MinTokenBytes)
		case strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r == 0x7f }):
			return bad("Tokens", "has bearer token #%d holding whitespace or a control character", i+1)
		}
	}
	if len(c.Secrets) == 0 && len(c.Tokens) == 0 && !c.Insecure {
		return ErrNoAuth
	}
	return nil
}

// SplitList splits a comma-separated list of secrets or tokens, trimming spaces and dropping empty
// items.
func SplitList(s string) []string {
	var out []string
	for item := range strings.SplitSeq(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// redacted is c without its secrets and tokens, for printing.
type redacted struct {
	Addr          string
	Secrets       int
	Tokens        int
	Insecure      bool
	MaxBatch      int
	MaxBodyBytes  int64
	MaxConcurrent int
	Batch         string
}

func (c Config) redacted() redacted {
	return redacted{Addr: c.Addr, Secrets: len(c.Secrets), Tokens: len(c.Tokens), Insecure: c.Insecure,
		MaxBatch: c.MaxBatch, MaxBodyBytes: c.MaxBodyBytes, MaxConcurrent: c.MaxConcurrent, Batch: c.Batch}
}

// Format prints c with secrets and tokens replaced by their counts, whatever the verb.
func (c Config) Format(f fmt.State, _ rune) {
	r := c.redacted()
	fmt.Fprintf(f, "intake.Config{Addr:%q Secrets:[%d redacted] Tokens:[%d redacted] Insecure:%t MaxBatch:%d MaxBodyBytes:%d MaxConcurrent:%d Batch:%q}",
		r.Addr, r.Secrets, r.Tokens, r.Insecure, r.MaxBatch, r.MaxBodyBytes, r.MaxConcurrent, r.Batch)
}

// MarshalJSON writes c with secrets and tokens replaced by their counts.
func (c Config) MarshalJSON() ([]byte, error) { return json.Marshal(c.redacted()) }

// LogValue logs c with secrets and tokens replaced by their counts.
func (c Config) LogValue() slog.Value {
	r := c.redacted()
	return slog.GroupValue(
		slog.String("addr", r.Addr), slog.Int("secrets", r.Secrets), slog.Int("tokens", r.Tokens),
		slog.Bool("insecure", r.Insecure), slog.Int("max_batch", r.MaxBatch),
		slog.Int64("max_body_bytes", r.MaxBodyBytes), slog.Int("max_concurrent", r.MaxConcurrent),
		slog.String("batch", r.Batch))
}
