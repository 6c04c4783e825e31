package intake_test

import (
	"testing"
	"time"

	"github.com/versori/activator/internal/intake"
	"github.com/versori/activator/internal/testutil"
)

// TestSignedRequestNotReplayedOnAnotherRoute: a Standard Webhooks signature covers the webhook id,
// timestamp and body, not the route. Whoever saw a signed activation (a proxy's log, say) could
// post its headers and body to the deactivations route within the 5 minutes, and deactivate the
// pair; a signed deactivation replayed on the activations route would activate it again. A
// signed webhook id is the sender's for one message: on another route it is refused (409),
// nothing queued, while the sender's own retry on its route still gets the first answer.
func TestSignedRequestNotReplayedOnAnotherRoute(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name, from, to string
		first          []byte
	}{
		{"activation on deactivations", "/v1/activations", "/v1/deactivations", nil},
		{"deactivation on activations", "/v1/deactivations", "/v1/activations", nil},
		{"batch on deactivations batch", "/v1/activations:batch", "/v1/deactivations:batch", nil},
		{"deactivations batch on activations batch", "/v1/deactivations:batch", "/v1/activations:batch", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			secret := newSecret(t)
			e := start(t, intake.Config{Secrets: []string{secret}})
			b := body(t, testutil.Request("u-1"))
			if tt.from == "/v1/activations:batch" || tt.from == "/v1/deactivations:batch" {
				b = append(append([]byte("["), b...), ']')
			}
			h := signed(t, secret, "msg_captured", time.Now(), b)
			first := e.post(tt.from, b, h)
			if first.code != 202 {
				t.Fatalf("first post: %s", first)
			}
			before := e.taskIDs()
			wantError(t, e.post(tt.to, b, h), 409, intake.HeaderWebhookID)
			e.wantTasks(before...)
			// The sender's retry on its own route is still answered as before.
			if again := e.post(tt.from, b, h); again.code != 200 || again.header.Get("Idempotent-Replayed") != "true" {
				t.Errorf("the sender's retry: %s, want 200 replayed", again)
			}
		})
	}
}
