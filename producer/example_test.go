package producer_test

import (
	"context"
	"fmt"
	"log"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/producer"
	"github.com/versori/activator/versori"
)

// A vendor's signup handler enqueues one activation per new user. Make the Producer once, at start,
// on the Redis the workers use; Enqueue is safe to call again for the same pair (a retried request,
// a duplicate event): the second call queues nothing and says so.
func Example() {
	// An in-process Redis keeps the example self-contained; in production, the workers' Redis.
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	p := producer.New(rdb, producer.Config{Queue: "activations"})

	req := versori.ActivationRequest{
		UserID:        "user-42",
		IntegrationID: "01JDCRM0000000000000000000",
		Connections: []versori.ActivationConnection{
			{TemplateID: "01JDCRMTP10000000000000000", ConnectionID: "01JDC0NN000000000000000000"},
		},
	}
	ctx := context.Background()
	for range 2 {
		res, err := p.Enqueue(ctx, req, producer.WithBatch("signups"))
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(res.TaskID, res.Status)
	}

	// A malformed request is refused before it is queued, naming the field.
	_, err = p.Enqueue(ctx, versori.ActivationRequest{UserID: "user-43", IntegrationID: "crm"})
	fmt.Println(err)
	// Output:
	// act:01JDCRM0000000000000000000:user-42 enqueued
	// act:01JDCRM0000000000000000000:user-42 duplicate
	// integrationId: is not a ULID (26 Crockford base32 characters)
}
