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
	"time"

	"github.com/versori/activator/internal/background"
)

// DefaultSize is the buffer size at which a write flushes without waiting for the interval.
const DefaultSize = 64 << 10

// Writer is an io.Writer that keeps what it is given until Flush. It is safe for concurrent use;
// each Write's bytes stay together and in order. Lines kept when the process is killed are lost, as
// are those of a write to out that fails.
type Writer struct {
	buf *background.Buffer[byte]
}

// New returns a Writer on out that flushes by itself once it holds size bytes (DefaultSize if size
// is not positive).
func New(out io.Writer, size int) *Writer {
	if size <= 0 {
		size = DefaultSize
	}
	write := func(_ context.Context, b []byte) ([]byte, error) {
		_, err := out.Write(b)
		return nil, err
	}
	return &Writer{buf: background.NewBuffer(background.BufferConfig[byte]{Flush: write, Size: size})}
}

// Write keeps p for the next flush, or flushes first when p would not fit. A p of the buffer's size
// or more is written through at once, after what is kept.
func (w *Writer) Write(p []byte) (int, error) {
	if err := w.buf.Add(p...); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes out everything kept.
func (w *Writer) Flush() error { return w.buf.Flush(context.Background()) }

// Run flushes every interval until ctx is done, then once more.
func (w *Writer) Run(ctx context.Context, every time.Duration) { _ = w.buf.Run(ctx, every) }

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
