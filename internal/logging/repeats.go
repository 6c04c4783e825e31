package logging

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// RepeatHandler is a slog.Handler that writes a record at or above its level once per interval when
// it repeats word for word (the same level, message and attributes, from the same logger): the first
// at once, then, at the end of each interval in which it came again, the last of them with the
// attribute "repeated", how many times it came since it was last written. With Redis down, go-redis
// and asynq log the same refused connection several times a second; this keeps that to a line per
// interval, with the count. Records below the level (a job's outcome, one line each) pass through.
type RepeatHandler struct {
	next   slog.Handler
	min    slog.Level
	prefix string // the attributes and groups given to this logger, so that two loggers' lines differ
	s      *repeatState
}

// repeatState is shared by a RepeatHandler and the handlers its WithAttrs and WithGroup return.
type repeatState struct {
	every time.Duration

	mu      sync.Mutex
	seen    map[string]*repeat // by key, the records written in their current interval
	stopped bool
}

// repeat is one record written in its current interval.
type repeat struct {
	h     slog.Handler // the handler to write the count with
	last  slog.Record  // the last time it came again, if n > 0
	n     int          // how many times it came again in the interval
	timer *time.Timer  // the end of the interval
}

// Repeats returns a RepeatHandler on next for records at or above min, writing each once per every.
// Stop writes the counts still held.
func Repeats(next slog.Handler, min slog.Level, every time.Duration) *RepeatHandler {
	return &RepeatHandler{next: next, min: min, s: &repeatState{every: every, seen: map[string]*repeat{}}}
}

// Enabled is next's.
func (h *RepeatHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l)
}

// Handle writes r, unless it is a repeat within its interval: then it is counted.
func (h *RepeatHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < h.min {
		return h.next.Handle(ctx, r)
	}
	key := h.key(r)
	s := h.s
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return h.next.Handle(ctx, r)
	}
	if e, ok := s.seen[key]; ok {
		e.n++
		e.last = r.Clone()
		s.mu.Unlock()
		return nil
	}
	e := &repeat{h: h.next}
	s.seen[key] = e
	// Set under the lock that expire takes first, so that it sees the timer.
	e.timer = time.AfterFunc(s.every, func() { s.expire(key, e) })
	s.mu.Unlock()
	return h.next.Handle(ctx, r)
}

// expire ends e's interval: a record that did not come again is forgotten, one that did is written
// with its count, and a new interval starts for it.
func (s *repeatState) expire(key string, e *repeat) {
	s.mu.Lock()
	if s.stopped || s.seen[key] != e {
		s.mu.Unlock()
		return
	}
	if e.n == 0 {
		delete(s.seen, key)
		s.mu.Unlock()
		return
	}
	r, n := e.last, e.n
	e.last, e.n = slog.Record{}, 0
	e.timer.Reset(s.every)
	s.mu.Unlock()
	writeRepeat(e.h, r, n)
}

func writeRepeat(h slog.Handler, r slog.Record, n int) {
	r.AddAttrs(slog.Int("repeated", n))
	_ = h.Handle(context.Background(), r)
}

// Stop writes the counts of records repeated in their current interval; records handled after it are
// written every time.
func (h *RepeatHandler) Stop() {
	s := h.s
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	var pending []*repeat
	for _, e := range s.seen {
		e.timer.Stop()
		if e.n > 0 {
			pending = append(pending, e)
		}
	}
	s.seen = nil
	s.mu.Unlock()
	for _, e := range pending {
		writeRepeat(e.h, e.last, e.n)
	}
}

// WithAttrs returns a RepeatHandler on next's WithAttrs, sharing h's counts.
func (h *RepeatHandler) WithAttrs(as []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.prefix)
	for _, a := range as {
		writeAttr(&b, a)
	}
	return &RepeatHandler{next: h.next.WithAttrs(as), min: h.min, prefix: b.String(), s: h.s}
}

// WithGroup returns a RepeatHandler on next's WithGroup, sharing h's counts.
func (h *RepeatHandler) WithGroup(name string) slog.Handler {
	return &RepeatHandler{next: h.next.WithGroup(name), min: h.min, prefix: h.prefix + "[" + name + "]", s: h.s}
}

// key is what makes two records the same: logger, level, message and attributes; not the time.
func (h *RepeatHandler) key(r slog.Record) string {
	var b strings.Builder
	b.WriteString(h.prefix)
	b.WriteByte(0)
	b.WriteString(r.Level.String())
	b.WriteByte(0)
	b.WriteString(r.Message)
	r.Attrs(func(a slog.Attr) bool {
		writeAttr(&b, a)
		return true
	})
	return b.String()
}

func writeAttr(b *strings.Builder, a slog.Attr) {
	b.WriteByte(0)
	b.WriteString(a.Key)
	b.WriteByte('=')
	b.WriteString(a.Value.Resolve().String())
}
