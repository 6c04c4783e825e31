package testutil_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/oklog/ulid/v2"

	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/versori"
)

// TestFixtureIDs checks that the fixed ids are distinct valid ULIDs spelt in upper case, which the
// tests that spell them in lower case rely on.
func TestFixtureIDs(t *testing.T) {
	ids := []string{testutil.IntegrationID, testutil.TemplateID, testutil.ConnectionID,
		testutil.OtherIntegrationID, testutil.OtherTemplateID, testutil.OtherConnectionID}
	seen := map[string]bool{}
	for _, id := range ids {
		if _, err := ulid.ParseStrict(id); err != nil {
			t.Errorf("%s: %v", id, err)
		}
		if id != strings.ToUpper(id) || seen[id] {
			t.Errorf("%s: want a distinct id in upper case", id)
		}
		seen[id] = true
	}
}

// TestRequestAndJSONL checks that Request is valid and that a file WriteJSONL writes reads back.
func TestRequestAndJSONL(t *testing.T) {
	reqs := []versori.ActivationRequest{testutil.Request("u-1"), testutil.Request("u-2")}
	for _, r := range reqs {
		if err := r.Validate(); err != nil {
			t.Errorf("Request(%s).Validate() = %v", r.UserID, err)
		}
	}
	text := testutil.JSONL(t, reqs...)
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) != len(reqs) {
		t.Fatalf("JSONL gave %d lines, want %d:\n%s", len(lines), len(reqs), text)
	}
	for i, l := range lines {
		var got versori.ActivationRequest
		if err := json.Unmarshal([]byte(l), &got); err != nil || got.Pair() != reqs[i].Pair() {
			t.Errorf("line %d = %s (%v), want %+v", i+1, l, err, reqs[i].Pair())
		}
	}
}

// TestQueueCounts checks Pending and Unfinished on a queue asynq has never seen and on one with a task.
func TestQueueCounts(t *testing.T) {
	db := testutil.Redis(t)
	if n := testutil.Pending(t, db.Client, "q"); n != 0 {
		t.Errorf("Pending(unknown queue) = %d, want 0", n)
	}
	if n := testutil.Unfinished(t, db.Client, "q"); n != -1 {
		t.Errorf("Unfinished(unknown queue) = %d, want -1", n)
	}
	c := asynq.NewClientFromRedisClient(db.Client)
	if _, err := c.Enqueue(asynq.NewTask("t", nil), asynq.Queue("q")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Enqueue(asynq.NewTask("t", nil), asynq.Queue("q"), asynq.ProcessIn(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if p, u := testutil.Pending(t, db.Client, "q"), testutil.Unfinished(t, db.Client, "q"); p != 1 || u != 2 {
		t.Errorf("Pending, Unfinished = %d, %d; want 1 (the task due now), 2 (and the scheduled one)", p, u)
	}
}
