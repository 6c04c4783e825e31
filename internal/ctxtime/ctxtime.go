// Package ctxtime holds the one context-aware sleep that the rate limiter, the job handler and the
// stand-in share.
package ctxtime

import (
	"context"
	"time"
)

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
