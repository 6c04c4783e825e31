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

// A vendor's code enqueues the whole lifecycle of a pair: its activation, a change of its dynamic
// variables (Update), and its deactivation when the user leaves (Deactivate, which needs the pair
// alone). Each is queued after the one before, and the pair ends in the state of the last one.
func ExampleDeactivate() {
	mr, err := miniredis.Run()
	if err != nil {
		log.Fatal(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	p := producer.New(rdb, producer.Config{Queue: "activations"})
	ctx := context.Background()

	req := versori.ActivationRequest{UserID: "user-42", IntegrationID: "01JDCRM0000000000000000000",
		DynamicVariables: []byte(`{"region":"EU"}`)}
	update := req
	update.DynamicVariables = []byte(`{"region":"US"}`)
	for _, step := range []struct {
		req  versori.ActivationRequest
		opts []producer.Option
	}{
		{req, nil},
		{update, []producer.Option{producer.Update()}},
		{versori.ActivationRequest{UserID: "user-42", IntegrationID: "01JDCRM0000000000000000000"}, []producer.Option{producer.Deactivate()}},
		{versori.ActivationRequest{UserID: "user-42", IntegrationID: "01JDCRM0000000000000000000"}, []producer.Option{producer.Deactivate()}},
	} {
		res, err := p.Enqueue(ctx, step.req, step.opts...)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(res.TaskID, res.Status)
	}
	// Output:
	// act:01JDCRM0000000000000000000:user-42 enqueued
	// op:1:01JDCRM0000000000000000000:user-42 enqueued
	// op:2:01JDCRM0000000000000000000:user-42 enqueued
	// op:2:01JDCRM0000000000000000000:user-42 duplicate
}
