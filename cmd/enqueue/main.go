// Command enqueue puts activation requests into the queue from a file, and works the dead-letter
// store (list, requeue, purge, export). Run it without arguments for usage.
package main

import (
	"context"
	"os"
	"syscall"

	"github.com/versori/activator/internal/cmd/enqueuecmd"
)

func main() {
	ctx, stop := enqueuecmd.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	// The first signal asks for a clean stop (rows in flight finish, a summary says where to
	// resume, and the exit code is 128 plus the signal's number); a second one, while that waits on a
	// hung Redis, ends the process at once.
	go func() {
		<-ctx.Done()
		stop()
	}()
	os.Exit(enqueuecmd.Run(ctx, os.Args[1:], enqueuecmd.OSEnv()))
}
