// Package logbuf batches a process's log lines into few writes. A worker logs one line per job; at
// thousands of jobs a second, one write system call per line cost more CPU than formatting the line
// (and, behind a container runtime's pipe, wakes its reader each time). Lines are kept in memory
// and written together every flush interval, when the buffer fills, or at once for a record at or
// above a level (see FlushAt), so that warnings and errors are never late.
package logbuf

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/versori/activator/internal/flushloop"
)

// DefaultSize is the buffer size at which a write flushes without waiting for the interval.
const DefaultSize = 64 << 10

// Writer is an io.Writer that keeps what it is given until Flush. It is safe for concurrent use;
// each Write's bytes stay together and in order. Lines kept when the process is killed are lost.
type Writer struct {
	out  io.Writer
	size int

	flushMu sync.Mutex // serializes writes to out, so that swapped buffers go out in order
	mu      sync.Mutex // guards buf and spare
	buf     []byte
	spare   []byte
}

// New returns a Writer on out that flushes by itself once it holds size bytes (DefaultSize if size
// is not positive).
func New(out io.Writer, size int) *Writer {
	if size <= 0 {
		size = DefaultSize
	}
	return &Writer{out: out, size: size, buf: make([]byte, 0, size)}
}

// Write keeps p for the next flush, or flushes first when p would not fit. A p of the buffer's size
// or more is written through at once, after what is kept.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	if len(w.buf)+len(p) <= w.size {
		w.buf = append(w.buf, p...)
		w.mu.Unlock()
		return len(p), nil
	}
	w.mu.Unlock()
	// Flush takes flushMu before mu, so that nothing kept after this point goes out before p.
	w.flushMu.Lock()
	defer w.flushMu.Unlock()
	if err := w.flushLocked(); err != nil {
		return 0, err
	}
	if len(p) >= w.size {
		return w.out.Write(p)
	}
	w.mu.Lock()
	w.buf = append(w.buf, p...)
	w.mu.Unlock()
	return len(p), nil
}

// Flush writes out everything kept.
func (w *Writer) Flush() error {
	w.flushMu.Lock()
	defer w.flushMu.Unlock()
	return w.flushLocked()
}

// flushLocked swaps the buffer for the spare, so that Write does not wait for out while the kept
// bytes are written. flushMu must be held.
func (w *Writer) flushLocked() error {
	w.mu.Lock()
	b := w.buf
	w.buf = w.spare[:0]
	w.mu.Unlock()
	var err error
	if len(b) > 0 {
		_, err = w.out.Write(b)
	}
	w.mu.Lock()
	if cap(b) <= 4*w.size { // a buffer grown by a burst is not kept
		w.spare = b[:0]
	} else {
		w.spare = nil
	}
	w.mu.Unlock()
	return err
}

// Run flushes every interval until ctx is done, then once more.
func (w *Writer) Run(ctx context.Context, every time.Duration) {
	flushloop.Run(ctx, every, nil, func(context.Context) { _ = w.Flush() })
}

// FlushAt returns h, except that handling a record at or above level also flushes w, so that such a
// record and everything logged before it are written at once.
func FlushAt(h slog.Handler, w *Writer, level slog.Leveler) slog.Handler {
	return flushHandler{h: h, w: w, level: level}
}

type flushHandler struct {
	h     slog.Handler
	w     *Writer
	level slog.Leveler
}

func (f flushHandler) Enabled(ctx context.Context, l slog.Level) bool { return f.h.Enabled(ctx, l) }

func (f flushHandler) Handle(ctx context.Context, r slog.Record) error {
	err := f.h.Handle(ctx, r)
	if r.Level >= f.level.Level() {
		if ferr := f.w.Flush(); err == nil {
			err = ferr
		}
	}
	return err
}

func (f flushHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return flushHandler{h: f.h.WithAttrs(as), w: f.w, level: f.level}
}

func (f flushHandler) WithGroup(name string) slog.Handler {
	return flushHandler{h: f.h.WithGroup(name), w: f.w, level: f.level}
}
