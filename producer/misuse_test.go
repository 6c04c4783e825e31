package producer_test

import (
	"context"
	"testing"

	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/producer"
)

// TestEnqueueRefusesTwoOperations: Update and Deactivate name what the job does; given both, the
// job would do whichever came last in the options, which no caller means. Refused, naming both,
// and nothing is queued.
func TestEnqueueRefusesTwoOperations(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ctx := context.Background()
	p := producer.New(db.Client, producer.Config{})
	for _, opts := range [][]producer.Option{
		{producer.Update(), producer.Deactivate()},
		{producer.Deactivate(), producer.Update()},
	} {
		res, err := p.Enqueue(ctx, testutil.Request("u-1"), opts...)
		if err == nil {
			t.Fatalf("Enqueue with two operations = %+v, want an error", res)
		}
	}
	if n := db.Client.DBSize(ctx).Val(); n != 0 {
		keys := db.Client.Keys(ctx, "*").Val()
		t.Errorf("Redis holds %d keys after refused enqueues: %q", n, keys)
	}
}
