package versoritest_test

import (
	"context"
	"fmt"
	"net/http/httptest"

	"github.com/versori/activator/versori"
	"github.com/versori/activator/versori/versoritest"
)

// A test scripts a dropped response after the activation was committed, and checks that the code
// under test looks before it retries. In a test function, versoritest.New(t, opts) does the serving
// and the cleanup in one call; an Example has no *testing.T, so it serves NewServer itself.
func Example() {
	s := versoritest.NewServer(versoritest.Options{})
	ts := httptest.NewServer(s)
	defer ts.Close()

	c, err := versori.New(versori.Config{BaseURL: ts.URL, HubID: s.HubID(), Auth: versori.APIKey(s.APIKey())})
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	req := versori.ActivationRequest{UserID: "user-1", IntegrationID: "01J5EXAMP1E000000000000000"}

	// The next POST for this pair is committed, then the connection is closed without an answer.
	s.Script(req.Pair(), versoritest.Fault{Commit: true, Drop: true})

	_, err = c.Activate(ctx, req)
	fmt.Println("outcome unknown:", versori.IsOutcomeUnknown(err))

	// Retrying blindly would create a second activation; look first.
	found, err := c.FindActivation(ctx, req.UserID, req.IntegrationID)
	if err != nil {
		panic(err)
	}
	fmt.Println("already active:", found != nil)
	fmt.Println("activations:", s.ActivationCount(req.Pair()), "duplicates:", len(s.Duplicates()))
	// Output:
	// outcome unknown: true
	// already active: true
	// activations: 1 duplicates: 0
}

// Rate limiting can be scripted per pair, with the Retry-After the client must honour.
func ExampleServer_Script() {
	s := versoritest.NewServer(versoritest.Options{})
	ts := httptest.NewServer(s)
	defer ts.Close()
	c, _ := versori.New(versori.Config{BaseURL: ts.URL, HubID: s.HubID(), Auth: versori.APIKey(s.APIKey())})

	req := versori.ActivationRequest{UserID: "user-1", IntegrationID: "01J5EXAMP1E000000000000000"}
	s.Script(req.Pair(), versoritest.Fault{Status: 429, RetryAfter: "3"})

	_, err := c.Activate(context.Background(), req)
	wait, _ := versori.RetryAfterOf(err)
	fmt.Println(versori.Classify(err), wait)

	_, err = c.Activate(context.Background(), req)
	fmt.Println(versori.Classify(err))
	// Output:
	// rate_limited 3s
	// ok
}
