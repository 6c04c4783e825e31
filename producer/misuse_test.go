package producer_test

import (
	"context"
	"strings"
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
		if err == nil || !strings.Contains(err.Error(), "update") || !strings.Contains(err.Error(), "deactivate") {
			t.Fatalf("Enqueue with two operations = %+v, %v; want an error naming both", res, err)
		}
	}
	for _, k := range db.Client.Keys(ctx, "*").Val() {
		if !strings.HasPrefix(k, "activator-test:") { // the test's own claim
			t.Errorf("Redis holds %q after refused enqueues", k)
		}
	}
}
