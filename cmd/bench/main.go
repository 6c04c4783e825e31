// Command bench compares activator's worker with a plain asynq worker on the same jobs, measures its
// scaling (WORKER_SERVERS, worker processes under one rate limit) and `enqueue file`, and prints the
// figures; BENCHMARKS.md has them. It builds and runs the real binaries as separate processes against
// the Redis at -redis-addr, in database -redis-db, which it flushes. Run with -h for the flags.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/versori/activator/internal/cmd/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(bench.Main(ctx, os.Args[1:], os.Stdout, os.Stderr))
}
