package inspect_test

import (
	"context"
	"fmt"
	"log"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/inspect"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

// An operator's morning: how far last night's batch is, what is in the dead-letter store, and a
// pause while the vendor's API key is rotated.
func Example() {
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	p := producer.New(rdb, producer.Config{Queue: "activations"})
	req := versori.ActivationRequest{
		UserID:        "user-42",
		IntegrationID: "01JDCRM0000000000000000000",
		Connections: []versori.ActivationConnection{
			{TemplateID: "01JDCRMTP10000000000000000", ConnectionID: "01JDC0NN000000000000000000"},
		},
	}
	if _, err := p.Enqueue(ctx, req, producer.WithBatch("nightly")); err != nil {
		log.Fatal(err)
	}

	in := inspect.New(rdb, producer.Config{Queue: "activations"})
	st, err := in.Batch(ctx, "nightly")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("batch %s: %d queued, %d done\n", st.ID, st.Queued, st.Done)

	n, err := in.CountDeadLetters(ctx, tasks.ReasonNotFound)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("dead letters for unknown users:", n)

	if err := in.Pause(ctx); err != nil {
		log.Fatal(err)
	}
	if err := in.Resume(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("paused and resumed", in.Queue())
	// Output:
	// batch nightly: 1 queued, 0 done
	// dead letters for unknown users: 0
	// paused and resumed activations
}
