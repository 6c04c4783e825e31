// Package background holds the work a process does beside its jobs: loops that run every interval
// (Every, and Group to start them together and stop them on shutdown), write-behind buffers that
// gather what jobs produce and write it in batches (Buffer), HTTP listeners served until shutdown
// (Serve), and the context-aware Sleep they and the rate limiter share.
package background

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// Start says when a loop runs first.
type Start bool

const (
	// AtOnce runs a loop as it starts, then every interval.
	AtOnce Start = false
	// AfterInterval runs a loop one interval after it starts, then every interval.
	AfterInterval Start = true
)

// Every calls fn every interval until ctx is done, the first time as start says (AtOnce calls it
// even when ctx is already done). A call that takes longer than interval delays the next rather
// than overlapping it.
func Every(ctx context.Context, interval time.Duration, start Start, fn func(context.Context)) {
	tick(ctx, interval, start, nil, fn)
}

// tick is Every, also calling fn whenever kick receives (kick may be nil).
func tick(ctx context.Context, interval time.Duration, start Start, kick <-chan struct{}, fn func(context.Context)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	if start == AtOnce {
		fn(ctx)
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-kick:
		}
		if ctx.Err() != nil { // both were ready, and select chose the tick
			return
		}
		fn(ctx)
	}
}

// Sleep waits d, or returns ctx's error if ctx ends first. A wait of zero or less returns at once.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Group runs a process's background loops on one context and stops them together. Each loop has a
// name, which its logged failures carry.
type Group struct {
	log  *slog.Logger
	ctx  context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup
}

// NewGroup returns a Group that logs to log (slog.Default() if nil). Its loops run until Stop,
// whatever happens to the contexts of those who start them.
func NewGroup(log *slog.Logger) *Group {
	if log == nil {
		log = slog.Default()
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Group{log: log, ctx: ctx, stop: stop}
}

// Go runs run in its own goroutine until Stop. An error it returns is logged as "<name> stopped",
// unless it is the cancellation Stop caused.
func (g *Group) Go(name string, run func(context.Context) error) {
	g.wg.Go(func() {
		err := run(g.ctx)
		if err != nil && !(g.ctx.Err() != nil && errors.Is(err, context.Canceled)) {
			g.log.Error(name+" stopped", "error", err.Error())
		}
	})
}

// Every calls fn every interval until Stop, the first time as start says. An error it returns is
// logged as "<name> failed", unless Stop cut it short; the loop goes on either way.
func (g *Group) Every(name string, interval time.Duration, start Start, fn func(context.Context) error) {
	g.wg.Go(func() {
		Every(g.ctx, interval, start, func(ctx context.Context) {
			if err := fn(ctx); err != nil && ctx.Err() == nil {
				g.log.Warn(name+" failed", "error", err.Error())
			}
		})
	})
}

// Stop cancels the loops' context and waits for every loop to return (a Buffer's Run makes its last
// flush first).
func (g *Group) Stop() {
	g.stop()
	g.wg.Wait()
}
