// Command demo runs activator end to end without a Redis server or a Versori account: an in-process
// Redis, the Versori stand-in with faults, the sample file, the real enqueue and worker code.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"

	"github.com/versori/activator/internal/cmd/demo"
)

func main() {
	var o demo.Options
	verbose := flag.Bool("v", false, "print the worker's JSON logs to stderr")
	flag.StringVar(&o.File, "file", "", "input file (.jsonl/.csv); default the embedded 1,000-row sample")
	flag.IntVar(&o.Concurrency, "concurrency", 50, "worker concurrency")
	flag.Parse()
	o.Faults = demo.DefaultFaults()
	if *verbose {
		o.Log = os.Stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	res, err := demo.Run(ctx, os.Stdout, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	if res.Duplicates > 0 {
		fmt.Fprintln(os.Stderr, "demo: duplicate activations were created")
		os.Exit(1)
	}
}
