// Package flushloop runs the loop behind activator's write-behind buffers (batch counters, job
// results): flush on a timer or when asked, and once more when the loop ends, so that a clean
// shutdown loses nothing.
package flushloop

import (
	"context"
	"time"
)

// finalTimeout bounds the last flush, which runs after ctx is done.
const finalTimeout = 5 * time.Second

// Run calls flush every interval and whenever kick receives, until ctx is done; then it calls flush
// once more with a fresh context of at most five seconds. kick may be nil.
func Run(ctx context.Context, every time.Duration, kick <-chan struct{}, flush func(context.Context)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finalTimeout)
			flush(fctx)
			cancel()
			return
		case <-t.C:
		case <-kick:
		}
		flush(ctx)
	}
}
