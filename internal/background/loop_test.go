package background

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/versori/activator/internal/testutil"
)

func TestEveryStart(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		start Start
		want  int32 // calls before ctx ends, with an interval that never passes
	}{
		{"at once", AtOnce, 1},
		{"after an interval", AfterInterval, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var calls atomic.Int32
			ctx, cancel := context.WithCancel(context.Background())
			if tt.start == AfterInterval {
				cancel()
			}
			Every(ctx, time.Hour, tt.start, func(context.Context) {
				calls.Add(1)
				cancel()
			})
			cancel()
			if got := calls.Load(); got != tt.want {
				t.Errorf("%d calls, want %d", got, tt.want)
			}
		})
	}
}

func TestEveryRepeats(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	Every(ctx, time.Millisecond, AfterInterval, func(context.Context) {
		if calls++; calls == 3 {
			cancel()
		}
	})
	if calls != 3 {
		t.Errorf("%d calls, want 3", calls)
	}
}

func TestSleep(t *testing.T) {
	t.Parallel()
	if err := Sleep(context.Background(), 0); err != nil {
		t.Errorf("Sleep(0) = %v", err)
	}
	if err := Sleep(context.Background(), time.Microsecond); err != nil {
		t.Errorf("Sleep(1µs) = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Sleep(ctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep on a cancelled context = %v, want context.Canceled", err)
	}
}

// TestGroup checks that Stop stops every loop and waits for them, and what the group logs: a
// loop's failures and a long-running function's error, but not the cancellation Stop causes.
func TestGroup(t *testing.T) {
	t.Parallel()
	var out testutil.SyncBuffer
	g := NewGroup(slog.New(slog.NewTextHandler(&out, nil)))
	failed := make(chan struct{})
	var once sync.Once
	g.Every("sweep", time.Hour, AtOnce, func(context.Context) error {
		once.Do(func() { close(failed) })
		return errors.New("redis down")
	})
	g.Go("server", func(context.Context) error { return errors.New("port taken") })
	var stoppedClean atomic.Bool
	g.Go("poll", func(ctx context.Context) error {
		<-ctx.Done()
		stoppedClean.Store(true)
		return ctx.Err()
	})
	<-failed
	g.Stop()
	if !stoppedClean.Load() {
		t.Error("Stop returned before a loop did")
	}
	log := out.String()
	for _, want := range []string{`msg="sweep failed" error="redis down"`, `msg="server stopped" error="port taken"`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s:\n%s", want, log)
		}
	}
	if strings.Contains(log, "poll") {
		t.Errorf("Stop's cancellation was logged:\n%s", log)
	}
}
