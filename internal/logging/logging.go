// Package logging sets up a process's log, once, at the start of a command: log/slog, JSON lines by
// default or text for a person at a terminal (LOG_FORMAT=text), optionally batched (internal/logbuf),
// with a warning or error repeated word for word written once per interval with a count (Repeats), and
// the loggers of the libraries the process uses routed into it (Install): go-redis's, and the standard
// log package's, which asynq's queue-metrics collector and asynqmon print to. asynq's own logger is
// given the process's logger through asynq.Config (package worker).
package logging

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/logbuf"
)

// Format is how log lines are written.
type Format string

// The formats.
const (
	JSON Format = "json" // one JSON object a line: for log collectors, the default
	Text Format = "text" // slog's key=value lines: for a person at a terminal
)

// ParseFormat reads a format's name, "json" or "text" (any case).
func ParseFormat(s string) (Format, error) {
	switch f := Format(strings.ToLower(strings.TrimSpace(s))); f {
	case JSON, Text:
		return f, nil
	}
	return "", fmt.Errorf("%q: want json or text", s)
}

// DefaultRepeatInterval is how often a warning or error repeated word for word is written, with the
// number of times it was repeated since it was last written.
const DefaultRepeatInterval = 10 * time.Second

// Options says how a process logs.
type Options struct {
	Format Format       // JSON if empty
	Level  slog.Leveler // slog.LevelInfo if nil
	// Flush, when positive, keeps lines below warning in memory and writes them together at most
	// this late (logbuf); a warning or error is written at once, with everything before it.
	Flush time.Duration
	// Repeat is how often a warning or error repeated word for word (the same message and
	// attributes) is written; DefaultRepeatInterval if 0; every time if negative.
	Repeat time.Duration
}

// New returns the logger on out that o describes, and stop, which writes what is still held (lines
// batched, counts of repeated lines not yet written) and must be called before the process exits.
// Lines logged after stop are written at once.
func New(out io.Writer, o Options) (l *slog.Logger, stop func()) {
	level := o.Level
	if level == nil {
		level = slog.LevelInfo
	}
	w, stopWriter := out, func() {}
	var lb *logbuf.Writer
	if o.Flush > 0 {
		lb = logbuf.New(out, logbuf.DefaultSize)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			lb.Run(ctx, o.Flush)
		}()
		w, stopWriter = lb, func() { cancel(); <-done }
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if o.Format == Text {
		h = slog.NewTextHandler(w, opts)
	} else {
		h = slog.NewJSONHandler(w, opts)
	}
	if lb != nil {
		h = logbuf.FlushAt(h, lb, slog.LevelWarn)
	}
	stopRepeats := func() {}
	if o.Repeat >= 0 {
		every := o.Repeat
		if every == 0 {
			every = DefaultRepeatInterval
		}
		r := Repeats(h, slog.LevelWarn, every)
		h, stopRepeats = r, r.Stop
	}
	return slog.New(h), func() {
		stopRepeats()
		stopWriter()
	}
}

// Install routes the loggers of the libraries the process uses into l: go-redis's (whose own writes
// plain "redis: 2026/12/03 … pool.go:770: …" lines to stderr), the standard log package's (asynq's
// queue-metrics collector and asynqmon print there) at warning level, and slog's default.
//
// Each of these is process-global by its library's design (redis.SetLogger, log.SetOutput,
// slog.SetDefault), so Install is called once, by a command as it starts (workercmd.Main, enqueue's
// commands, the stand-in's main), never from library code, whose callers may log elsewhere.
func Install(l *slog.Logger) {
	redis.SetLogger(redisLogger{l})
	slog.SetDefault(l)
	// After slog.SetDefault, which points the log package at l's handler at info level: a library
	// that prints through the log package has met a failure, not news.
	log.SetFlags(0)
	log.SetPrefix("")
	log.SetOutput(stdLogWriter{l})
}

// redisLogger is go-redis's logger as a slog one. go-redis logs only what went wrong (a failed dial,
// a bad connection discarded), hence warnings.
type redisLogger struct{ l *slog.Logger }

func (r redisLogger) Printf(ctx context.Context, format string, v ...any) {
	msg := strings.TrimPrefix(fmt.Sprintf(format, v...), "redis: ")
	r.l.Log(ctx, slog.LevelWarn, msg, "source", "go-redis")
}

// stdLogWriter takes the standard log package's lines, one per Write.
type stdLogWriter struct{ l *slog.Logger }

func (w stdLogWriter) Write(p []byte) (int, error) {
	w.l.Warn(strings.TrimRight(string(p), "\n"), "source", "log")
	return len(p), nil
}
