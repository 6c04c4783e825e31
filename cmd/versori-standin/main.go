// Command versori-standin serves the versoritest stand-in for Versori's Embedded API v1 as its own
// process, for benchmarks and soak runs that must not share a process with the worker. Its records and
// controls are under /_standin/ (listed in the versoritest package doc): stats, calls, activations, users,
// faults, require and clear. A run that meets late commits waits until /_standin/stats shows pendingCommits 0
// before it checks the stand-in's records.
//
// Usage:
//
//	versori-standin -addr 127.0.0.1:8950 -error-rate 0.05 -rate-limit-rate 0.02 -drop-rate 0.01 \
//	    -require 01J...INTEGRATION=01J...TEMPLATE
//
// The fault flags set versoritest.Faults; the POST rates together must not exceed 1:
//
//	-latency D               every call waits D first
//	-latency-after-commit D  POST: wait D after committing, before answering
//	-error-rate R            POST: 503, not committed
//	-rate-limit-rate R       POST: 429 with -retry-after (seconds or an HTTP-date; "86400" is fine)
//	-drop-rate R             POST: committed, then the connection is closed without an answer
//	-late-commit-rate R      POST: -late-commit-status (500, 502, 503 or 504; default 504) at once,
//	                         committed -late-commit-delay later (default 300ms)
//	-hang-commit-rate R      POST: no answer until the client goes away or -hang-for passes (default
//	                         30s, then 504); committed -late-commit-delay after it arrived
//	-forbidden-rate R        POST: 403 about that request, not committed
//	-conflict-rate R         POST: 409, not committed
//	-too-early-rate R        POST: 425, not committed
//	-redirect-rate R         POST: 307 to another host, not committed
//	-bad-list-rate R         list: 200 with a body of the wrong shape ({}, null, ...)
//	-write-fault-ops OPS     the POST rates and -latency-after-commit apply to these write operations
//	                         too, each with draws of its own (create_end_user, update_variables,
//	                         delete_activation, comma-separated, or all); 409s stay POST /activations'
//
// -require-known-users makes POST /activations and the activations list answer 404 for an end user
// who was not created first (POST /hubs/{hub}/users).
//
// It logs JSON lines to stderr; -log-format text (or LOG_FORMAT=text) for a terminal. A bad flag
// stops it with one line naming the flag, and exit 2.
package main

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/versori/activator/internal/background"
	"github.com/versori/activator/internal/logging"
	"github.com/versori/activator/versori/versoritest"
)

// config is what the flags ask for.
type config struct {
	addr      string
	opts      versoritest.Options
	requires  [][2]string // integration, template
	logFormat logging.Format
}

const usageLine = `usage: versori-standin [flags]

Serves a stand-in for Versori's Embedded API v1 (activations, their list, variables and end users) with faults
to order, and its records and controls under /_standin/. Flags:
`

// requireFlag collects repeated -require INTEGRATION=TEMPLATE flags.
type requireFlag struct{ pairs *[][2]string }

func (f requireFlag) String() string { return "" }

func (f requireFlag) Set(v string) error {
	integration, template, ok := strings.Cut(v, "=")
	if !ok || integration == "" || template == "" {
		return fmt.Errorf("%q is not INTEGRATION=TEMPLATE", v)
	}
	*f.pairs = append(*f.pairs, [2]string{integration, template})
	return nil
}

// parseFlags reads the command line, and LOG_FORMAT with lookup; its errors are one line each,
// naming the flag, for a fast exit 2. -h prints the usage to usageOut.
func parseFlags(args []string, lookup func(string) (string, bool), usageOut io.Writer) (config, error) {
	var c config
	var keyFile, format string
	fs := flag.NewFlagSet("versori-standin", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	defFormat := string(logging.JSON)
	if v, ok := lookup("LOG_FORMAT"); ok && v != "" {
		defFormat = v
	}
	fs.StringVar(&format, "log-format", defFormat, "log lines as json, or text for a terminal (env LOG_FORMAT)")
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8950", "address to listen on")
	fs.StringVar(&c.opts.APIKey, "api-key", versoritest.DefaultAPIKey, "API key accepted as \"Authorization: Bearer\"")
	fs.StringVar(&c.opts.HubID, "hub-id", versoritest.DefaultHubID, "hub id (a ULID)")
	fs.IntVar(&c.opts.PageSize, "page-size", versoritest.DefaultPageSize, "most activations per list page")
	fs.IntVar(&c.opts.MaxCalls, "max-calls", 100_000, "most recent calls kept for /_standin/calls (0 keeps all)")
	fs.Int64Var(&c.opts.Seed, "seed", 1, "seed of the fault-rate draws")
	fs.DurationVar(&c.opts.Faults.Latency, "latency", 0, "wait before handling every call")
	fs.DurationVar(&c.opts.Faults.LatencyAfterCommit, "latency-after-commit", 0, "POST /activations: wait after committing, before answering")
	fs.Float64Var(&c.opts.Faults.ServerErrorRate, "error-rate", 0, "fraction of POSTs answered 503")
	fs.Float64Var(&c.opts.Faults.RateLimitRate, "rate-limit-rate", 0, "fraction of POSTs answered 429")
	fs.StringVar(&c.opts.Faults.RetryAfter, "retry-after", versoritest.DefaultRetryAfter, "Retry-After sent with 429s: seconds or an HTTP-date")
	fs.Float64Var(&c.opts.Faults.DropAfterCommitRate, "drop-rate", 0, "fraction of POSTs committed, then dropped without an answer")
	fs.Float64Var(&c.opts.Faults.LateCommitRate, "late-commit-rate", 0, "fraction of POSTs answered -late-commit-status at once and committed -late-commit-delay later")
	fs.IntVar(&c.opts.Faults.LateCommitStatus, "late-commit-status", versoritest.DefaultLateCommitStatus, "status of late-commit answers: 500, 502, 503 or 504")
	fs.DurationVar(&c.opts.Faults.LateCommitDelay, "late-commit-delay", versoritest.DefaultLateCommitDelay, "how long after its answer (or a hung call's arrival) a late commit lands")
	fs.Float64Var(&c.opts.Faults.HangCommitRate, "hang-commit-rate", 0, "fraction of POSTs held unanswered (then 504) and committed -late-commit-delay after they arrived")
	fs.DurationVar(&c.opts.Faults.HangFor, "hang-for", versoritest.DefaultHangFor, "how long a hung POST is held before its 504")
	fs.Float64Var(&c.opts.Faults.ForbiddenRate, "forbidden-rate", 0, "fraction of POSTs answered 403 about that request")
	fs.Float64Var(&c.opts.Faults.ConflictRate, "conflict-rate", 0, "fraction of POSTs answered 409")
	fs.Float64Var(&c.opts.Faults.TooEarlyRate, "too-early-rate", 0, "fraction of POSTs answered 425")
	fs.Float64Var(&c.opts.Faults.RedirectRate, "redirect-rate", 0, "fraction of POSTs answered 307 to "+versoritest.RedirectBaseURL)
	fs.Float64Var(&c.opts.Faults.BadListRate, "bad-list-rate", 0, "fraction of list calls answered 200 with a body of the wrong shape")
	fs.Func("write-fault-ops", "comma-separated write operations besides POST /activations that the POST rates apply to too: "+
		"create_end_user, update_variables, delete_activation, or all", func(v string) error {
		o, err := versoritest.ParseWriteOps(v)
		c.opts.Faults.WriteOps = o
		return err
	})
	fs.BoolVar(&c.opts.RequireKnownUsers, "require-known-users", false, "POST /activations and the activations list answer 404 for an end user not created first (POST /hubs/{hub}/users)")
	fs.Var(requireFlag{&c.requires}, "require", "INTEGRATION=TEMPLATE: POSTs for the integration need a connection for the template (repeatable)")
	fs.StringVar(&c.opts.SigningKeyID, "signing-key-id", "", "accept RS256 JWTs issued by this signing key (needs -public-key-file)")
	fs.StringVar(&keyFile, "public-key-file", "", "PEM (PKIX) RSA public key of the signing key")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(usageOut, usageLine)
			fs.SetOutput(usageOut)
			fs.PrintDefaults()
			return c, err
		}
		return c, fmt.Errorf("%w (-h lists the flags)", err)
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q: versori-standin takes flags only (-h lists them)", fs.Arg(0))
	}
	f, err := logging.ParseFormat(format)
	if err != nil {
		return c, fmt.Errorf("-log-format %v", err)
	}
	c.logFormat = f
	if err := c.opts.Faults.Validate(); err != nil {
		return c, flagNames(err)
	}
	if c.opts.APIKey == "" {
		return c, errors.New("-api-key must not be empty")
	}
	if (c.opts.SigningKeyID == "") != (keyFile == "") {
		return c, errors.New("-signing-key-id and -public-key-file go together")
	}
	if keyFile != "" {
		k, err := loadPublicKey(keyFile)
		if err != nil {
			return c, err
		}
		c.opts.PublicKey = k
	}
	return c, nil
}

// flagNames renames the fields a versoritest.Faults error names (serverErrorRate) to the flags that
// set them (-error-rate), so that the message says what to change on the command line.
func flagNames(err error) error {
	names := map[string]string{
		"serverErrorRate": "-error-rate", "rateLimitRate": "-rate-limit-rate", "dropAfterCommitRate": "-drop-rate",
		"lateCommitRate": "-late-commit-rate", "hangCommitRate": "-hang-commit-rate", "forbiddenRate": "-forbidden-rate",
		"conflictRate": "-conflict-rate", "tooEarlyRate": "-too-early-rate", "redirectRate": "-redirect-rate",
		"badListRate": "-bad-list-rate", "lateCommitStatus": "-late-commit-status", "latency": "-latency",
		"latencyAfterCommit": "-latency-after-commit", "lateCommitDelay": "-late-commit-delay", "hangFor": "-hang-for",
		"retryAfter": "-retry-after",
	}
	msg := regexp.MustCompile(`[A-Za-z]+`).ReplaceAllStringFunc(err.Error(), func(w string) string {
		if f, ok := names[w]; ok {
			return f
		}
		return w
	})
	msg = strings.Replace(msg, "POST fault rates add up to",
		"the POST fault rates (-error-rate, -rate-limit-rate, -drop-rate, -late-commit-rate, -hang-commit-rate, -forbidden-rate, -conflict-rate, -too-early-rate, -redirect-rate) add up to", 1)
	return errors.New(msg)
}

func loadPublicKey(path string) (*rsa.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading public key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s is not PEM", path)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s is not a PKIX public key: %w", path, err)
	}
	rk, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s is not an RSA public key (RS256 needs one)", path)
	}
	return rk, nil
}

func main() {
	os.Exit(mainCode(os.Args[1:], os.LookupEnv, os.Stderr))
}

func mainCode(args []string, lookup func(string) (string, bool), stderr io.Writer) int {
	c, err := parseFlags(args, lookup, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "versori-standin:", err)
		return 2
	}
	log, stop := logging.New(stderr, logging.Options{Format: c.logFormat})
	defer stop()
	// The process's own loggers, set once here at its start (process-global by the libraries' design).
	logging.Install(log)
	if err := run(c, log); err != nil {
		log.Error("stand-in failed", "error", err.Error())
		return 1
	}
	return 0
}

// shutdownGrace bounds how long calls in flight (some of them sleeping on latency faults) may take
// to finish once a signal arrives.
const shutdownGrace = 10 * time.Second

func run(c config, log *slog.Logger) error {
	s := versoritest.NewServer(c.opts)
	for _, r := range c.requires {
		s.RequireConnection(r[0], r[1])
	}
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	f := c.opts.Faults
	log.Info("versori stand-in listening", "addr", ln.Addr().String(), "hub_id", s.HubID(),
		"jwt", c.opts.PublicKey != nil, "latency", f.Latency, "latency_after_commit", f.LatencyAfterCommit,
		"error_rate", f.ServerErrorRate, "rate_limit_rate", f.RateLimitRate, "drop_rate", f.DropAfterCommitRate,
		"retry_after", f.RetryAfter, "late_commit_rate", f.LateCommitRate, "late_commit_status", f.LateCommitStatus,
		"late_commit_delay", f.LateCommitDelay, "hang_commit_rate", f.HangCommitRate, "hang_for", f.HangFor,
		"forbidden_rate", f.ForbiddenRate, "conflict_rate", f.ConflictRate, "too_early_rate", f.TooEarlyRate,
		"redirect_rate", f.RedirectRate, "bad_list_rate", f.BadListRate, "write_fault_ops", f.WriteOps.String(),
		"require_known_users", c.opts.RequireKnownUsers, "requires", len(c.requires), "seed", c.opts.Seed)

	// Calls still sleeping past the grace period are cut off; their clients see a dropped call.
	if err := background.Serve(ctx, srv, ln, shutdownGrace); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}
