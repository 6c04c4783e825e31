package background

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// sink is a Flush func that records the batches it is given, failing while fail is set.
type sink struct {
	mu      sync.Mutex
	batches [][]int
	fail    bool
	keep    bool // on failure, keep the batch for the next flush
	flushed chan struct{}
}

var errDown = errors.New("down")

func (s *sink) flush(_ context.Context, batch []int) ([]int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		if s.keep {
			return batch, errDown
		}
		return nil, errDown
	}
	s.batches = append(s.batches, slices.Clone(batch))
	if s.flushed != nil {
		select {
		case s.flushed <- struct{}{}:
		default:
		}
	}
	return nil, nil
}

func (s *sink) setFail(fail bool) {
	s.mu.Lock()
	s.fail = fail
	s.mu.Unlock()
}

func (s *sink) all() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Concat(s.batches...)
}

func TestBufferFlush(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		cfg         BufferConfig[int]
		keep        bool
		steps       []string // "add", "fail", "ok"
		want        []int    // written, in order
		wantDropped int64
	}{
		{"writes in order", BufferConfig[int]{}, true, []string{"add", "add", "ok", "ok"}, []int{0, 1}, 0},
		{"a failed flush goes ahead of newer items", BufferConfig[int]{}, true,
			[]string{"add", "add", "fail", "add", "ok"}, []int{0, 1, 2}, 0},
		{"what a failed flush does not keep is lost", BufferConfig[int]{}, false,
			[]string{"add", "fail", "add", "ok"}, []int{1}, 0},
		{"beyond MaxPending the oldest are dropped", BufferConfig[int]{MaxPending: 3}, true,
			[]string{"add", "add", "fail", "add", "add", "fail", "ok"}, []int{1, 2, 3}, 1},
		{"twice failed, written once", BufferConfig[int]{}, true,
			[]string{"add", "fail", "fail", "add", "ok", "ok"}, []int{0, 1}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &sink{keep: tt.keep}
			tt.cfg.Flush = s.flush
			b := NewBuffer(tt.cfg)
			next := 0
			for _, step := range tt.steps {
				switch step {
				case "add":
					if err := b.Add(next); err != nil {
						t.Fatal(err)
					}
					next++
				case "fail":
					s.setFail(true)
					if err := b.Flush(context.Background()); !errors.Is(err, errDown) {
						t.Fatalf("failing Flush = %v", err)
					}
					s.setFail(false)
				case "ok":
					if err := b.Flush(context.Background()); err != nil {
						t.Fatal(err)
					}
				}
			}
			if got := s.all(); !slices.Equal(got, tt.want) {
				t.Errorf("written %v, want %v", got, tt.want)
			}
			if got := b.Dropped(); got != tt.wantDropped {
				t.Errorf("Dropped = %d, want %d", got, tt.wantDropped)
			}
			if len(s.batches) > 0 && len(s.batches[len(s.batches)-1]) == 0 {
				t.Errorf("an empty batch was flushed")
			}
		})
	}
}

// TestBufferSize checks that with Size, Add flushes itself: what waits first, then an Add that fills
// the buffer by itself.
func TestBufferSize(t *testing.T) {
	t.Parallel()
	s := &sink{}
	b := NewBuffer(BufferConfig[int]{Flush: s.flush, Size: 4})
	steps := []struct {
		add  []int
		want [][]int // batches written so far
	}{
		{[]int{1, 2}, nil},
		{[]int{3, 4}, nil}, // exactly full is kept
		{[]int{5}, [][]int{{1, 2, 3, 4}}},
		{[]int{6, 7, 8, 9}, [][]int{{1, 2, 3, 4}, {5}, {6, 7, 8, 9}}},
	}
	for _, st := range steps {
		if err := b.Add(st.add...); err != nil {
			t.Fatal(err)
		}
		if !slices.EqualFunc(s.batches, st.want, slices.Equal) {
			t.Fatalf("after Add(%v): batches %v, want %v", st.add, s.batches, st.want)
		}
	}
	s.setFail(true)
	if err := b.Add(10, 11, 12, 13, 14); !errors.Is(err, errDown) {
		t.Fatalf("Add through a failing flush = %v, want its error", err)
	}
}

// TestBufferRun checks the ways Run writes: when FlushAt items wait, on the interval, and once more
// when its context ends, on a context that is not done, returning that flush's error.
func TestBufferRun(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		cfg      BufferConfig[int]
		interval time.Duration
		add      int
	}{
		{"flush at", BufferConfig[int]{FlushAt: 3}, time.Hour, 3},
		{"interval", BufferConfig[int]{}, time.Millisecond, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := &sink{flushed: make(chan struct{}, 1)}
			tt.cfg.Flush = s.flush
			b := NewBuffer(tt.cfg)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			go func() { done <- b.Run(ctx, tt.interval) }()
			for i := range tt.add {
				_ = b.Add(i)
			}
			<-s.flushed
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if got := s.all(); len(got) != tt.add {
				t.Errorf("written %v, want %d items", got, tt.add)
			}
		})
	}

	t.Run("end", func(t *testing.T) {
		t.Parallel()
		var live bool
		var deadline bool
		b := NewBuffer(BufferConfig[int]{Flush: func(ctx context.Context, batch []int) ([]int, error) {
			_, deadline = ctx.Deadline()
			live = ctx.Err() == nil
			return batch, errDown
		}})
		_ = b.Add(1)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := b.Run(ctx, time.Hour); !errors.Is(err, errDown) {
			t.Fatalf("Run = %v, want the last flush's error", err)
		}
		if !live || !deadline {
			t.Errorf("last flush's context: live %v, deadline %v; want a live one with a deadline", live, deadline)
		}
	})
}

// TestBufferConcurrent adds from many goroutines while Run and Flush write and half the flushes
// fail: every item is written exactly once, and each goroutine's in order.
func TestBufferConcurrent(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var written []int
	calls := 0
	flush := func(_ context.Context, batch []int) ([]int, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls%2 == 0 {
			return batch, errDown
		}
		written = append(written, batch...)
		return nil, nil
	}
	b := NewBuffer(BufferConfig[int]{Flush: flush, FlushAt: 64})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- b.Run(ctx, time.Millisecond) }()
	const adders, items = 8, 2000
	var wg sync.WaitGroup
	for g := range adders {
		wg.Go(func() {
			for i := range items {
				_ = b.Add(g*items + i)
				if i%500 == 0 {
					_ = b.Flush(context.Background())
				}
			}
		})
	}
	wg.Wait()
	cancel()
	if err := <-done; err != nil {
		// The last flush may be one that fails: write what it kept.
		if err := b.Flush(context.Background()); err != nil {
			if err := b.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(written) != adders*items {
		t.Fatalf("%d items written, want %d", len(written), adders*items)
	}
	next := make([]int, adders)
	seen := make([]bool, adders*items)
	for _, v := range written {
		if seen[v] {
			t.Fatalf("item %d written twice", v)
		}
		seen[v] = true
		g, i := v/items, v%items
		if i != next[g] {
			t.Fatalf("goroutine %d's item %d came when %d was due", g, i, next[g])
		}
		next[g]++
	}
}

// BenchmarkBufferAdd is the cost of one Add from many goroutines, with a flush every 512 items.
func BenchmarkBufferAdd(b *testing.B) {
	type entry struct{ queue, id, result string }
	buf := NewBuffer(BufferConfig[entry]{Flush: func(context.Context, []entry) ([]entry, error) { return nil, nil }})
	var mu sync.Mutex
	n := 0
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_ = buf.Add(entry{"q", "task", "activation"})
			mu.Lock()
			n++
			flush := n%512 == 0
			mu.Unlock()
			if flush {
				_ = buf.Flush(context.Background())
			}
		}
	})
}
