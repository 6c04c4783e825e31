package testutil

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/versori"
)

// Fixed, valid ULIDs for tests: all upper case, so that strings.ToLower gives another spelling of the
// same id. They are the ids the demo, `make bench` and deploy/compose.yaml use: a CRM integration
// with its template and an existing connection, and a billing integration (the one the stand-in is
// told to require a connection for) with its own.
const (
	IntegrationID = "01JDCRM0000000000000000000" // the CRM integration
	TemplateID    = "01JDCRMTP10000000000000000" // the CRM integration's connection template
	ConnectionID  = "01JDC0NN000000000000000000" // an existing connection for TemplateID

	OtherIntegrationID = "01JDB1111NG000000000000000" // the billing integration: another pair for the same user
	OtherTemplateID    = "01JDB1111NGTP1000000000000" // the billing integration's connection template
	OtherConnectionID  = "01JDB1111NGC0NN00000000000" // an existing connection for OtherTemplateID
)

// Request is a valid request for userID on IntegrationID that binds one existing connection
// (ConnectionID for TemplateID).
func Request(userID string) versori.ActivationRequest {
	return versori.ActivationRequest{UserID: userID, IntegrationID: IntegrationID,
		Connections: []versori.ActivationConnection{{TemplateID: TemplateID, ConnectionID: ConnectionID}}}
}

// JSONL is reqs as JSONL text, one request a line, each line ended by a newline.
func JSONL(t testing.TB, reqs ...versori.ActivationRequest) string {
	t.Helper()
	var b strings.Builder
	for _, r := range reqs {
		line, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// WriteFile writes content to a file called name in a fresh temporary directory of t and returns
// its path.
func WriteFile(t testing.TB, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// WriteJSONL writes reqs as JSONL (see JSONL) to path and returns path.
func WriteJSONL(t testing.TB, path string, reqs ...versori.ActivationRequest) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(JSONL(t, reqs...)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// WriteRows writes a JSONL file of n valid requests, Request("user-0000000") and on, to a fresh
// temporary directory of t and returns its path. It streams the rows, for files of many of them.
func WriteRows(t testing.TB, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rows.jsonl")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	for i := range n {
		line, err := json.Marshal(Request(fmt.Sprintf("user-%07d", i)))
		if err != nil {
			t.Fatal(err)
		}
		w.Write(line)
		w.WriteByte('\n')
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// Pending is the number of pending tasks of queue; a queue asynq has never seen has none. It fails
// t when Redis cannot say.
func Pending(t testing.TB, rdb redis.UniversalClient, queue string) int {
	t.Helper()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	qs, err := insp.Queues()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(qs, queue) {
		return 0
	}
	qi, err := insp.GetQueueInfo(queue)
	if err != nil {
		t.Fatal(err)
	}
	return qi.Pending
}

// Unfinished is the number of queue's tasks not finished yet (pending, active, retry and scheduled),
// for WaitFor conditions. It is -1, and logs why, when it cannot be read: while Redis is away, and
// for a queue asynq does not know (one whose Redis lost its data never reads as done).
func Unfinished(t testing.TB, rdb redis.UniversalClient, queue string) int {
	t.Helper()
	qi, err := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo(queue)
	if err != nil {
		t.Logf("queue info: %v", err)
		return -1
	}
	return qi.Pending + qi.Active + qi.Retry + qi.Scheduled
}
