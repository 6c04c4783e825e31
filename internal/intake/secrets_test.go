package intake_test

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/versori/activator/internal/intake"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

const endUserSecret = "END-USER-THIRD-PARTY-SECRET"

func withCredentials(user string) versori.ActivationRequest {
	req := testutil.Request(user)
	req.Connections = append(req.Connections, versori.ActivationConnection{TemplateID: testutil.OtherTemplateID, Name: "n",
		Credentials: json.RawMessage(`{"apiKey":"` + endUserSecret + `"}`)})
	return req
}

// TestCredentialsNeedKey: without a key the intake answers 400 naming the setting for a request with
// credentials (a batch queues none of its requests), and the producer's error matches
// tasks.ErrPlaintextCredentials; with the opt-out or a key, it is queued, sealed with the key.
func TestCredentialsNeedKey(t *testing.T) {
	t.Parallel()
	keys, err := tasks.ParseKeyring("k:" + base64.StdEncoding.EncodeToString(make([]byte, 32)))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		pcfg      producer.Config
		code      int
		plaintext bool
	}{
		{"no key", producer.Config{}, 400, false},
		{"opt-out", producer.Config{AllowPlaintext: true}, 202, true},
		{"key", producer.Config{Keys: keys}, 202, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := testutil.Redis(t)
			tt.pcfg.Queue = queue
			e := startWith(t, db, db.Client, intake.Config{Tokens: []string{tokenA}}, tt.pcfg)
			a := e.post("/v1/activations", body(t, withCredentials("c-1")), bearerHeader(tokenA))
			b := e.post("/v1/activations:batch", body(t, []versori.ActivationRequest{testutil.Request("c-2"), withCredentials("c-3")}), bearerHeader(tokenA))
			if a.code != tt.code || b.code != tt.code {
				t.Fatalf("answers %s and %s, want %d", a, b, tt.code)
			}
			if tt.code == 400 {
				eb := wantError(t, a, 400, "connections[1].credentials")
				if !strings.Contains(eb.Error, tasks.EncryptionKeysVar) {
					t.Errorf("error %q does not name %s", eb.Error, tasks.EncryptionKeysVar)
				}
				wantError(t, b, 400, "[1].connections[1].credentials")
				e.wantTasks() // nothing of the batch
				_, err := e.prod.Enqueue(t.Context(), withCredentials("c-4"))
				var ve *versori.ValidationError
				if !errors.Is(err, tasks.ErrPlaintextCredentials) || !errors.As(err, &ve) || ve.Field != "connections[1].credentials" {
					t.Errorf("Enqueue = %v, want ErrPlaintextCredentials and a ValidationError naming the field", err)
				}
				return
			}
			info, err := asynq.NewInspectorFromRedisClient(db.Client).GetTaskInfo(queue, taskID("c-1"))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(string(info.Payload), endUserSecret); got != tt.plaintext {
				t.Errorf("payload in plain text: %v, want %v", got, tt.plaintext)
			}
			if l := e.logs.String(); strings.Contains(l, endUserSecret) {
				t.Errorf("the log shows a credential: %s", l)
			}
		})
	}
}
