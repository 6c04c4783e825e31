package intake_test

import (
	"context"
	"log"
	"os"
	"os/signal"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/intake"
	"github.com/versori/activator/producer"
)

// Run the intake in a process of your own, with the same Redis and queue as the workers. `enqueue
// serve` does the same from the command line.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()
	srv, err := intake.New(intake.Config{
		Addr:    "127.0.0.1:8080",
		Secrets: intake.SplitList(os.Getenv("INTAKE_WEBHOOK_SECRET")), // whsec_..., comma-separated
		Tokens:  intake.SplitList(os.Getenv("INTAKE_TOKENS")),
		Batch:   "signup",
	}, rdb, producer.New(rdb, producer.Config{Queue: "activations"}))
	if err != nil {
		log.Fatal(err) // intake.ErrNoAuth without a secret or token
	}
	if err := srv.ListenAndServe(ctx); err != nil { // until ctx is done, then a graceful shutdown
		log.Fatal(err)
	}
}
