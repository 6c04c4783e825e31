package enqueuecmd

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/versori/activator/inspect"
)

// TestPrintStatus checks what `enqueue status` says for each kind of batch, from figures as
// inspect.Batch works them out (TestSettle in internal/batch checks those).
func TestPrintStatus(t *testing.T) {
	t.Parallel()
	start := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		name         string
		s            inspect.BatchStatus
		want, absent []string
	}{
		{"running", inspect.BatchStatus{ID: "b1", Queued: 660_600, Activated: 21_600, Done: 21_600, Remaining: 639_000,
			FirstDoneAt: start, Rate: 180, RateWindow: time.Minute, AverageRate: 180, Running: 2 * time.Minute,
			Elapsed: 5 * time.Minute, ETA: 3550 * time.Second},
			[]string{"batch b1: running\n", "remaining: 639000\n", "rate: 180.0/s (last 1m0s)\n", "average: 180.0/s (over 2m0s since the first job ended)\n",
				"eta: 59m10s\n", "elapsed: 5m0s (since the batch was enqueued)\n"}, nil},
		{"done", inspect.BatchStatus{ID: "b1", Queued: 1000, Activated: 1000, Done: 1000, FirstDoneAt: start, Rate: 1000.0 / 120,
			AverageRate: 1000.0 / 120, Running: 2 * time.Minute, Elapsed: 3 * time.Minute, Finished: true},
			[]string{"batch b1: done\n", "rate: 8.3/s (from the first job's end to the last: 2m0s)\n", "elapsed: 3m0s (from enqueueing to the last job's end)\n"},
			[]string{"eta", "average"}},
		{"paused by an operator", inspect.BatchStatus{ID: "b1", Queued: 100, Activated: 40, Done: 40, Remaining: 60, FirstDoneAt: start,
			RateWindow: time.Minute, Running: time.Minute, AverageRate: 40.0 / 60, Paused: true, PausedReason: "operator"},
			[]string{"batch b1: paused by an operator (enqueue pause); `enqueue resume` starts it again\n", "eta: none while the queue is paused\n"}, nil},
		{"paused for a refused key", inspect.BatchStatus{ID: "b1", Queued: 100, Remaining: 100, Paused: true, PausedReason: "unauthorized"},
			[]string{"batch b1: paused by the workers: the API refused the API key (or the signing key)"}, nil},
		{"paused by the queue UI", inspect.BatchStatus{ID: "b1", Queued: 100, Remaining: 100, Paused: true},
			[]string{"batch b1: paused not by activator"}, nil},
		{"no worker yet", inspect.BatchStatus{ID: "b1", Queued: 100, Remaining: 100, Elapsed: 3 * time.Minute},
			[]string{"rate: none yet: no job has ended (is a worker running on queue activations?)\n"}, []string{"eta"}},
		{"stalled", inspect.BatchStatus{ID: "b1", Queued: 100, Activated: 40, Done: 40, Remaining: 60, FirstDoneAt: start,
			RateWindow: time.Minute, Running: 5 * time.Minute, AverageRate: 40.0 / 300},
			[]string{"rate: 0.0/s (last 1m0s)\n", "eta: unknown: no job ended in the last 1m0s\n"}, nil},
		{"updates", inspect.BatchStatus{ID: "b1", Queued: 10, QueuedByOp: map[string]int64{"update": 10}, Activated: 2, CreatedUser: 1,
			VariablesUpdated: 6, Superseded: 2, Done: 10, Finished: true},
			[]string{"queued: 10 (update 10)\nactivated: 2\nalready active: 0\nvariables updated: 6\nsuperseded: 2\ncreated user: 1\nretries: 0\n"},
			[]string{"deactivated", "inactive"}},
		{"activations and deactivations (an intake's batch)", inspect.BatchStatus{ID: "b1", Queued: 7,
			QueuedByOp: map[string]int64{"activate": 5, "deactivate": 2}, Remaining: 7},
			[]string{"queued: 7 (activate 5, deactivate 2)\n", "deactivated: 0\nalready inactive: 0\nsuperseded: 0\n"}, []string{"variables updated"}},
		{"activations alone", inspect.BatchStatus{ID: "b1", Queued: 7, QueuedByOp: map[string]int64{"activate": 7}, Remaining: 7},
			[]string{"queued: 7\nactivated: 0\nalready active: 0\nretries: 0\n"}, []string{"superseded", "created user"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var b bytes.Buffer
			printStatus(&b, tt.s, "activations")
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, b.String())
				}
			}
			for _, w := range tt.absent {
				if strings.Contains(b.String(), w) {
					t.Errorf("output has %q:\n%s", w, b.String())
				}
			}
		})
	}
}
