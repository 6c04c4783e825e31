package batch

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/tasks"
)

// TestOperationCounts reads a batch of every operation: queued by operation, the lifecycle's
// results, and what they make of done and finished. created_user is not an end: its jobs count as
// activated too.
func TestOperationCounts(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ctx := context.Background()
	now := time.Now()
	counts := map[string]int64{
		FieldQueued: 9, QueuedField(tasks.OpActivate): 3, QueuedField(tasks.OpUpdate): 3, QueuedField(tasks.OpDeactivate): 3,
		FieldActivated: 2, FieldCreatedUser: 1, FieldVariablesUpdated: 1, FieldDeactivated: 1, FieldAlreadyInactive: 1,
		FieldSuperseded: 2, FieldDeadPrefix + "not_found": 1,
	}
	if err := WriteAt(ctx, db.Client, "ops", map[string]map[string]int64{"b1": counts}, now); err != nil {
		t.Fatal(err)
	}
	s, err := ReadAt(ctx, db.Client, "ops", "b1", now)
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]int64{"activate": 3, "update": 3, "deactivate": 3}; !maps.Equal(s.QueuedByOp, want) {
		t.Errorf("QueuedByOp %v, want %v", s.QueuedByOp, want)
	}
	if s.Activated != 2 || s.CreatedUser != 1 || s.VariablesUpdated != 1 || s.Deactivated != 1 || s.AlreadyInactive != 1 || s.Superseded != 2 {
		t.Errorf("results %+v", s)
	}
	if s.Done != 8 || s.Remaining != 1 || s.Finished {
		t.Errorf("done %d remaining %d finished %v, want 8, 1, false", s.Done, s.Remaining, s.Finished)
	}
	if s.FirstDoneAt.IsZero() {
		t.Error("the lifecycle's results are ends: FirstDoneAt is unset")
	}
}
