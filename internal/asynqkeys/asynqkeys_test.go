package asynqkeys_test

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/activator/internal/asynqkeys"
	"github.com/versori/activator/internal/redistest"
)

// TestLayout checks the keys against a real asynq: a task's record exists under Task, and its id is
// in Lease while a handler runs it, and not after.
func TestLayout(t *testing.T) {
	t.Parallel()
	db := redistest.New(t)
	ctx := context.Background()
	const queue, id = "layout", "task-1"
	c := asynq.NewClientFromRedisClient(db.Client)
	if _, err := c.Enqueue(asynq.NewTask("t", nil), asynq.Queue(queue), asynq.TaskID(id), asynq.Retention(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n, err := db.Client.Exists(ctx, asynqkeys.Task(queue, id)).Result(); err != nil || n != 1 {
		t.Fatalf("Task key: EXISTS = %d, %v", n, err)
	}
	leased := make(chan bool, 1)
	srv := asynq.NewServerFromRedisClient(db.Client, asynq.Config{Concurrency: 1, Queues: map[string]int{queue: 1},
		TaskCheckInterval: 20 * time.Millisecond, LogLevel: asynq.FatalLevel})
	if err := srv.Start(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		_, err := db.Client.ZScore(ctx, asynqkeys.Lease(queue), id).Result()
		leased <- err == nil
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	select {
	case ok := <-leased:
		if !ok {
			t.Error("the running task is not in the Lease set")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the task did not run")
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := db.Client.ZScore(ctx, asynqkeys.Lease(queue), id).Result(); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the finished task is still in the Lease set")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
