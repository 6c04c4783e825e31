// Command worker runs activation jobs from the queue against Versori's Embedded API until SIGTERM or
// SIGINT, then lets in-flight calls finish (or hands their jobs back) and exits 0. Configuration is by
// environment variables, each also a flag; run with -h for the list.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/versori/activator/internal/cmd/workercmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	os.Exit(workercmd.Main(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr))
}
