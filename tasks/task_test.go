package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

func tkPayload(user, integration string) tasks.Payload {
	return tasks.Payload{Request: versori.ActivationRequest{UserID: user, IntegrationID: integration,
		Connections:      []versori.ActivationConnection{{TemplateID: testutil.TemplateID, ConnectionID: testutil.ConnectionID}},
		DynamicVariables: json.RawMessage(`{"plan":"gold"}`)}}
}

func TestTaskID(t *testing.T) {
	t.Parallel()
	pairs := []versori.Pair{
		{UserID: "alice", IntegrationID: testutil.IntegrationID},
		{UserID: "alice", IntegrationID: testutil.OtherIntegrationID},
		{UserID: "bob", IntegrationID: testutil.IntegrationID},
		{UserID: "a:b", IntegrationID: testutil.IntegrationID},
		{UserID: "a", IntegrationID: testutil.IntegrationID},
		{UserID: "b:" + testutil.IntegrationID, IntegrationID: testutil.OtherIntegrationID},
		{UserID: testutil.OtherIntegrationID + ":b", IntegrationID: testutil.IntegrationID},
		{UserID: "ALICE", IntegrationID: testutil.IntegrationID},
	}
	seen := make(map[string]versori.Pair)
	for _, p := range pairs {
		id := tasks.TaskID(p)
		if again := tasks.TaskID(versori.Pair{UserID: p.UserID, IntegrationID: p.IntegrationID}); again != id {
			t.Errorf("TaskID(%+v) not stable: %q then %q", p, id, again)
		}
		if other, dup := seen[id]; dup {
			t.Errorf("TaskID(%+v) = TaskID(%+v) = %q", p, other, id)
		}
		seen[id] = p
		if !strings.Contains(id, p.IntegrationID) || !strings.Contains(id, p.UserID) {
			t.Errorf("TaskID(%+v) = %q does not name the pair", p, id)
		}
	}
	// The request's pair gives the same id as the pair itself.
	pl := tkPayload("alice", testutil.IntegrationID)
	if tasks.TaskID(pl.Request.Pair()) != tasks.TaskID(pairs[0]) {
		t.Error("TaskID of the request's pair differs")
	}
}

func TestNewTaskRejectsInvalidRequests(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		p     tasks.Payload
		field string
	}{
		{"no user", tkPayload("", testutil.IntegrationID), "userId"},
		{"bad integration", tkPayload("alice", "crm"), "integrationId"},
		{"bad connection", tasks.Payload{Request: versori.ActivationRequest{UserID: "alice", IntegrationID: testutil.IntegrationID,
			Connections: []versori.ActivationConnection{{TemplateID: testutil.TemplateID}}}}, "connections[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			task, err := tasks.NewTask(tt.p)
			if task != nil {
				t.Errorf("NewTask returned a task %v", task)
			}
			var ve *versori.ValidationError
			if !errors.As(err, &ve) || ve.Field != tt.field {
				t.Errorf("NewTask error = %v (%T), want a *versori.ValidationError for %q", err, err, tt.field)
			}
		})
	}
}

func TestNewTaskPayloadRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		p    tasks.Payload
	}{
		{"plain", tkPayload("alice", testutil.IntegrationID)},
		{"reconcile and batch", func() tasks.Payload {
			p := tkPayload("bob", testutil.OtherIntegrationID)
			p.Reconcile, p.Batch = true, "batch-01"
			return p
		}()},
		{"no connections", tasks.Payload{Request: versori.ActivationRequest{UserID: "carol", IntegrationID: testutil.IntegrationID,
			Connections: []versori.ActivationConnection{}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			task, err := tasks.NewTask(tt.p)
			if err != nil {
				t.Fatal(err)
			}
			if task.Type() != tasks.TypeActivate {
				t.Errorf("Type = %q, want %q", task.Type(), tasks.TypeActivate)
			}
			if task.ResultWriter() != nil {
				t.Error("ResultWriter set before the task was enqueued")
			}
			got, err := tasks.DecodePayload(task.Payload())
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.p) {
				t.Errorf("round trip:\n  got  %+v\n  want %+v", got, tt.p)
			}
			var raw map[string]json.RawMessage
			if err := json.Unmarshal(task.Payload(), &raw); err != nil {
				t.Fatal(err)
			}
			if _, ok := raw["reconcile"]; ok != tt.p.Reconcile {
				t.Errorf("payload %s: reconcile present = %v", task.Payload(), ok)
			}
		})
	}
}

func TestNewTaskSetsTaskID(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	client := asynq.NewClientFromRedisClient(db.Client)
	t.Cleanup(func() { _ = client.Close() })
	inspector := asynq.NewInspectorFromRedisClient(db.Client)
	ctx := context.Background()

	p := tkPayload("alice", testutil.IntegrationID)
	task, err := tasks.NewTask(p, asynq.Queue("tk-queue"), asynq.MaxRetry(3))
	if err != nil {
		t.Fatal(err)
	}
	info, err := client.EnqueueContext(ctx, task)
	if err != nil {
		t.Fatal(err)
	}
	if want := tasks.TaskID(p.Request.Pair()); info.ID != want {
		t.Errorf("enqueued task id = %q, want %q", info.ID, want)
	}
	if info.Queue != "tk-queue" || info.MaxRetry != 3 || info.Type != tasks.TypeActivate {
		t.Errorf("info = queue %q maxRetry %d type %q", info.Queue, info.MaxRetry, info.Type)
	}
	stored, err := inspector.GetTaskInfo("tk-queue", info.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tasks.DecodePayload(stored.Payload); err != nil || !reflect.DeepEqual(got, p) {
		t.Errorf("stored payload = %+v, %v", got, err)
	}

	// The same pair again, from a new task: refused by its id.
	again, err := tasks.NewTask(tkPayload("alice", testutil.IntegrationID), asynq.Queue("tk-queue"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.EnqueueContext(ctx, again); !errors.Is(err, asynq.ErrTaskIDConflict) {
		t.Errorf("second enqueue of the pair: %v, want asynq.ErrTaskIDConflict", err)
	}
	// Another pair is accepted.
	other, err := tasks.NewTask(tkPayload("alice", testutil.OtherIntegrationID), asynq.Queue("tk-queue"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.EnqueueContext(ctx, other); err != nil {
		t.Errorf("enqueue of another pair: %v", err)
	}
}

func TestDecodePayloadErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		in         string
		validation string // the field of a *versori.ValidationError; "-" for a JSON error
	}{
		{"not JSON", `not json`, "-"},
		{"truncated", `{"request":{"userId":"a"`, "-"},
		{"wrong type", `{"request":[]}`, "request"},
		{"empty object", `{}`, "request"},
		{"ambiguous user", `{"request":{"userId":"alice","USERID":"bob","integrationId":"` + testutil.IntegrationID + `"}}`, "USERID"},
		{"no integration", `{"request":{"userId":"alice"}}`, "integrationId"},
		{"bad dynamic variables", `{"request":{"userId":"alice","integrationId":"` + testutil.IntegrationID + `","dynamicVariables":[1]}}`, "dynamicVariables"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := tasks.DecodePayload([]byte(tt.in))
			if err == nil {
				t.Fatal("DecodePayload succeeded")
			}
			var ve *versori.ValidationError
			if isVE := errors.As(err, &ve); isVE != (tt.validation != "-") {
				t.Fatalf("error %v: validation error = %v, want %v", err, isVE, tt.validation != "-")
			}
			if ve != nil && ve.Field != tt.validation {
				t.Errorf("Field = %q, want %q", ve.Field, tt.validation)
			}
		})
	}
}

func TestCanonicalTaskID(t *testing.T) {
	t.Parallel()
	upper := testutil.IntegrationID
	lower := strings.ToLower(upper)
	tests := []struct{ in, want string }{
		{"act:" + upper + ":alice", "act:" + upper + ":alice"},
		{"act:" + lower + ":alice", "act:" + upper + ":alice"},
		{"act:" + lower + ":Mixed:Case:user", "act:" + upper + ":Mixed:Case:user"},
		{"act:" + lower, "act:" + lower}, // not a task id of ours
		{"other:" + lower + ":u", "other:" + lower + ":u"},
	}
	for _, tt := range tests {
		if got := tasks.CanonicalTaskID(tt.in); got != tt.want {
			t.Errorf("CanonicalTaskID(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	// The id TaskID gives a pair spelt either way.
	if tasks.TaskID(versori.Pair{UserID: "alice", IntegrationID: lower}) != tasks.CanonicalTaskID("act:"+lower+":alice") {
		t.Error("TaskID and CanonicalTaskID disagree")
	}
}

func TestPairOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		id   string
		want versori.Pair
		ok   bool
	}{
		{tasks.TaskID(versori.Pair{UserID: "a:b", IntegrationID: testutil.IntegrationID}), versori.Pair{UserID: "a:b", IntegrationID: testutil.IntegrationID}, true},
		{"act:" + testutil.IntegrationID, versori.Pair{}, false},
		{"other:" + testutil.IntegrationID + ":u", versori.Pair{}, false},
		{"op:3:" + testutil.IntegrationID + ":a:b", versori.Pair{UserID: "a:b", IntegrationID: testutil.IntegrationID}, true},
		{"op:12:" + testutil.IntegrationID + ":u", versori.Pair{UserID: "u", IntegrationID: testutil.IntegrationID}, true},
		{"op:03:" + testutil.IntegrationID + ":u", versori.Pair{}, false}, // not TaskIDAt's spelling
		{"op::" + testutil.IntegrationID + ":u", versori.Pair{}, false},
		{"op:-1:" + testutil.IntegrationID + ":u", versori.Pair{}, false},
		{"op:x:" + testutil.IntegrationID + ":u", versori.Pair{}, false},
		{"op:1:" + testutil.IntegrationID, versori.Pair{}, false},
		{"op:1", versori.Pair{}, false},
	}
	for _, tt := range tests {
		if got, ok := tasks.PairOf(tt.id); ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("PairOf(%q) = %+v, %v; want %+v, %v", tt.id, got, ok, tt.want, tt.ok)
		}
	}
}

// TestTaskIDAt: every operation's task id names its pair and its number, whatever the user id
// holds, and the pair's first activation keeps the id it had before operations were numbered.
func TestTaskIDAt(t *testing.T) {
	t.Parallel()
	lower := strings.ToLower(testutil.IntegrationID)
	tests := []struct {
		pair versori.Pair
		seq  int64
		want string
	}{
		{versori.Pair{UserID: "u", IntegrationID: testutil.IntegrationID}, 0, "act:" + testutil.IntegrationID + ":u"},
		{versori.Pair{UserID: "u", IntegrationID: lower}, 0, "act:" + testutil.IntegrationID + ":u"},
		{versori.Pair{UserID: "u", IntegrationID: lower}, 1, "op:1:" + testutil.IntegrationID + ":u"},
		{versori.Pair{UserID: "op:2:x", IntegrationID: testutil.IntegrationID}, 17, "op:17:" + testutil.IntegrationID + ":op:2:x"},
		{versori.Pair{UserID: "a:b", IntegrationID: testutil.IntegrationID}, 1 << 40, "op:1099511627776:" + testutil.IntegrationID + ":a:b"},
	}
	for _, tt := range tests {
		id := tasks.TaskIDAt(tt.pair, tt.seq)
		if id != tt.want {
			t.Errorf("TaskIDAt(%+v, %d) = %q, want %q", tt.pair, tt.seq, id, tt.want)
		}
		want := versori.Pair{UserID: tt.pair.UserID, IntegrationID: versori.CanonicalULID(tt.pair.IntegrationID)}
		if p, ok := tasks.PairOf(id); !ok || p != want {
			t.Errorf("PairOf(%q) = %+v, %v; want %+v", id, p, ok, want)
		}
		if seq, ok := tasks.SeqOf(id); !ok || seq != tt.seq {
			t.Errorf("SeqOf(%q) = %d, %v; want %d", id, seq, ok, tt.seq)
		}
		if tasks.CanonicalTaskID(id) != id {
			t.Errorf("CanonicalTaskID(%q) = %q, want it unchanged", id, tasks.CanonicalTaskID(id))
		}
	}
	// An operation's id spelt by an older producer comes back canonical with its number.
	if got, want := tasks.CanonicalTaskID("op:4:"+lower+":u"), "op:4:"+testutil.IntegrationID+":u"; got != want {
		t.Errorf("CanonicalTaskID = %q, want %q", got, want)
	}
	for _, id := range []string{"other:1:" + testutil.IntegrationID + ":u", "op:01:" + testutil.IntegrationID + ":u", ""} {
		if _, ok := tasks.SeqOf(id); ok {
			t.Errorf("SeqOf(%q) reports a number", id)
		}
	}
}
