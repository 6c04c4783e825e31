// Package enqueuecmd is the enqueue command: putting files of activation requests into the queue,
// and working the dead-letter store. cmd/enqueue only calls Run.
package enqueuecmd

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/inspect"
	"github.com/versori/activator/internal/buildinfo"
	"github.com/versori/activator/internal/cmd/envflag"
	"github.com/versori/activator/internal/ingest"
	"github.com/versori/activator/internal/logging"
	"github.com/versori/activator/internal/redisconn"
	"github.com/versori/activator/internal/redisevict"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/tasks"
)

// Exit codes.
const (
	ExitOK       = 0
	ExitRejected = 1 // some rows were rejected (or, for dlq, some ids were not found)
	ExitUsage    = 2 // bad flags, arguments or configuration
	ExitFailed   = 3 // Redis failed: some rows were not enqueued; re-run the same file
	// ExitInterrupted is 128+SIGINT, as shells report a process Ctrl-C stopped: an interrupted
	// command exits 128 plus the signal's number (SIGTERM: 143).
	ExitInterrupted = 130
)

// Env is what the command reads and writes besides its arguments.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Lookup         func(string) (string, bool)
	// Install, if set, routes the libraries' process-global loggers (go-redis's, the log package's)
	// into the command's log once it is set up: logging.Install in OSEnv, nil in tests that run the
	// command in-process.
	Install func(*slog.Logger)

	log *procLog // set by Run
}

const usageText = `usage:
  enqueue file PATH [flags]      enqueue a .jsonl/.ndjson/.csv file ("-": stdin; --format jsonl|csv)
  enqueue file --update-variables PATH [flags]   update the pairs' dynamic variables (activating those not active)
  enqueue deactivate PATH [flags]                deactivate the pairs of a file (userId, integrationId; other fields ignored)
  enqueue dlq list [--json] [--reason R] [--show-secrets]
  enqueue dlq requeue (ID... | --reason R | --all | --file FIXED [--format F] [--rejects PATH])
  enqueue dlq purge (ID... | --reason R | --all)
  enqueue dlq export [--reason R] [--show-secrets]   JSONL of the dead letters' requests, in the input format
  enqueue status BATCH [--json] [--watch]  how far a batch is: queued, activated, dead-lettered, rate, ETA
  enqueue pause [--force]                  pause the queue
  enqueue reencrypt [--force]              seal queued jobs' and dead letters' credentials with the current key
  enqueue resume [--force]                 resume it (after fixing a refused API key, say)
  enqueue serve [--addr A] [--insecure] [--max-batch N]   HTTP intake for signup events (INTAKE_WEBHOOK_SECRET, INTAKE_TOKENS: environment only)
  enqueue --version                        the module version and VCS revision of this build
common: REDIS_URL or REDIS_URL_FILE (environment only), -queue (QUEUE); the verbs other than file and
serve refuse a queue nothing has used yet (a mistyped name), unless --force; COMMAND -h lists a
command's flags
`

const dlqUsageText = `usage:
  enqueue dlq list [--json] [--reason R] [--show-secrets]
  enqueue dlq requeue (ID... | --reason R | --all | --file FIXED [--format F] [--rejects PATH])
  enqueue dlq purge (ID... | --reason R | --all)
  enqueue dlq export [--reason R] [--show-secrets]   JSONL of the dead letters' requests, in the input format
common: REDIS_URL or REDIS_URL_FILE (environment only), -queue (QUEUE), --force; enqueue dlq VERB -h
lists a verb's flags
`

// synopsis is the usage line heading subcommand name's help (name as newFlags gets it).
func synopsis(name string) string {
	switch name {
	case "file":
		return "enqueue file PATH [flags]"
	case "deactivate":
		return "enqueue deactivate PATH [flags]"
	case "status":
		return "enqueue status BATCH [flags]"
	case "dlq requeue":
		return "enqueue dlq requeue (ID... | --reason R | --all | --file FIXED) [flags]"
	case "dlq purge":
		return "enqueue dlq purge (ID... | --reason R | --all) [flags]"
	}
	return "enqueue " + name + " [flags]"
}

// Run runs the enqueue command with args (without the program name) and returns the exit code.
func Run(ctx context.Context, args []string, env Env) int {
	if len(args) == 0 {
		fmt.Fprint(env.Stderr, usageText)
		return ExitUsage
	}
	env.log = &procLog{env: env}
	defer env.log.stop()
	var err error
	code := ExitOK
	switch args[0] {
	case "file", "deactivate":
		code, err = runFile(ctx, args[0], args[1:], env)
	case "dlq":
		code, err = runDLQ(ctx, args[1:], env)
	case "pause", "resume":
		code, err = runPause(ctx, args[0], args[1:], env)
	case "serve":
		code, err = runServe(ctx, args[1:], env)
	case "status":
		code, err = runStatus(ctx, args[1:], env)
	case "reencrypt":
		code, err = runReencrypt(ctx, args[1:], env)
	case "-h", "--help", "help":
		fmt.Fprint(env.Stdout, usageText)
		return ExitOK
	case "-version", "--version", "version":
		fmt.Fprintln(env.Stdout, buildinfo.Version("enqueue"))
		return ExitOK
	default:
		fmt.Fprintf(env.Stderr, "enqueue: unknown command %q; see enqueue -h\n", args[0])
		return ExitUsage
	}
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil && code != ExitOK && code < 128 && ctx.Err() != nil {
		// Whatever failed after SIGINT or SIGTERM failed because of it, not because of Redis.
		fmt.Fprintln(env.Stderr, "enqueue: interrupted before it finished:", err)
		return interruptCode(ctx)
	}
	var ue usageError
	if errors.As(err, &ue) {
		fmt.Fprintln(env.Stderr, "enqueue:", err)
		return ExitUsage
	}
	if err != nil {
		fmt.Fprintln(env.Stderr, "enqueue:", err)
		if code == ExitOK {
			code = ExitFailed
		}
	}
	return code
}

// usageError is a mistake in the command line or configuration.
type usageError struct{ error }

// common are the flags every subcommand takes.
type common struct {
	redisURL  string
	queue     string
	force     bool // act on a queue nothing has used (verbFlags only)
	logFormat string
	log       *procLog // the run's log, which openRedis sets up
	// keys and allowPlaintext are the credentials' settings: keys seal what file and serve queue and
	// what requeue queues again, and open what --show-secrets shows.
	keys           string
	allowPlaintext bool
}

// secrets returns the producer settings for credentials: the keyring (nil without keys), and
// whether plaintext is allowed. A bad keyring is a usage error naming the setting.
func (c common) secrets() (producer.Config, error) {
	k, err := tasks.ParseKeyring(c.keys)
	if err != nil {
		return producer.Config{}, usageError{err}
	}
	return producer.Config{Keys: k, AllowPlaintext: c.allowPlaintext}, nil
}

// newFlags returns the flag set of subcommand name with the flags every one takes. Its help (-h)
// goes to stdout, headed by the subcommand's usage line.
func newFlags(name string, env Env, c *common) *envflag.Set {
	fs := envflag.New("enqueue "+name, env.Lookup, env.Stdout)
	// A secret: the URL may hold a password.
	fs.Secret(&c.redisURL, "redis-url", "REDIS_URL", redisconn.DefaultURL, "Redis URL")
	fs.String(&c.queue, "queue", "QUEUE", producer.DefaultConfig().Queue, "queue name")
	fs.String(&c.logFormat, "log-format", "LOG_FORMAT", string(logging.JSON), "serve's log lines (its own, go-redis's messages) as json, or text for a terminal")
	fs.Secret(&c.keys, "encryption-keys", tasks.EncryptionKeysVar, "", "keys that seal end users' credentials in Redis: id:base64(32 bytes),… (the first seals, all open)")
	fs.Bool(&c.allowPlaintext, "allow-plaintext-credentials", tasks.AllowPlaintextVar, false, "queue requests with credentials unencrypted when no key is set (otherwise they are refused)")
	c.log = env.log
	if c.log == nil { // Vars, and a subcommand run without Run
		c.log = &procLog{env: env}
	}
	f := fs.FlagSet()
	f.Usage = func() {
		fmt.Fprintf(f.Output(), "usage: %s\nflags:\n", synopsis(name))
		fs.PrintDefaults()
	}
	return fs
}

// verbFlags is newFlags for the verbs that work an existing queue (status, pause, resume, dlq):
// they refuse a queue nothing has used, unless --force.
func verbFlags(name string, env Env, c *common) *envflag.Set {
	fs := newFlags(name, env, c)
	fs.Bool(&c.force, "force", "", false, "act even on a queue no task or worker has used (without it, such a queue name is refused as mistyped)")
	return fs
}

// Vars lists the settings of each subcommand that has its own: "" for those every one takes, then
// "file" and "serve".
func Vars() map[string][]envflag.Var {
	env := Env{Lookup: func(string) (string, bool) { return "", false }, Stderr: io.Discard}
	var c common
	var f fileSettings
	var s serveSettings
	shared := newFlags("", env, &c).Vars()
	return map[string][]envflag.Var{
		"":      shared,
		"file":  fileFlags(env, &f, "file").Vars()[len(shared):],
		"serve": serveFlags(env, &s).Vars()[len(shared):],
	}
}

// parse parses args, allowing flags after positional arguments too. -h prints the help; a bad flag
// is one line (which Run prints), not the flag package's error followed by the whole help.
func parse(fs *envflag.Set, args []string) ([]string, error) {
	f := fs.FlagSet()
	out, help := f.Output(), f.Usage
	badFlag := false
	f.SetOutput(io.Discard)
	f.Usage = func() { badFlag = true } // the flag package calls it for -h and for a bad flag
	defer func() { f.SetOutput(out); f.Usage = help }()
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				f.SetOutput(out)
				help()
				return nil, err
			}
			if badFlag {
				err = fmt.Errorf("%w; see %s -h", err, f.Name())
			}
			return nil, usageError{err}
		}
		rest := fs.FlagSet().Args()
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// openRedis opens the Redis the flags name. Unless the command has set up a log of its own (serve),
// go-redis's messages are discarded: a one-shot command reports a Redis failure itself, in one line.
func openRedis(c common) (redis.UniversalClient, error) {
	if strings.TrimSpace(c.queue) == "" {
		return nil, usageError{errors.New("QUEUE must not be empty")}
	}
	if err := c.log.quiet(c.logFormat); err != nil {
		return nil, err
	}
	rdb, err := redisconn.Open(c.redisURL)
	if err != nil {
		return nil, usageError{explainRedisURL(err)}
	}
	return rdb, nil
}

// explainRedisURL names REDIS_URL in a redisconn error, which names the URL.
func explainRedisURL(err error) error {
	v, _ := newFlags("", Env{Lookup: func(string) (string, bool) { return "", false }, Stderr: io.Discard}, &common{}).Lookup("REDIS_URL")
	return envflag.Explain(err, map[string]envflag.Var{"URL": v})
}

// ping fails fast, with one clear line, when Redis does not answer.
func ping(ctx context.Context, rdb redis.UniversalClient, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		if refused := redisconn.Refused(url, err); refused != nil {
			return usageError{explainRedisURL(refused)}
		}
		return fmt.Errorf("no answer from Redis at %s (%v): nothing was enqueued or changed; start Redis or fix REDIS_URL, then re-run", redisconn.Redacted(url), err)
	}
	return nil
}

// fileSettings are what `enqueue file` and `enqueue deactivate` read besides the path.
type fileSettings struct {
	c     common
	o     producer.FileOptions
	p     producer.Config
	quiet bool
	// update: --update-variables (file only).
	update bool
}

// fileFlags are the flags of verb, "file" or "deactivate": the same but for what only an
// activation does.
func fileFlags(env Env, s *fileSettings, verb string) *envflag.Set {
	d := producer.DefaultConfig()
	fs := newFlags(verb, env, &s.c)
	fs.String(&s.o.Batch, "batch", "", "", "batch id (default: a new one)")
	formatFlag(fs, &s.o.Format)
	fs.Int(&s.o.Concurrency, "concurrency", "ENQUEUE_CONCURRENCY", producer.DefaultFileConcurrency, "enqueues in flight at once")
	fs.String(&s.o.RejectsPath, "rejects", "", "", "rejects file (default: PATH.rejects.jsonl)")
	fs.Bool(&s.o.DryRun, "dry-run", "", false, "validate only; enqueue nothing")
	fs.Bool(&s.o.NoAutopipeline, "no-autopipeline", "ENQUEUE_NO_AUTOPIPELINE", false, "send enqueues one by one, not batched by go-redis's (experimental) autopipeliner")
	if verb == "file" {
		fs.Bool(&s.update, "update-variables", "", false, "update the pairs instead: set an active pair's dynamic variables to the row's, activate one that is not")
		fs.Bool(&s.o.Reconcile, "reconcile", "", false, "make every job look up its pair before activating")
	}
	fs.Int(&s.p.MaxRetry, "max-retry", "MAX_RETRY", d.MaxRetry, "failures before a job is dead-lettered")
	fs.Duration(&s.p.Retention, "retention", "RETENTION", d.Retention, "how long finished jobs are remembered, which keeps re-runs from re-activating")
	fs.Duration(&s.p.Timeout, "timeout", "JOB_TIMEOUT", d.Timeout, "timeout of one job attempt")
	fs.Bool(&s.quiet, "quiet", "", false, "no progress lines")
	return fs
}

// formatFlag defines --format, the format of a file of requests, for every subcommand that reads one
// (file, dlq requeue --file); inputFormat reads it.
func formatFlag(fs *envflag.Set, p *string) {
	fs.String(p, "format", "", "", "the input's format, jsonl or csv (default: from the file's extension; JSONL for \"-\")")
}

// inputFormat is the format of the input at path: the one --format names, or else the one path's
// name tells. Its errors are usage errors, saying to pass --format when the name does not tell.
func inputFormat(path, name string) (ingest.Format, error) {
	format, err := ingest.FormatFor(path, name)
	if errors.Is(err, ingest.ErrUnknownFormat) {
		return "", usageError{fmt.Errorf("cannot tell the format of %q from its name (not .jsonl, .ndjson or .csv): pass --format jsonl or --format csv", path)}
	}
	if err != nil {
		return "", usageError{fmt.Errorf("--format: %w", err)}
	}
	return format, nil
}

// validate checks the settings as given (a 0 or negative --concurrency, --max-retry, --retention or
// --timeout is refused, not replaced by the default) and names the variable or flag at fault.
func (s *fileSettings) validate(fs *envflag.Set) error {
	s.p.Queue = s.c.queue
	err := s.p.Validate()
	if err == nil {
		err = s.o.Validate()
	}
	if err == nil {
		return nil
	}
	fields := fs.Fields(&s.p)
	for k, v := range fs.Fields(&s.o) {
		fields[k] = v
	}
	fields["Queue"], _ = fs.Lookup("queue") // set through common, so Fields cannot see it
	return usageError{envflag.Explain(err, fields)}
}

// runFile runs verb, "file" (activations, or updates with --update-variables) or "deactivate": the
// same run, rejects, progress, summary and exit codes, for another operation.
func runFile(ctx context.Context, verb string, args []string, env Env) (int, error) {
	var s fileSettings
	fs := fileFlags(env, &s, verb)
	c, o := &s.c, &s.o
	pos, err := parse(fs, args)
	if err != nil {
		return ExitUsage, err
	}
	if len(pos) != 1 {
		return ExitUsage, usageError{errors.New(verb + " takes one PATH")}
	}
	switch {
	case verb == "deactivate":
		o.Op = tasks.OpDeactivate
	case s.update && o.Reconcile:
		// An update looks its pair up first anyway: refused, so that nobody believes it changed
		// something (deactivate, which looks first too, has no --reconcile).
		return ExitUsage, usageError{errors.New("--reconcile does nothing with --update-variables: an update always looks its pair up first; see enqueue file -h")}
	case s.update:
		o.Op = tasks.OpUpdate
	}
	if err := s.validate(fs); err != nil {
		return ExitUsage, err
	}
	sec, err := c.secrets()
	if err != nil {
		return ExitUsage, err
	}
	s.p.Keys, s.p.AllowPlaintext = sec.Keys, sec.AllowPlaintext
	o.Path, o.Stdin = pos[0], env.Stdin
	if o.Batch == "" {
		o.Batch = "b-" + ulid.Make().String()
	}
	// Before Redis is asked, so that the exit code does not depend on it.
	format, err := inputFormat(o.Path, o.Format)
	if err != nil {
		return ExitUsage, err
	}
	rdb, err := openRedis(*c)
	if err != nil {
		return ExitUsage, err
	}
	defer closeAfterRun(ctx, rdb)
	p := producer.New(rdb, s.p)
	if !o.DryRun {
		if err := ping(ctx, rdb, c.redisURL); err != nil {
			return ExitFailed, err
		}
		warnEviction(ctx, rdb, env.Stderr)
	}
	var disp *display
	if !s.quiet {
		disp = newDisplay(env.Stderr, env.Stdin, o.Path, format)
		o.Progress, o.ProgressEvery = disp.update, disp.every
	}
	// The batch id is printed once the run has started, so that a run that cannot start leaves
	// no batch behind to look for, and before any row is enqueued, so that `enqueue status` can
	// follow it from another terminal.
	started := false
	o.Start = func() {
		started = true
		fmt.Fprintf(env.Stdout, "batch %s\n", o.Batch)
		if disp != nil {
			disp.start()
		}
	}
	sum, err := p.EnqueueFile(ctx, *o)
	interrupted := ctx.Err() != nil
	if !started {
		var ie *producer.InputError
		switch {
		case errors.As(err, &ie):
			return ExitUsage, usageError{err}
		case interrupted:
			return interruptCode(ctx), errors.New("interrupted before any row was enqueued")
		}
		return ExitFailed, fmt.Errorf("%w: nothing was enqueued; re-run when Redis answers", err)
	}
	if disp != nil {
		end := endDone
		switch {
		case interrupted:
			end = endInterrupted
		case err != nil || sum.Failed > 0:
			end = endFailed
		}
		disp.finish(sum, end)
	}
	printSummary(env.Stdout, sum, o.DryRun, interrupted)
	switch {
	case interrupted:
		msg := fmt.Sprintf("interrupted after %d rows", sum.Rows)
		if sum.Failed > 0 {
			msg += fmt.Sprintf(", %d of them not enqueued", sum.Failed)
		}
		return interruptCode(ctx), errors.New(msg + ": re-run the same file to add the rest (it only adds what is missing)")
	case err != nil:
		return ExitFailed, err
	case sum.Failed > 0:
		return ExitFailed, fmt.Errorf("%d rows were not enqueued because Redis failed (%s); re-run the same file: it only adds what is missing",
			sum.Failed, lineList(sum.FailedLines, sum.Failed))
	case sum.Rejected > 0:
		return ExitRejected, nil
	}
	return ExitOK, nil
}

// runReencrypt seals every queued job's and dead letter's credentials with the current key, after
// a key rotation, and says whether the old keys may go.
func runReencrypt(ctx context.Context, args []string, env Env) (int, error) {
	var c common
	fs := verbFlags("reencrypt", env, &c)
	pos, err := parse(fs, args)
	if err != nil {
		return ExitUsage, err
	}
	if len(pos) > 0 {
		return ExitUsage, usageError{errors.New("reencrypt takes no arguments")}
	}
	sec, err := c.secrets()
	if err != nil {
		return ExitUsage, err
	}
	if sec.Keys == nil {
		return ExitUsage, usageError{fmt.Errorf("reencrypt needs %s, with the new key first and the old ones after it", tasks.EncryptionKeysVar)}
	}
	rdb, in, code, err := openInspector(ctx, c)
	if err != nil {
		return code, err
	}
	defer rdb.Close()
	sum, err := in.Reencrypt(ctx)
	out := env.Stdout
	fmt.Fprintf(out, "sealed with key %s: %d tasks, %d dead letters\n", sec.Keys.Current(), sum.Tasks, sum.DeadLetters)
	fmt.Fprintf(out, "already current or without credentials: %d\n", sum.Current)
	if sum.Running > 0 {
		fmt.Fprintf(out, "running, not rewritten (re-run once they end): %d: %s\n", sum.Running, strings.Join(sum.RunningIDs, " "))
	}
	if sum.Changed > 0 {
		fmt.Fprintf(out, "changed while being rewritten (re-run): %d\n", sum.Changed)
	}
	if sum.Unreadable > 0 {
		fmt.Fprintf(out, "sealed under a key %s lacks, left as they are: %d: %s\n", tasks.EncryptionKeysVar, sum.Unreadable, strings.Join(sum.UnreadableIDs, " "))
	}
	if err != nil {
		return ExitFailed, err
	}
	if !sum.Done() {
		fmt.Fprintln(out, "keep the old keys: some credentials are still sealed under them, or may be")
		return ExitRejected, nil
	}
	fmt.Fprintf(out, "done: nothing queued or dead-lettered is sealed under another key; the keys after %s may go\n", sec.Keys.Current())
	return ExitOK, nil
}

// Interrupted is the cause of the context NotifyContext returns once a signal arrives.
type Interrupted struct{ Signal os.Signal }

func (i Interrupted) Error() string { return i.Signal.String() + " signal received" }

// NotifyContext is signal.NotifyContext, except that the context's cause, once one of signals
// arrives, is an Interrupted naming it: an interrupted command exits 128 plus its number.
// stop unregisters the signals, so that the next one has its default effect.
func NotifyContext(parent context.Context, signals ...os.Signal) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(parent)
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, signals...)
	go func() {
		select {
		case sig := <-ch:
			cancel(Interrupted{Signal: sig})
		case <-ctx.Done():
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		cancel(nil)
	}
}

// interruptCode is the exit code of a run ctx's end interrupted: 128 plus the signal's number,
// ExitInterrupted when no signal is named.
func interruptCode(ctx context.Context) int {
	var in Interrupted
	if errors.As(context.Cause(ctx), &in) {
		if sig, ok := in.Signal.(syscall.Signal); ok {
			return 128 + int(sig)
		}
	}
	return ExitInterrupted
}

func printSummary(w io.Writer, s producer.Summary, dry, interrupted bool) {
	verb := "enqueued"
	if dry {
		verb = "valid (dry run)"
	}
	fmt.Fprintf(w, "%s: %d\nalready queued or done: %d\n", verb, s.Enqueued, s.Duplicates)
	if s.OtherQueue > 0 {
		fmt.Fprintf(w, "  of which on another queue: %d (a pair is activated from the queue it was first queued on)\n", s.OtherQueue)
	}
	fmt.Fprintf(w, "already dead-lettered: %d\nrejected: %d\n", s.DeadLettered, s.Rejected)
	switch {
	case s.Failed > 0 && interrupted:
		fmt.Fprintf(w, "not enqueued (interrupted): %d\n", s.Failed)
	case s.Failed > 0:
		fmt.Fprintf(w, "not enqueued (Redis failed): %d\n", s.Failed)
	}
	if s.RejectsPath != "" {
		fmt.Fprintf(w, "rejects: %s\n", s.RejectsPath)
	}
	if s.StaleRejects != "" {
		fmt.Fprintf(w, "removed stale rejects file: %s (an earlier run's; this run had no rejects)\n", s.StaleRejects)
	}
	if s.CountErrors > 0 {
		fmt.Fprintf(w, "warning: the batch's queued counter could not be written, so `enqueue status %s` undercounts; the jobs are queued\n", s.Batch)
	}
	fmt.Fprintf(w, "elapsed: %s\nrate: %.0f rows/s\n", s.Elapsed.Round(time.Millisecond), s.Rate())
}

// lineList names the first of n failed lines, sorted, and how many more there were.
func lineList(lines []int, n int) string {
	lines = slices.Sorted(slices.Values(lines))
	s := "lines " + joinInts(lines)
	if more := n - len(lines); more > 0 {
		s += fmt.Sprintf(" and %d more", more)
	}
	return s
}

func joinInts(xs []int) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprint(x)
	}
	return strings.Join(parts, ",")
}

func runPause(ctx context.Context, verb string, args []string, env Env) (int, error) {
	var c common
	fs := verbFlags(verb, env, &c)
	pos, err := parse(fs, args)
	if err != nil {
		return ExitUsage, err
	}
	if len(pos) > 0 {
		return ExitUsage, usageError{fmt.Errorf("%s takes no arguments (-queue names the queue)", verb)}
	}
	rdb, in, code, err := openInspector(ctx, c)
	if err != nil {
		return code, err
	}
	defer rdb.Close()
	if verb == "pause" {
		err = in.Pause(ctx)
	} else {
		err = in.Resume(ctx)
	}
	if err != nil {
		return ExitFailed, err
	}
	fmt.Fprintf(env.Stdout, "queue %s %sd\n", c.queue, verb)
	return ExitOK, nil
}

// runDLQ runs one dead-letter verb.
func runDLQ(ctx context.Context, args []string, env Env) (int, error) {
	if len(args) == 0 {
		return ExitUsage, usageError{errors.New("dlq needs list, requeue, purge or export; see enqueue dlq -h")}
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(env.Stdout, dlqUsageText)
		return ExitOK, flag.ErrHelp
	}
	verbs := map[string]func(context.Context, []string, Env) (int, error){
		"list": dlqList, "export": dlqExport, "requeue": dlqRequeue, "purge": dlqPurge,
	}
	run, ok := verbs[args[0]]
	if !ok {
		return ExitUsage, usageError{fmt.Errorf("unknown dlq command %q: want list, requeue, purge or export; see enqueue dlq -h", args[0])}
	}
	return run(ctx, args[1:], env)
}

// dlqFlags are the flags every dlq verb takes.
type dlqFlags struct {
	common
	reason      string
	showSecrets bool // list and export only
}

// showFlag defines --show-secrets, for the verbs that show requests.
func showFlag(fs *envflag.Set, f *dlqFlags) {
	fs.Bool(&f.showSecrets, "show-secrets", "", false, "show end users' credentials instead of withholding them (sealed ones need "+tasks.EncryptionKeysVar+")")
}

// shower returns how a dead letter is shown: its credentials withheld, or with --show-secrets opened
// (sealed ones with the keys; one that cannot be opened stays withheld, its error in place of
// the sealed secrets). --show-secrets without keys is refused when it would show nothing more.
func (f dlqFlags) shower() (func(inspect.DeadLetter) inspect.DeadLetter, error) {
	if !f.showSecrets {
		return func(e inspect.DeadLetter) inspect.DeadLetter {
			e.Request, e.EndUser = tasks.Redact(e.Request), tasks.RedactEndUser(e.EndUser)
			return e
		}, nil
	}
	cfg, err := f.secrets()
	if err != nil {
		return nil, err
	}
	return func(e inspect.DeadLetter) inspect.DeadLetter {
		p := e.Payload()
		if err := p.Open(cfg.Keys); err != nil {
			e.Secrets = "not opened: " + err.Error()
			return e
		}
		e.Request, e.EndUser, e.Secrets = p.Request, p.EndUser, ""
		return e
	}, nil
}

func newDLQFlags(verb string, env Env, f *dlqFlags) *envflag.Set {
	fs := verbFlags("dlq "+verb, env, &f.common)
	fs.String(&f.reason, "reason", "", "", "only dead letters of this reason")
	return fs
}

// parseReason reads --reason; empty means every reason.
func (f dlqFlags) parseReason() (tasks.Reason, error) {
	if f.reason == "" {
		return "", nil
	}
	r, err := tasks.ParseReason(f.reason)
	if err != nil {
		return "", usageError{err}
	}
	return r, nil
}

// parseSelection parses a dlq verb's arguments into its flags, the ids it names and the reason.
func parseSelection(fs *envflag.Set, f *dlqFlags, args []string) ([]string, tasks.Reason, error) {
	ids, err := parse(fs, args)
	if err != nil {
		return nil, "", err
	}
	reason, err := f.parseReason()
	return ids, reason, err
}

// openInspector opens the queue's Redis and checks that it answers and, unless c.force, that
// something has used the queue.
func openInspector(ctx context.Context, c common) (redis.UniversalClient, *inspect.Inspector, int, error) {
	rdb, err := openRedis(c)
	if err != nil {
		return nil, nil, ExitUsage, err
	}
	if err := ping(ctx, rdb, c.redisURL); err != nil {
		rdb.Close()
		return nil, nil, ExitFailed, err
	}
	cfg, err := c.secrets()
	if err != nil {
		rdb.Close()
		return nil, nil, ExitUsage, err
	}
	cfg.Queue = c.queue
	in := inspect.New(rdb, cfg)
	if !c.force {
		known, err := in.Known(ctx)
		if err != nil {
			rdb.Close()
			return nil, nil, ExitFailed, err
		}
		if !known {
			rdb.Close()
			return nil, nil, ExitUsage, usageError{fmt.Errorf("queue %s is unknown: no task or worker has used it; --force to act anyway", c.queue)}
		}
	}
	return rdb, in, ExitOK, nil
}

// oneOf checks that exactly one way of choosing dead letters was given.
func oneOf(verb, what string, chosen ...bool) error {
	n := 0
	for _, b := range chosen {
		if b {
			n++
		}
	}
	if n != 1 {
		return usageError{fmt.Errorf("dlq %s takes %s (one of them)", verb, what)}
	}
	return nil
}

// selected lists the ids a requeue or purge works on: those given, or those of the reason (every
// reason with --all).
func selected(ctx context.Context, in *inspect.Inspector, ids []string, reason tasks.Reason) ([]string, error) {
	if len(ids) > 0 {
		return ids, nil
	}
	return in.DeadLetterIDs(ctx, reason)
}

// dlqPurge drops dead letters for good and frees their pairs.
func dlqPurge(ctx context.Context, args []string, env Env) (int, error) {
	var (
		f   dlqFlags
		all bool
	)
	fs := newDLQFlags("purge", env, &f)
	fs.Bool(&all, "all", "", false, "every dead letter")
	ids, reason, err := parseSelection(fs, &f, args)
	if err != nil {
		return ExitUsage, err
	}
	if err := oneOf("purge", "ids, --reason R or --all", len(ids) > 0, reason != "", all); err != nil {
		return ExitUsage, err
	}
	rdb, in, code, err := openInspector(ctx, f.common)
	if err != nil {
		return code, err
	}
	defer rdb.Close()
	if ids, err = selected(ctx, in, ids, reason); err != nil {
		return ExitFailed, err
	}
	res, err := in.Purge(ctx, ids)
	out := env.Stdout
	fmt.Fprintf(out, "purged: %d\n", len(res.Purged))
	if len(res.Missing) > 0 {
		fmt.Fprintf(out, "not found: %d\n", len(res.Missing))
	}
	if len(res.Busy) > 0 {
		fmt.Fprintf(out, "left (a job for the pair is queued or running): %s\n", strings.Join(res.Busy, " "))
	}
	if err != nil {
		return ExitFailed, err
	}
	if len(res.Missing) > 0 || len(res.Busy) > 0 {
		return ExitRejected, nil
	}
	return ExitOK, nil
}

// dlqRequeue queues dead letters again, with the requests they hold or, with --file, with the
// corrected rows of a file.
func dlqRequeue(ctx context.Context, args []string, env Env) (int, error) {
	var (
		f              dlqFlags
		all            bool
		fixed, rejects string
		format         string
	)
	fs := newDLQFlags("requeue", env, &f)
	fs.Bool(&all, "all", "", false, "every dead letter")
	fs.String(&fixed, "file", "", "", "a file of corrected rows (.jsonl/.ndjson/.csv, \"-\" for stdin; --format jsonl|csv): each row replaces its pair's dead letter and is queued")
	formatFlag(fs, &format)
	fs.String(&rejects, "rejects", "", "", "with --file: where malformed rows go (default: FILE.rejects.jsonl)")
	ids, reason, err := parseSelection(fs, &f, args)
	if err != nil {
		return ExitUsage, err
	}
	if err := oneOf("requeue", "ids, --reason R, --all or --file FIXED", len(ids) > 0, reason != "", all, fixed != ""); err != nil {
		return ExitUsage, err
	}
	if rejects != "" && fixed == "" {
		return ExitUsage, usageError{errors.New("--rejects goes with --file")}
	}
	if format != "" && fixed == "" {
		return ExitUsage, usageError{errors.New("--format goes with --file")}
	}
	if fixed != "" {
		// Before Redis is asked, as enqueue file does, so that the exit code does not depend on it.
		if _, err := inputFormat(fixed, format); err != nil {
			return ExitUsage, err
		}
	}
	rdb, in, code, err := openInspector(ctx, f.common)
	if err != nil {
		return code, err
	}
	defer rdb.Close()
	if fixed != "" {
		return requeueFile(ctx, in, inspect.RequeueFileOptions{Path: fixed, Format: format, Stdin: env.Stdin, RejectsPath: rejects}, env.Stdout)
	}
	if ids, err = selected(ctx, in, ids, reason); err != nil {
		return ExitFailed, err
	}
	res, err := in.Requeue(ctx, ids)
	out := env.Stdout
	fmt.Fprintf(out, "requeued: %d\n", len(res.Requeued))
	if len(res.Busy) > 0 {
		fmt.Fprintf(out, "left (a job for the pair is queued or running): %s\n", strings.Join(res.Busy, " "))
	}
	if len(res.Missing) > 0 {
		fmt.Fprintf(out, "not found: %s\n", strings.Join(res.Missing, " "))
	}
	if len(res.Invalid) > 0 {
		fmt.Fprintf(out, "left (their request is not valid; fix the rows and run `dlq requeue --file FIXED`, or purge them): %d\n", len(res.Invalid))
		for _, e := range res.Invalid {
			fmt.Fprintf(out, "  %s: %v\n", e.ID, e.Err)
		}
	}
	if err != nil {
		return ExitFailed, err
	}
	if len(res.Missing) > 0 || len(res.Busy) > 0 || len(res.Invalid) > 0 {
		return ExitRejected, nil
	}
	return ExitOK, nil
}

// requeueFile replaces dead letters with the corrected rows of a file and queues them. A run that
// never started (the input cannot be used, Redis failed before the first row) prints only its error.
func requeueFile(ctx context.Context, in *inspect.Inspector, o inspect.RequeueFileOptions, out io.Writer) (int, error) {
	sum, err := in.RequeueFile(ctx, o)
	var ie *producer.InputError
	switch {
	case errors.As(err, &ie):
		return ExitUsage, usageError{err}
	case err != nil && sum.Rows == 0 && ctx.Err() != nil:
		return interruptCode(ctx), errors.New("interrupted before any row was requeued")
	case err != nil && sum.Rows == 0:
		return ExitFailed, fmt.Errorf("%w: nothing was requeued", err)
	}
	fmt.Fprintf(out, "requeued: %d\n", sum.Requeued)
	if sum.NotDeadLettered > 0 {
		fmt.Fprintf(out, "not dead-lettered (nothing done; lines %s): %d\n", joinInts(sum.NotDeadLetteredLines), sum.NotDeadLettered)
	}
	if sum.Busy > 0 {
		fmt.Fprintf(out, "left (a job for the pair is queued or running; lines %s): %d\n", joinInts(sum.BusyLines), sum.Busy)
	}
	fmt.Fprintf(out, "rejected: %d\n", sum.Rejected)
	if sum.RejectsPath != "" {
		fmt.Fprintf(out, "rejects: %s\n", sum.RejectsPath)
	}
	switch {
	case err != nil:
		return ExitFailed, err
	case sum.Rejected > 0 || sum.NotDeadLettered > 0 || sum.Busy > 0:
		return ExitRejected, nil
	}
	return ExitOK, nil
}

// dlqList prints the dead letters as a table, or with --json as one JSON array.
func dlqList(ctx context.Context, args []string, env Env) (int, error) {
	var (
		f      dlqFlags
		asJSON bool
	)
	fs := newDLQFlags("list", env, &f)
	fs.Bool(&asJSON, "json", "", false, "print one JSON array")
	showFlag(fs, &f)
	ids, reason, err := parseSelection(fs, &f, args)
	if err != nil {
		return ExitUsage, err
	}
	if len(ids) > 0 {
		return ExitUsage, usageError{errors.New("dlq list takes no ids")}
	}
	rdb, in, code, err := openInspector(ctx, f.common)
	if err != nil {
		return code, err
	}
	defer rdb.Close()
	out := env.Stdout
	if asJSON {
		// Streamed element by element, so that a million entries need no more memory than one page.
		bw := newJSONArray(out)
		show, err := f.shower()
		if err != nil {
			return ExitUsage, err
		}
		err = in.DeadLetters(ctx, reason, func(e inspect.DeadLetter) error { return bw.add(show(e)) })
		if cerr := bw.close(); err == nil {
			err = cerr
		}
		if err != nil {
			return ExitFailed, err
		}
		return ExitOK, nil
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tOP\tREASON\tATTEMPTS\tFAILED AT\tERROR")
	n := 0
	err = in.DeadLetters(ctx, reason, func(e inspect.DeadLetter) error {
		n++
		msg := e.Error
		if len(msg) > 120 {
			msg = msg[:117] + "..."
		}
		_, err := fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", e.ID, e.Op, e.Reason, e.Attempts, e.FailedAt.Format(time.RFC3339), msg)
		return err
	})
	tw.Flush()
	if err != nil {
		return ExitFailed, err
	}
	fmt.Fprintf(out, "%d dead letters\n", n)
	return ExitOK, nil
}

// dlqExport prints the dead letters' requests as JSONL, ready to fix and requeue with --file. Their
// credentials are withheld (tasks.Withheld), which `dlq requeue --file` reads as the dead letter's
// own, so that the export holds no secret and loses none.
func dlqExport(ctx context.Context, args []string, env Env) (int, error) {
	var f dlqFlags
	fs := newDLQFlags("export", env, &f)
	showFlag(fs, &f)
	ids, reason, err := parseSelection(fs, &f, args)
	if err != nil {
		return ExitUsage, err
	}
	if len(ids) > 0 {
		return ExitUsage, usageError{errors.New("dlq export takes no ids")}
	}
	rdb, in, code, err := openInspector(ctx, f.common)
	if err != nil {
		return code, err
	}
	defer rdb.Close()
	show, err := f.shower()
	if err != nil {
		return ExitUsage, err
	}
	enc := json.NewEncoder(env.Stdout)
	if err := in.DeadLetters(ctx, reason, func(e inspect.DeadLetter) error { return enc.Encode(show(e).Request) }); err != nil {
		return ExitFailed, err
	}
	return ExitOK, nil
}

// jsonArray writes a JSON array one element at a time.
type jsonArray struct {
	w   io.Writer
	n   int
	err error
}

func newJSONArray(w io.Writer) *jsonArray {
	a := &jsonArray{w: w}
	_, a.err = io.WriteString(w, "[")
	return a
}

func (a *jsonArray) add(v any) error {
	if a.err != nil {
		return a.err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	sep := "\n"
	if a.n > 0 {
		sep = ",\n"
	}
	a.n++
	if _, a.err = io.WriteString(a.w, sep); a.err == nil {
		_, a.err = a.w.Write(b)
	}
	return a.err
}

func (a *jsonArray) close() error {
	if a.err != nil {
		return a.err
	}
	_, err := io.WriteString(a.w, "\n]\n")
	return err
}

// OSEnv is the process's real environment.
func OSEnv() Env {
	return Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Lookup: os.LookupEnv, Install: logging.Install}
}

// closeAfterRun closes the client of an `enqueue file` run. After an interrupt it waits at most a
// second: closing the autopipeliner waits for the batches still in flight, which a hung Redis holds
// for up to 30 s, and the process is about to exit anyway.
func closeAfterRun(ctx context.Context, rdb redis.UniversalClient) {
	if ctx.Err() == nil {
		rdb.Close()
		return
	}
	closed := make(chan struct{})
	go func() {
		rdb.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(time.Second):
	}
}

// warnEviction says on w, in one line, when Redis may drop the jobs about to be queued: its
// maxmemory-policy evicts, or it could not be read. It never stops the run: the policy is the
// operator's to change, and the worker keeps watching it.
func warnEviction(ctx context.Context, rdb redis.UniversalClient, w io.Writer) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := redisevict.Read(ctx, rdb)
	switch {
	case errors.Is(err, redisevict.ErrRefused):
		fmt.Fprintf(w, "warning: could not check Redis's maxmemory-policy (%v): make sure it is noeviction, or a full Redis silently drops queued jobs\n", err)
	case err == nil && st.Evicting():
		fmt.Fprintf(w, "warning: Redis's maxmemory-policy is %s, not noeviction: when it reaches maxmemory (%d bytes) it silently drops keys, queued jobs among them; set maxmemory-policy noeviction\n", st.Policy, st.MaxMemory)
	}
}
