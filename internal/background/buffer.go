package background

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// finalTimeout bounds a Buffer's last flush, made after Run's context is done, unless
// BufferConfig.Timeout is set.
const finalTimeout = 5 * time.Second

// minSpare is the capacity up to which a flushed batch's array is kept for the next one.
const minSpare = 1024

// BufferConfig configures a Buffer.
type BufferConfig[T any] struct {
	// Flush writes a batch. When it fails, it returns what to keep for the next flush: the batch
	// itself, a summary of it (counts added up), or nothing, and then the batch is lost. What it
	// keeps goes ahead of the items added since. It must not hold on to batch once it returns: the
	// buffer reuses its array.
	Flush func(ctx context.Context, batch []T) (keep []T, err error)
	// FlushAt, if positive, wakes Run as soon as this many items wait, rather than at the interval.
	FlushAt int
	// Size, if positive, bounds the items a Buffer holds: an Add that would go beyond it first
	// flushes what waits itself, and an Add of Size items or more is flushed at once, after what
	// waited. Such an Add waits for the flush; without Size, Add never waits for one.
	Size int
	// MaxPending, if positive, bounds what failed flushes keep: beyond it the oldest items are
	// dropped and counted (see Dropped).
	MaxPending int
	// Timeout, if positive, bounds each flush Run makes. Run's last flush is bounded by Timeout or,
	// without it, by 5 s.
	Timeout time.Duration
	// OnError, if set, is told of each of Run's flushes that fails while Run's context is live.
	OnError func(error)
}

// Buffer gathers items that jobs produce and writes them in batches, behind the jobs: Add only
// appends under a lock (unless Size is reached), and Run flushes every interval, as soon as FlushAt
// items wait, and once more when its context ends, so that a clean shutdown loses nothing. Items
// added when the process is killed are lost. It is safe for concurrent use; batches are written
// one at a time, in the order their items were added.
type Buffer[T any] struct {
	cfg      BufferConfig[T]
	kick     chan struct{}
	spareCap int

	flushMu sync.Mutex // held while a batch is written; taken before mu
	mu      sync.Mutex // guards pending and spare
	pending []T
	spare   []T // the last batch's array, emptied, so that a flush does not make Add allocate

	dropped atomic.Int64
}

// NewBuffer returns a Buffer that writes with cfg.Flush; Run must be running for batches to be
// written on time.
func NewBuffer[T any](cfg BufferConfig[T]) *Buffer[T] {
	b := &Buffer[T]{cfg: cfg, kick: make(chan struct{}, 1), spareCap: 4 * max(cfg.Size, cfg.FlushAt, minSpare)}
	if cfg.Size > 0 {
		b.pending = make([]T, 0, cfg.Size)
	}
	return b
}

// Add keeps items, together and in order, for the next flush. Its error is that of a flush it made
// itself, when Size was reached; otherwise it is nil.
func (b *Buffer[T]) Add(items ...T) error {
	b.mu.Lock()
	n := len(b.pending)
	if b.cfg.Size > 0 && n+len(items) > b.cfg.Size {
		b.mu.Unlock()
		return b.addFull(items)
	}
	b.pending = append(b.pending, items...)
	b.mu.Unlock()
	// Only when the count crosses FlushAt: while Redis is away, items above it must not keep
	// waking Run for flushes bound to fail.
	if at := b.cfg.FlushAt; at > 0 && n < at && n+len(items) >= at {
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
	return nil
}

// addFull flushes what waits, then items at once if they fill the buffer by themselves, or else
// keeps them.
func (b *Buffer[T]) addFull(items []T) error {
	// flushMu before mu: nothing added after this point goes out before items.
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	ctx := context.Background()
	if err := b.flushLocked(ctx); err != nil {
		return err
	}
	if len(items) >= b.cfg.Size {
		// A copy, so that items does not escape: Add's callers then pass it on the stack.
		keep, err := b.cfg.Flush(ctx, slices.Clone(items))
		if err != nil {
			b.requeue(keep)
		}
		return err
	}
	b.mu.Lock()
	b.pending = append(b.pending, items...)
	b.mu.Unlock()
	return nil
}

// Flush writes what waits, as one batch, now. When it fails, what cfg.Flush keeps waits for the
// next flush, up to MaxPending.
func (b *Buffer[T]) Flush(ctx context.Context) error {
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	return b.flushLocked(ctx)
}

// flushLocked swaps the pending items for the spare array, so that Add does not wait while they are
// written. flushMu must be held.
func (b *Buffer[T]) flushLocked(ctx context.Context) error {
	b.mu.Lock()
	batch := b.pending
	if len(batch) == 0 {
		b.mu.Unlock()
		return nil
	}
	b.pending, b.spare = b.spare[:0], nil
	b.mu.Unlock()

	keep, err := b.cfg.Flush(ctx, batch)
	if err != nil {
		b.requeue(keep)
		return err
	}
	if cap(batch) <= b.spareCap { // an array grown by a burst is not kept
		clear(batch) // nor are the items it points to
		b.mu.Lock()
		b.spare = batch[:0]
		b.mu.Unlock()
	}
	return nil
}

// requeue puts a failed flush's keep back in front of the items added since, dropping the oldest
// beyond MaxPending.
func (b *Buffer[T]) requeue(keep []T) {
	if len(keep) == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	// A new array: keep may be the caller's, from an Add that flushed at once.
	all := append(append(make([]T, 0, len(keep)+len(b.pending)), keep...), b.pending...)
	if over := len(all) - b.cfg.MaxPending; b.cfg.MaxPending > 0 && over > 0 {
		all = all[over:]
		b.dropped.Add(int64(over))
	}
	b.pending = all
}

// Dropped is how many items were dropped because failed flushes kept more than MaxPending.
func (b *Buffer[T]) Dropped() int64 { return b.dropped.Load() }

// Run flushes every interval, and as soon as FlushAt items wait, until ctx is done; then it flushes
// once more, on a context of its own bounded by Timeout (or 5 s), and returns that flush's error:
// what it could not write is left in the buffer.
func (b *Buffer[T]) Run(ctx context.Context, interval time.Duration) error {
	tick(ctx, interval, AfterInterval, b.kick, func(ctx context.Context) {
		if err := b.flushWithin(ctx, b.cfg.Timeout); err != nil && ctx.Err() == nil && b.cfg.OnError != nil {
			b.cfg.OnError(err)
		}
	})
	return b.flushWithin(context.WithoutCancel(ctx), cmp.Or(b.cfg.Timeout, finalTimeout))
}

func (b *Buffer[T]) flushWithin(ctx context.Context, d time.Duration) error {
	if d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	return b.Flush(ctx)
}
