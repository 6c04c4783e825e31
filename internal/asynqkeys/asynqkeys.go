// Package asynqkeys names the keys of asynq v0.26's private Redis layout that activator reads or
// guards its own writes on (asynq's internal/base). It is the one place that knows them: an asynq
// upgrade that moves them breaks TestLayout here, not a guarantee somewhere else.
package asynqkeys

// Task is the hash holding task id's record in queue.
func Task(queue, id string) string { return "asynq:{" + queue + "}:t:" + id }

// Lease is the sorted set of queue's active tasks, scored by when their lease ends; a task is in it
// while a worker's run of it holds the lease.
func Lease(queue string) string { return "asynq:{" + queue + "}:lease" }
