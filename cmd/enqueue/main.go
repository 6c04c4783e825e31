// Command enqueue puts activation requests into the queue from a file, and works the dead-letter
// store (list, requeue, purge, export). Run it without arguments for usage.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/versori/activator/internal/cmd/enqueuecmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	// The first signal asks for a clean stop (rows in flight finish, a summary says where to
	// resume); a second one, while that waits on a hung Redis, ends the process at once.
	go func() {
		<-ctx.Done()
		stop()
	}()
	os.Exit(enqueuecmd.Run(ctx, os.Args[1:], enqueuecmd.OSEnv()))
}
