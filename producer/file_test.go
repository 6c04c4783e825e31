package producer_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/versori/activator/internal/batch"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/producer"
)

// TestEnqueueFileCountsItsBatch checks the batch's queued counter, written behind the run: it holds
// what the run queued, and a dry run or a run that queues nothing writes no counter at all.
func TestEnqueueFileCountsItsBatch(t *testing.T) {
	t.Parallel()
	const n = 1000
	db := testutil.Redis(t)
	// Its own database: a pair is activated from the queue it was first queued on, so the same rows
	// on another queue of the same Redis would queue nothing.
	plainDB := testutil.Redis(t)
	ctx := context.Background()
	p := producer.New(db.Client, producer.Config{})
	plain := producer.New(plainDB.Client, producer.Config{Queue: "plain"})
	path := testutil.WriteRows(t, n)
	tests := []struct {
		name       string
		db         *testutil.RedisDB
		p          *producer.Producer
		opts       producer.FileOptions
		wantQueued int64 // -1: no counter
		wantSum    producer.Summary
	}{
		{"dry run", db, p, producer.FileOptions{Path: path, Batch: "dry", DryRun: true}, -1, producer.Summary{Rows: n, Enqueued: n}},
		{"first run", db, p, producer.FileOptions{Path: path, Batch: "first"}, n, producer.Summary{Rows: n, Enqueued: n}},
		{"re-run", db, p, producer.FileOptions{Path: path, Batch: "again"}, -1, producer.Summary{Rows: n, Duplicates: n}},
		{"without the autopipeliner", plainDB, plain, producer.FileOptions{Path: path, Batch: "plain", NoAutopipeline: true}, n, producer.Summary{Rows: n, Enqueued: n}},
		{"re-run without the autopipeliner", plainDB, plain, producer.FileOptions{Path: path, Batch: "plain-again", NoAutopipeline: true}, -1, producer.Summary{Rows: n, Duplicates: n}},
	}
	for _, tt := range tests { // in order: each run sees the queue the one before left
		sum, err := tt.p.EnqueueFile(ctx, tt.opts)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if sum.Rows != tt.wantSum.Rows || sum.Enqueued != tt.wantSum.Enqueued || sum.Duplicates != tt.wantSum.Duplicates ||
			sum.Failed != 0 || sum.CountErrors != 0 {
			t.Errorf("%s: summary %+v, want %+v", tt.name, sum, tt.wantSum)
		}
		st, err := batch.Read(ctx, tt.db.Client, tt.p.Queue(), tt.opts.Batch)
		switch {
		case tt.wantQueued < 0 && !errors.Is(err, batch.ErrUnknown):
			t.Errorf("%s: batch counter %+v, %v; want none", tt.name, st, err)
		case tt.wantQueued >= 0 && (err != nil || st.Queued != tt.wantQueued):
			t.Errorf("%s: batch queued %d, %v; want %d", tt.name, st.Queued, err, tt.wantQueued)
		}
	}
	for _, tt := range tests[len(tests)-2:] {
		if got := testutil.Pending(t, tt.db.Client, tt.p.Queue()); got != n {
			t.Errorf("queue %s: %d jobs pending, want %d", tt.p.Queue(), got, n)
		}
	}
	if got := testutil.Pending(t, db.Client, p.Queue()); got != n {
		t.Errorf("queue %s: %d jobs pending, want %d", p.Queue(), got, n)
	}
}

// TestEnqueueFileStopsWhenCancelled cancels a run part-way: the enqueues in flight finish, every
// other row is counted failed at once (the autopipeliner does not see ctx, so EnqueueFile checks
// it), and what the summary says was enqueued is exactly what is queued.
func TestEnqueueFileStopsWhenCancelled(t *testing.T) {
	t.Parallel()
	const n = 20000
	db := testutil.Redis(t)
	p := producer.New(db.Client, producer.Config{})
	path := testutil.WriteRows(t, n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sum, err := p.EnqueueFile(ctx, producer.FileOptions{Path: path, ProgressEvery: time.Millisecond,
		Progress: func(s producer.Summary) {
			if s.Enqueued >= 500 {
				cancel()
			}
		}})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("EnqueueFile = %v, want an interrupted error wrapping context.Canceled", err)
	}
	t.Logf("%+v", sum)
	if sum.Enqueued+sum.Failed != sum.Rows || sum.Enqueued >= n/2 || sum.Failed == 0 {
		t.Errorf("enqueued %d + failed %d of %d rows read; want all accounted for, and the run stopped well before %d", sum.Enqueued, sum.Failed, sum.Rows, n/2)
	}
	if got := testutil.Pending(t, db.Client, p.Queue()); got != sum.Enqueued {
		t.Errorf("%d jobs pending, summary says %d enqueued", got, sum.Enqueued)
	}
}
