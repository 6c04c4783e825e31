package producer_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/batch"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/ingest"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/producer"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

// endUser is a valid end user whose primary connection has credentials.
func endUser() tasks.EndUser {
	return tasks.EndUser{DisplayName: "Ada", PrimaryConnection: &versori.ConnectionCreate{
		Name: "crm", Credentials: json.RawMessage(`{"action":[{"apiKey":"s3cret"}]}`), Variables: []versori.ConnectionVariable{}}}
}

// queuedPayload reads the payload of the task id on queue.
func queuedPayload(t *testing.T, rdb redis.UniversalClient, queue, id string) tasks.Payload {
	t.Helper()
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(queue, id)
	if err != nil {
		t.Fatalf("task %s: %v", id, err)
	}
	pl, err := tasks.DecodePayload(info.Payload)
	if err != nil {
		t.Fatalf("task %s: %v", id, err)
	}
	return pl
}

// TestEnqueueOrdersOperations enqueues a pair's operations one after another: each takes its
// place in the pair's order (internal/pairorder), so that its task id and payload seq are the
// ticket's, a repeat of the pair's last operation is that one's duplicate, and anything else is a
// new job numbered after it.
func TestEnqueueOrdersOperations(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ctx := context.Background()
	p := producer.New(db.Client, producer.Config{AllowPlaintext: true})
	req := testutil.Request("u-1")
	req.DynamicVariables = json.RawMessage(`{"plan":"pro"}`) // an update needs them
	pair := req.Pair()
	end := endUser()
	steps := []struct {
		name   string
		opts   []producer.Option
		want   producer.Status
		seq    int64
		wantOp tasks.Op
	}{
		{"activate", []producer.Option{producer.WithEndUser(end)}, producer.Enqueued, 0, tasks.OpActivate},
		{"activate again", nil, producer.Duplicate, 0, tasks.OpActivate},
		{"deactivate", []producer.Option{producer.Deactivate(), producer.WithEndUser(end)}, producer.Enqueued, 1, tasks.OpDeactivate},
		{"deactivate again", []producer.Option{producer.Deactivate()}, producer.Duplicate, 1, tasks.OpDeactivate},
		{"activate after the deactivation", nil, producer.Enqueued, 2, tasks.OpActivate},
		{"update", []producer.Option{producer.Update()}, producer.Enqueued, 3, tasks.OpUpdate},
		{"activate after the update", nil, producer.Duplicate, 3, tasks.OpUpdate},
		{"update again", []producer.Option{producer.Update()}, producer.Enqueued, 4, tasks.OpUpdate},
	}
	for _, st := range steps { // in order: each sees the pair's order the one before left
		res, err := p.Enqueue(ctx, req, append(st.opts, producer.WithBatch("b-1"))...)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		wantID := tasks.TaskIDAt(pair, st.seq)
		if res.Status != st.want || res.TaskID != wantID {
			t.Fatalf("%s: %+v, want %s %s", st.name, res, st.want, wantID)
		}
		pl := queuedPayload(t, db.Client, p.Queue(), wantID)
		if pl.Seq != st.seq || pl.Op != st.wantOp || pl.Batch != "b-1" {
			t.Errorf("%s: payload op %q seq %d batch %q, want op %q seq %d", st.name, pl.Op, pl.Seq, pl.Batch, st.wantOp, st.seq)
		}
		switch pl.Op {
		case tasks.OpDeactivate:
			// The pair alone: nothing else of the request is stored.
			if len(pl.Request.Connections) != 0 || pl.EndUser != nil || pl.Request.Pair() != pair {
				t.Errorf("%s: deactivation's payload holds %+v, end user %+v; want the pair alone", st.name, pl.Request, pl.EndUser)
			}
			// It looks the pair up anyway; reconciling, it would count a pair it finds inactive as
			// deactivated by itself, never already_inactive.
			if pl.Reconcile {
				t.Errorf("%s: deactivation's payload reconciles", st.name)
			}
		case tasks.OpActivate:
			if st.seq > 0 && !pl.Reconcile {
				t.Errorf("%s: payload of an activation of a pair seen before does not look first", st.name)
			}
			if st.seq == 0 && (pl.EndUser == nil || pl.EndUser.PrimaryConnection == nil || pl.EndUser.DisplayName != "Ada") {
				t.Errorf("%s: payload end user %+v, want the one given", st.name, pl.EndUser)
			}
		}
	}
	if got := testutil.Pending(t, db.Client, p.Queue()); got != 5 {
		t.Errorf("%d jobs pending, want 5", got)
	}
	st, err := batch.Read(ctx, db.Client, p.Queue(), "b-1")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{"activate": 2, "update": 2, "deactivate": 1}
	if st.Queued != 5 || len(st.QueuedByOp) != len(want) || st.QueuedByOp["activate"] != 2 || st.QueuedByOp["update"] != 2 || st.QueuedByOp["deactivate"] != 1 {
		t.Errorf("batch queued %d by op %v, want 5 by op %v", st.Queued, st.QueuedByOp, want)
	}
}

// TestDeactivateDeadLetteredActivation: an activation repeating a dead-lettered one is
// dead_lettered, as before the lifecycle; a deactivation of the pair is queued (its job
// deactivates, and the dead letter, requeued after it, ends superseded), and an activation after
// that is queued again.
func TestDeactivateDeadLetteredActivation(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ctx := context.Background()
	p := producer.New(db.Client, producer.Config{})
	req := testutil.Request("u-1")
	req.DynamicVariables = json.RawMessage(`{"plan":"pro"}`) // an update needs them
	id := tasks.TaskID(req.Pair())
	if res, err := p.Enqueue(ctx, req); err != nil || res.Status != producer.Enqueued {
		t.Fatalf("activate: %+v, %v", res, err)
	}
	// Its job ends as a dead letter.
	if err := asynq.NewInspectorFromRedisClient(db.Client).DeleteTask(p.Queue(), id); err != nil {
		t.Fatal(err)
	}
	if _, err := deadletter.NewStore(db.Client, p.Queue()).Add(ctx, deadletter.Entry{ID: id, Reason: tasks.ReasonNotFound, Request: req}); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name string
		opts []producer.Option
		want producer.Status
		seq  int64
	}{
		{"activate", nil, producer.DeadLettered, 0},
		{"update", []producer.Option{producer.Update()}, producer.Enqueued, 1},
		{"deactivate", []producer.Option{producer.Deactivate()}, producer.Enqueued, 2},
		{"activate", nil, producer.Enqueued, 3},
	}
	for _, st := range steps {
		res, err := p.Enqueue(ctx, req, st.opts...)
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if want := tasks.TaskIDAt(req.Pair(), st.seq); res.Status != st.want || res.TaskID != want {
			t.Errorf("%s: %+v, want %s %s", st.name, res, st.want, want)
		}
	}
}

// TestEnqueueChecksTheEndUser: an end user is validated as CreateEndUser's body, and its
// credentials are held to CheckSecrets' rule as the request's are, except in a deactivation,
// which stores neither.
func TestEnqueueChecksTheEndUser(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ctx := context.Background()
	p := producer.New(db.Client, producer.Config{}) // no keys, no plaintext
	noConnection := endUser()
	noConnection.PrimaryConnection = nil
	noVariables := endUser()
	noVariables.PrimaryConnection = &versori.ConnectionCreate{Name: "crm", Credentials: json.RawMessage(`{}`)}
	tests := []struct {
		name      string
		opts      []producer.Option
		field     string // "" for enqueued
		plaintext bool
	}{
		{"credentials without a key", []producer.Option{producer.WithEndUser(endUser())}, "endUser.primaryConnection.credentials", true},
		{"withheld credentials", []producer.Option{producer.WithEndUser(withheld())}, "endUser.primaryConnection.credentials", false},
		{"no primary connection", []producer.Option{producer.WithEndUser(noConnection)}, "endUser.primaryConnection", false},
		{"no variables", []producer.Option{producer.WithEndUser(noVariables)}, "endUser.primaryConnection.variables", false},
		{"a deactivation stores none", []producer.Option{producer.WithEndUser(endUser()), producer.Deactivate()}, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := testutil.Request("u-" + strings.ReplaceAll(tt.name, " ", "-"))
			res, err := p.Enqueue(ctx, req, tt.opts...)
			var ve *versori.ValidationError
			switch {
			case tt.field == "" && (err != nil || res.Status != producer.Enqueued):
				t.Fatalf("%+v, %v; want enqueued", res, err)
			case tt.field == "":
				return
			case !errors.As(err, &ve) || ve.Field != tt.field:
				t.Fatalf("error %v, want a ValidationError of %s", err, tt.field)
			case errors.Is(err, tasks.ErrPlaintextCredentials) != tt.plaintext:
				t.Errorf("errors.Is(%v, ErrPlaintextCredentials) = %v, want %v", err, !tt.plaintext, tt.plaintext)
			case strings.Contains(err.Error(), "s3cret"):
				t.Errorf("error quotes the credentials: %v", err)
			}
			if tt.plaintext {
				if cerr := p.CheckSecrets(req, tt.opts...); cerr == nil || cerr.Error() != err.Error() {
					t.Errorf("CheckSecrets = %v, want Enqueue's %v", cerr, err)
				}
			}
		})
	}
	if got := testutil.Pending(t, db.Client, p.Queue()); got != 1 {
		t.Errorf("%d jobs pending, want the deactivation's alone", got)
	}
}

func withheld() tasks.EndUser {
	e := endUser()
	e.PrimaryConnection.Credentials = json.RawMessage(tasks.Withheld)
	return e
}

// TestEnqueueFileOperations runs one file of activations with endUser through each operation in
// turn, as `enqueue file`, `enqueue file --update-variables` and `enqueue deactivate` do: each run
// numbers its rows' operations after the last run's, a repeated run is all duplicates (but for
// updates, each of which is new), every job
// has its op and seq, and a deactivation takes rows whose credentials could not be stored.
func TestEnqueueFileOperations(t *testing.T) {
	t.Parallel()
	for _, noAuto := range []bool{false, true} {
		db := testutil.Redis(t)
		ctx := context.Background()
		p := producer.New(db.Client, producer.Config{}) // no keys: the endUser credentials are refused
		const n = 100
		var b strings.Builder
		for i := range n {
			req := testutil.Request("u-" + string(rune('a'+i%26)) + "-" + strings.Repeat("x", i/26))
			req.DynamicVariables = json.RawMessage(`{"plan":"pro"}`) // an update needs them
			line, _ := json.Marshal(req)
			if i%10 == 0 { // a tenth with end users whose credentials need a key
				end, _ := json.Marshal(endUser())
				line = append(append(append(line[:len(line)-1], `,"endUser":`...), end...), '}')
			}
			b.Write(line)
			b.WriteByte('\n')
		}
		path := testutil.WriteFile(t, "rows.jsonl", b.String())
		runs := []struct {
			op                             tasks.Op
			enqueued, duplicates, rejected int
			seq                            int64
		}{
			{tasks.OpActivate, n - n/10, 0, n / 10, 0},
			{tasks.OpActivate, 0, n - n/10, n / 10, 0},
			{tasks.OpDeactivate, n, 0, 0, 1},
			{tasks.OpDeactivate, 0, n, 0, 1},
			{tasks.OpUpdate, n - n/10, 0, n / 10, 2},
			// An update after an update is a new operation (pairorder): the later one's variables
			// are the ones to set, and the earlier job ends superseded.
			{tasks.OpUpdate, n - n/10, 0, n / 10, 3},
		}
		for i, r := range runs {
			id := "b-" + string(rune('0'+i))
			sum, err := p.EnqueueFile(ctx, producer.FileOptions{Path: path, Batch: id, Op: r.op, NoAutopipeline: noAuto})
			if err != nil {
				t.Fatalf("run %d (%s): %v", i, r.op, err)
			}
			if sum.Enqueued != r.enqueued || sum.Duplicates != r.duplicates || sum.Rejected != r.rejected || sum.Failed != 0 {
				t.Errorf("run %d (%s): %+v, want %d enqueued, %d duplicates, %d rejected", i, r.op, sum, r.enqueued, r.duplicates, r.rejected)
			}
			if r.rejected > 0 {
				checkRejects(t, sum.RejectsPath, "endUser.primaryConnection.credentials", r.rejected)
			}
			if r.enqueued > 0 {
				st, err := batch.Read(ctx, db.Client, p.Queue(), id)
				if err != nil || st.QueuedByOp[r.op.String()] != int64(r.enqueued) {
					t.Errorf("run %d: batch %+v, %v; want %d queued of %s", i, st, err, r.enqueued, r.op)
				}
			}
			// Row 2 (u-b) has no end user: every run queues or finds its job.
			pl := queuedPayload(t, db.Client, p.Queue(), tasks.TaskIDAt(versori.Pair{UserID: "u-b-", IntegrationID: testutil.IntegrationID}, r.seq))
			if pl.Op != r.op || pl.Seq != r.seq {
				t.Errorf("run %d: payload op %q seq %d, want %q %d", i, pl.Op, pl.Seq, r.op, r.seq)
			}
		}
	}
}

// checkRejects checks that the rejects file at path holds n rejects of field.
func checkRejects(t *testing.T, path, field string, n int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != n {
		t.Fatalf("%d rejects, want %d", len(lines), n)
	}
	for _, l := range lines {
		var rj ingest.Reject
		if err := json.Unmarshal([]byte(l), &rj); err != nil || rj.Field != field || !strings.Contains(rj.Raw, `"endUser"`) {
			t.Errorf("reject %s (%v), want one of %s quoting the row with its endUser", l, err, field)
		}
	}
}

// TestOperationOnAnotherQueuesPair: an operation on a pair another queue owns is a duplicate
// naming the owner, and takes no number in the pair's order, so that the owner's job is not
// superseded by a job that was never queued.
func TestOperationOnAnotherQueuesPair(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ctx := context.Background()
	eu := producer.New(db.Client, producer.Config{Queue: "eu"})
	us := producer.New(db.Client, producer.Config{Queue: "us"})
	req := testutil.Request("u-1")
	req.DynamicVariables = json.RawMessage(`{"plan":"pro"}`) // an update needs them
	if res, err := eu.Enqueue(ctx, req); err != nil || res.Status != producer.Enqueued {
		t.Fatalf("eu: %+v, %v", res, err)
	}
	for _, opts := range [][]producer.Option{{producer.Deactivate()}, {producer.Update()}} {
		res, err := us.Enqueue(ctx, req, opts...)
		if err != nil || res.Status != producer.Duplicate || res.Owner != "eu" {
			t.Fatalf("us: %+v, %v; want a duplicate owned by eu", res, err)
		}
	}
	path := testutil.WriteFile(t, "rows.jsonl", testutil.JSONL(t, req))
	sum, err := us.EnqueueFile(ctx, producer.FileOptions{Path: path, Op: tasks.OpDeactivate})
	if err != nil || sum.Duplicates != 1 || sum.OtherQueue != 1 || sum.Enqueued != 0 {
		t.Fatalf("us, a file: %+v, %v; want one duplicate on another queue", sum, err)
	}
	// eu's activation is still the pair's last operation: a deactivation there is number 1.
	res, err := eu.Enqueue(ctx, req, producer.Deactivate())
	if want := tasks.TaskIDAt(req.Pair(), 1); err != nil || res.Status != producer.Enqueued || res.TaskID != want {
		t.Fatalf("eu deactivation: %+v, %v; want %s enqueued", res, err, want)
	}
}

// TestEnqueueFileUnknownOp: a run with an operation that does not exist does not start.
func TestEnqueueFileUnknownOp(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	p := producer.New(db.Client, producer.Config{})
	path := testutil.WriteFile(t, "rows.jsonl", testutil.JSONL(t, testutil.Request("u-1")))
	started := false
	_, err := p.EnqueueFile(context.Background(), producer.FileOptions{Path: path, Op: "explode", Start: func() { started = true }})
	if err == nil || started || !strings.Contains(err.Error(), `unknown operation "explode"`) {
		t.Fatalf("error %v, started %v; want an unknown operation before the start", err, started)
	}
	if got := testutil.Pending(t, db.Client, p.Queue()); got != 0 {
		t.Errorf("%d jobs pending", got)
	}
}
