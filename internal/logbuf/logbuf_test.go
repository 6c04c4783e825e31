package logbuf

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/versori/activator/internal/testutil"
)

func TestWriterKeepsUntilFlushOrFull(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		size       int
		writes     []string
		wantBefore string // what out holds before Flush
		wantOuts   int    // writes to out before Flush
	}{
		{"small writes are kept", 16, []string{"a\n", "b\n"}, "", 0},
		{"a write that does not fit flushes what is kept first", 4, []string{"ab\n", "cd\n"}, "ab\n", 1},
		{"exactly full is kept", 6, []string{"ab\n", "cd\n"}, "", 0},
		{"a write of the buffer's size goes through after what is kept", 4, []string{"a\n", "long\n"}, "a\nlong\n", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out testutil.SyncBuffer
			w := New(&out, tt.size)
			for _, s := range tt.writes {
				if n, err := w.Write([]byte(s)); err != nil || n != len(s) {
					t.Fatalf("Write(%q) = %d, %v", s, n, err)
				}
			}
			if got := out.String(); got != tt.wantBefore || out.Writes() != tt.wantOuts {
				t.Fatalf("before Flush: out holds %q in %d writes, want %q in %d", got, out.Writes(), tt.wantBefore, tt.wantOuts)
			}
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			if got, want := out.String(), strings.Join(tt.writes, ""); got != want {
				t.Fatalf("after Flush: out holds %q, want %q", got, want)
			}
		})
	}
}

// TestWriterConcurrentLinesStayWholeAndOrdered writes from many goroutines through a small buffer,
// so that flushes by size, by Flush and by Run all race with writes.
func TestWriterConcurrentLinesStayWholeAndOrdered(t *testing.T) {
	t.Parallel()
	var out testutil.SyncBuffer
	w := New(&out, 256)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx, time.Millisecond)
	}()
	const writers, lines = 8, 500
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range lines {
				if _, err := fmt.Fprintf(w, "g%d line %04d %s\n", g, i, strings.Repeat("x", i%40)); err != nil {
					t.Error(err)
					return
				}
				if i%97 == 0 {
					_ = w.Flush()
				}
			}
		})
	}
	wg.Wait()
	cancel()
	<-done // Run flushes once more when ctx is done

	next := make([]int, writers)
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(got) != writers*lines {
		t.Fatalf("out holds %d lines, want %d", len(got), writers*lines)
	}
	for _, l := range got {
		var g, i int
		if _, err := fmt.Sscanf(l, "g%d line %d", &g, &i); err != nil || g < 0 || g >= writers {
			t.Fatalf("torn line %q", l)
		}
		if want := fmt.Sprintf("g%d line %04d %s", g, i, strings.Repeat("x", i%40)); l != want {
			t.Fatalf("line %q, want %q", l, want)
		}
		if i != next[g] {
			t.Fatalf("writer %d's line %d came when %d was due", g, i, next[g])
		}
		next[g]++
	}
	if out.Writes() >= writers*lines/4 {
		t.Errorf("%d writes to out for %d lines: not batched", out.Writes(), writers*lines)
	}
}

func TestFlushAtWritesWarningsAtOnce(t *testing.T) {
	t.Parallel()
	var out testutil.SyncBuffer
	w := New(&out, DefaultSize)
	log := slog.New(FlushAt(slog.NewJSONHandler(w, nil), w, slog.LevelWarn)).With("worker", "w1")
	log.Info("job", "n", 1)
	if out.String() != "" {
		t.Fatalf("an info line was written at once: %q", out.String())
	}
	log.WithGroup("g").Warn("retrying", "n", 2)
	got := out.String()
	if !strings.Contains(got, `"msg":"job"`) || !strings.Contains(got, `"msg":"retrying"`) || !strings.Contains(got, `"g":{"n":2}`) {
		t.Fatalf("after a warning, out holds %q; want the info line, then the warning with its group", got)
	}
	if i, j := strings.Index(got, `"job"`), strings.Index(got, `"retrying"`); i > j {
		t.Fatalf("lines out of order: %q", got)
	}
	if !strings.Contains(got, `"worker":"w1"`) {
		t.Fatalf("attributes of With lost: %q", got)
	}
}
