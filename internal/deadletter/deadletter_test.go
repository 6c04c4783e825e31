package deadletter_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/rediskeys"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

var dlBase = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func dlEntry(i int, reason tasks.Reason, at time.Time) deadletter.Entry {
	user := fmt.Sprintf("user-%05d", i)
	req := testutil.Request(user)
	return deadletter.Entry{
		ID: "act:" + testutil.IntegrationID + ":" + user, UserID: user, IntegrationID: testutil.IntegrationID,
		Reason: reason, Error: "versori activate: HTTP 400", Attempts: 1 + i%3,
		FailedAt: at.Add(-time.Second), DeadLetteredAt: at, Queue: "activations", Request: req,
	}
}

func mustAdd(t *testing.T, s *deadletter.Store, e deadletter.Entry) bool {
	t.Helper()
	isNew, err := s.Add(context.Background(), e)
	if err != nil {
		t.Fatalf("Add(%s): %v", e.ID, err)
	}
	return isNew
}

func idsOf(entries []deadletter.Entry) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.ID
	}
	return out
}

func TestParseReason(t *testing.T) {
	t.Parallel()
	for _, r := range tasks.Reasons() {
		got, err := tasks.ParseReason(string(r))
		if err != nil || got != r {
			t.Errorf("ParseReason(%q) = %q, %v", r, got, err)
		}
	}
	for _, bad := range []string{"", "bogus", "NOT_FOUND", " not_found", "ok"} {
		_, err := tasks.ParseReason(bad)
		if err == nil {
			t.Errorf("ParseReason(%q) succeeded", bad)
			continue
		}
		for _, r := range tasks.Reasons() {
			if !strings.Contains(err.Error(), string(r)) {
				t.Errorf("ParseReason(%q) error %q does not list %q", bad, err, r)
			}
		}
	}
}

func TestEntryJSON(t *testing.T) {
	t.Parallel()
	e := dlEntry(1, tasks.ReasonNotFound, dlBase)
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"id", "userId", "integrationId", "reason", "error", "attempts", "failedAt", "request"} {
		if _, ok := m[k]; !ok {
			t.Errorf("entry JSON has no %q: %s", k, b)
		}
	}
	if string(m["reason"]) != `"not_found"` || string(m["attempts"]) != "2" {
		t.Errorf("reason %s attempts %s", m["reason"], m["attempts"])
	}
	var req map[string]json.RawMessage
	if err := json.Unmarshal(m["request"], &req); err != nil {
		t.Fatal(err)
	}
	if string(req["userId"]) != `"user-00001"` || !strings.HasPrefix(string(req["connections"]), `[{"templateId"`) {
		t.Errorf("request JSON = %s", m["request"])
	}
	var back deadletter.Entry
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, e) {
		t.Errorf("round trip:\n  %+v\n  %+v", back, e)
	}
}

func TestAddReplaceAndReasonIndexes(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	s := deadletter.NewStore(db.Client, "activations")
	ctx := context.Background()

	e := dlEntry(1, tasks.ReasonMissingConnections, dlBase)
	if !mustAdd(t, s, e) {
		t.Error("first Add reported the id as known")
	}
	assertCounts(t, s, map[tasks.Reason]int64{tasks.ReasonMissingConnections: 1})

	// Same id, same reason: replaced.
	e.Attempts = 9
	if mustAdd(t, s, e) {
		t.Error("second Add reported the id as new")
	}
	assertCounts(t, s, map[tasks.Reason]int64{tasks.ReasonMissingConnections: 1})

	// Same id, new reason: moves between the reason indexes.
	e.Reason, e.Error, e.DeadLetteredAt = tasks.ReasonRetriesExhausted, "timeout", dlBase.Add(time.Minute)
	if mustAdd(t, s, e) {
		t.Error("Add with a new reason reported the id as new")
	}
	assertCounts(t, s, map[tasks.Reason]int64{tasks.ReasonRetriesExhausted: 1})
	got, err := s.Get(ctx, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !reflect.DeepEqual(got[0], e) {
		t.Errorf("Get = %+v, want %+v", got, e)
	}
	if ids, _ := s.IDs(ctx, tasks.ReasonMissingConnections); len(ids) != 0 {
		t.Errorf("old reason still lists %v", ids)
	}
	if ids, _ := s.IDs(ctx, tasks.ReasonRetriesExhausted); !slices.Equal(ids, []string{e.ID}) {
		t.Errorf("new reason lists %v", ids)
	}

	// Defaults: DeadLetteredAt now, FailedAt = DeadLetteredAt.
	before := time.Now().Add(-time.Second)
	d := dlEntry(2, tasks.ReasonNotFound, time.Time{})
	d.FailedAt = time.Time{}
	mustAdd(t, s, d)
	got, err = s.Get(ctx, d.ID)
	if err != nil || len(got) != 1 {
		t.Fatalf("Get = %v, %v", got, err)
	}
	if got[0].DeadLetteredAt.Before(before) || !got[0].FailedAt.Equal(got[0].DeadLetteredAt) {
		t.Errorf("defaults: deadLetteredAt %v failedAt %v", got[0].DeadLetteredAt, got[0].FailedAt)
	}
}

func TestAddRefusesBadEntries(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	s := deadletter.NewStore(db.Client, "activations")
	tests := []struct {
		name string
		mod  func(*deadletter.Entry)
	}{
		{"no id", func(e *deadletter.Entry) { e.ID = "" }},
		{"no reason", func(e *deadletter.Entry) { e.Reason = "" }},
		{"unknown reason", func(e *deadletter.Entry) { e.Reason = "flaky" }},
	}
	for _, tt := range tests {
		e := dlEntry(1, tasks.ReasonNotFound, dlBase)
		tt.mod(&e)
		if _, err := s.Add(context.Background(), e); err == nil {
			t.Errorf("%s: Add succeeded", tt.name)
		}
	}
	if n, err := s.Count(context.Background(), ""); err != nil || n != 0 {
		t.Errorf("Count = %d, %v; want 0", n, err)
	}
}

func assertCounts(t *testing.T, s *deadletter.Store, want map[tasks.Reason]int64) {
	t.Helper()
	ctx := context.Background()
	got, err := s.CountByReason(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, r := range tasks.Reasons() {
		if got[r] != want[r] {
			t.Errorf("CountByReason[%s] = %d, want %d", r, got[r], want[r])
		}
		n, err := s.Count(ctx, r)
		if err != nil || n != want[r] {
			t.Errorf("Count(%s) = %d, %v; want %d", r, n, err, want[r])
		}
		total += want[r]
	}
	if len(got) != len(tasks.Reasons()) {
		t.Errorf("CountByReason has %d reasons, want %d", len(got), len(tasks.Reasons()))
	}
	if n, err := s.Count(ctx, ""); err != nil || n != total {
		t.Errorf("Count(all) = %d, %v; want %d", n, err, total)
	}
}

func TestHasGetRemove(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	s := deadletter.NewStore(db.Client, "activations")
	ctx := context.Background()
	a, b, c := dlEntry(1, tasks.ReasonNotFound, dlBase), dlEntry(2, tasks.ReasonInvalidRequest, dlBase.Add(time.Second)),
		dlEntry(3, tasks.ReasonNotFound, dlBase.Add(2*time.Second))
	for _, e := range []deadletter.Entry{a, b, c} {
		mustAdd(t, s, e)
	}

	has, err := s.Has(ctx, []string{a.ID, "missing", c.ID})
	if err != nil || !slices.Equal(has, []bool{true, false, true}) {
		t.Errorf("Has = %v, %v", has, err)
	}
	if has, err := s.Has(ctx, nil); err != nil || len(has) != 0 {
		t.Errorf("Has(nil) = %v, %v", has, err)
	}

	got, err := s.Get(ctx, c.ID, "missing", a.ID, "also-missing")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []deadletter.Entry{c, a}) {
		t.Errorf("Get = %+v, want c and a in the order asked", got)
	}
	if got, err := s.Get(ctx); err != nil || len(got) != 0 {
		t.Errorf("Get() = %v, %v", got, err)
	}

	n, err := s.Remove(ctx, a.ID, "missing", a.ID)
	if err != nil || n != 1 {
		t.Errorf("Remove = %d, %v; want 1", n, err)
	}
	if n, err := s.Remove(ctx, "missing"); err != nil || n != 0 {
		t.Errorf("Remove(missing) = %d, %v; want 0", n, err)
	}
	if n, err := s.Remove(ctx); err != nil || n != 0 {
		t.Errorf("Remove() = %d, %v; want 0", n, err)
	}
	assertCounts(t, s, map[tasks.Reason]int64{tasks.ReasonNotFound: 1, tasks.ReasonInvalidRequest: 1})
	if ids, _ := s.IDs(ctx, ""); !slices.Equal(ids, []string{b.ID, c.ID}) {
		t.Errorf("IDs after Remove = %v", ids)
	}
	if has, _ := s.Has(ctx, []string{a.ID}); has[0] {
		t.Error("Has reports a removed entry")
	}
	// Removing then adding again makes the id new.
	if !mustAdd(t, s, a) {
		t.Error("re-added entry not reported as new")
	}
}

func TestEachAndIDsPaged(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	s := deadletter.NewStore(db.Client, "activations")
	ctx := context.Background()
	const n = 1234
	reasons := tasks.Reasons()
	var all []string
	byReason := make(map[tasks.Reason][]string)
	// Added in a shuffled order, so that order comes from DeadLetteredAt and not from insertion.
	for k := range n {
		i := (k * 7919) % n
		e := dlEntry(i, reasons[i%len(reasons)], dlBase.Add(time.Duration(i)*time.Millisecond))
		mustAdd(t, s, e)
	}
	for i := range n {
		e := dlEntry(i, reasons[i%len(reasons)], dlBase)
		all = append(all, e.ID)
		byReason[e.Reason] = append(byReason[e.Reason], e.ID)
	}

	tests := []struct {
		reason tasks.Reason
		want   []string
	}{{"", all}}
	for _, r := range reasons {
		tests = append(tests, struct {
			reason tasks.Reason
			want   []string
		}{r, byReason[r]})
	}
	for _, tt := range tests {
		t.Run("reason="+string(tt.reason), func(t *testing.T) {
			var got []string
			var last time.Time
			err := s.Each(ctx, tt.reason, func(e deadletter.Entry) error {
				if tt.reason != "" && e.Reason != tt.reason {
					t.Errorf("Each(%q) yielded %s of reason %q", tt.reason, e.ID, e.Reason)
				}
				if e.DeadLetteredAt.Before(last) {
					t.Errorf("Each yielded %s out of order", e.ID)
				}
				last = e.DeadLetteredAt
				got = append(got, e.ID)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Each(%q) yielded %d ids, want %d in order", tt.reason, len(got), len(tt.want))
			}
			ids, err := s.IDs(ctx, tt.reason)
			if err != nil || !slices.Equal(ids, tt.want) {
				t.Errorf("IDs(%q) = %d ids, %v; want %d in order", tt.reason, len(ids), err, len(tt.want))
			}
		})
	}

	// Each stops at fn's first error.
	stop := errors.New("stop")
	calls := 0
	err := s.Each(ctx, "", func(deadletter.Entry) error {
		calls++
		if calls == 600 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 600 {
		t.Errorf("Each = %v after %d calls, want stop after 600", err, calls)
	}

	// Remove takes more ids than one script call does.
	removed, err := s.Remove(ctx, append(slices.Clone(all), "missing-1", "missing-2")...)
	if err != nil || removed != n {
		t.Errorf("Remove(all) = %d, %v; want %d", removed, err, n)
	}
	assertCounts(t, s, nil)
	if err := s.Each(ctx, "", func(e deadletter.Entry) error { return fmt.Errorf("unexpected %s", e.ID) }); err != nil {
		t.Error(err)
	}
}

func TestEachExactPage(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	s := deadletter.NewStore(db.Client, "activations")
	for i := range 500 {
		mustAdd(t, s, dlEntry(i, tasks.ReasonNotFound, dlBase.Add(time.Duration(i)*time.Millisecond)))
	}
	n := 0
	if err := s.Each(context.Background(), tasks.ReasonNotFound, func(deadletter.Entry) error { n++; return nil }); err != nil || n != 500 {
		t.Errorf("Each = %v after %d entries, want 500", err, n)
	}
}

func TestTrim(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		olderThan  time.Time
		maxEntries int64
		wantKept   []int // indexes of the entries left, oldest first
	}{
		{"nothing", time.Time{}, 0, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{"by age", dlBase.Add(5 * time.Minute), 0, []int{5, 6, 7, 8, 9}},
		{"by age, none old", dlBase.Add(-time.Hour), 0, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{"by age, all old", dlBase.Add(time.Hour), 0, nil},
		{"by count", time.Time{}, 3, []int{7, 8, 9}},
		{"by count, under", time.Time{}, 20, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{"by age then count", dlBase.Add(2 * time.Minute), 5, []int{5, 6, 7, 8, 9}},
		{"by count stricter than age", dlBase.Add(7 * time.Minute), 5, []int{7, 8, 9}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := testutil.Redis(t)
			s := deadletter.NewStore(db.Client, "activations")
			ctx := context.Background()
			var entries []deadletter.Entry
			for i := range 10 {
				e := dlEntry(i, tasks.Reasons()[i%2], dlBase.Add(time.Duration(i)*time.Minute))
				mustAdd(t, s, e)
				entries = append(entries, e)
			}
			trimmed, err := s.Trim(ctx, tt.olderThan, tt.maxEntries)
			removed := len(trimmed)
			if err != nil {
				t.Fatal(err)
			}
			if removed != 10-len(tt.wantKept) {
				t.Errorf("Trim removed %d, want %d", removed, 10-len(tt.wantKept))
			}
			var want []string
			counts := make(map[tasks.Reason]int64)
			for _, i := range tt.wantKept {
				want = append(want, entries[i].ID)
				counts[entries[i].Reason]++
			}
			ids, err := s.IDs(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ids, want) {
				t.Errorf("kept %v, want %v", ids, want)
			}
			assertCounts(t, s, counts)
		})
	}
}

func TestStoresOfQueuesAreSeparate(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ctx := context.Background()
	a := deadletter.NewStore(db.Client, "activations")
	b := deadletter.NewStore(db.Client, "activations-eu")
	ea := dlEntry(1, tasks.ReasonNotFound, dlBase)
	eb := dlEntry(2, tasks.ReasonInvalidRequest, dlBase)
	mustAdd(t, a, ea)
	mustAdd(t, b, eb)
	// The same id in both: new in each.
	if !mustAdd(t, b, ea) {
		t.Error("an id of queue a was known to queue b")
	}
	if n, _ := b.Remove(ctx, ea.ID); n != 1 {
		t.Errorf("Remove in b = %d", n)
	}
	if has, _ := a.Has(ctx, []string{ea.ID, eb.ID}); !slices.Equal(has, []bool{true, false}) {
		t.Errorf("a.Has = %v", has)
	}
	if has, _ := b.Has(ctx, []string{ea.ID, eb.ID}); !slices.Equal(has, []bool{false, true}) {
		t.Errorf("b.Has = %v", has)
	}
	assertCounts(t, a, map[tasks.Reason]int64{tasks.ReasonNotFound: 1})
	assertCounts(t, b, map[tasks.Reason]int64{tasks.ReasonInvalidRequest: 1})
	if ids, _ := a.IDs(ctx, ""); !slices.Equal(ids, []string{ea.ID}) {
		t.Errorf("a.IDs = %v", ids)
	}
	if ids, err := a.Trim(ctx, time.Time{}, 0); err != nil || len(ids) != 0 {
		t.Errorf("a.Trim = %v, %v", ids, err)
	}
	if ids, err := b.Trim(ctx, dlBase.Add(time.Hour), 0); err != nil || len(ids) != 1 {
		t.Errorf("b.Trim = %v, %v", ids, err)
	}
	assertCounts(t, a, map[tasks.Reason]int64{tasks.ReasonNotFound: 1})
	got, err := a.Get(ctx, ea.ID, eb.ID)
	if err != nil || len(idsOf(got)) != 1 || got[0].ID != ea.ID {
		t.Errorf("a.Get = %v, %v", got, err)
	}
}

// TestRemoveEntryOnlyTheOneRead: a requeue removes the dead letter it read, never a newer one with
// the same id (its job dead-lettered again meanwhile).
func TestRemoveEntryOnlyTheOneRead(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ctx := context.Background()
	s := deadletter.NewStore(db.Client, "q")
	first := deadletter.Entry{ID: "act:X:u", Reason: tasks.ReasonNotFound, DeadLetteredAt: time.Now().UTC().Add(-time.Minute)}
	if _, err := s.Add(ctx, first); err != nil {
		t.Fatal(err)
	}
	read, err := s.Get(ctx, first.ID)
	if err != nil || len(read) != 1 {
		t.Fatalf("Get = %v, %v", read, err)
	}
	again := first
	again.Reason, again.DeadLetteredAt = tasks.ReasonMissingConnections, time.Now().UTC()
	if _, err := s.Add(ctx, again); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.RemoveEntry(ctx, read[0]); err != nil || ok {
		t.Fatalf("RemoveEntry of the stale entry = %v, %v; want false", ok, err)
	}
	if n, _ := s.Count(ctx, tasks.ReasonMissingConnections); n != 1 {
		t.Fatalf("the newer dead letter is gone")
	}
	latest, _ := s.Get(ctx, first.ID)
	if ok, err := s.RemoveEntry(ctx, latest[0]); err != nil || !ok {
		t.Fatalf("RemoveEntry of the entry read = %v, %v; want true", ok, err)
	}
	if n, _ := s.Count(ctx, ""); n != 0 {
		t.Errorf("%d entries left, want none", n)
	}
}

// TestAddWhileMember: a handler's dead letter is stored only while its run holds the task's lease.
func TestAddWhileMember(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ctx := context.Background()
	s := deadletter.NewStore(db.Client, "q")
	lease := rediskeys.AsynqLease("q")
	e := deadletter.Entry{ID: "act:X:u", Reason: tasks.ReasonNotFound}
	if _, err := s.AddWhileMember(ctx, e, lease); !errors.Is(err, deadletter.ErrNotHeld) {
		t.Fatalf("without the lease: %v, want ErrNotHeld", err)
	}
	if n, _ := s.Count(ctx, ""); n != 0 {
		t.Fatalf("stored without the lease")
	}
	db.Client.ZAdd(ctx, lease, redis.Z{Score: float64(time.Now().Add(30 * time.Second).Unix()), Member: e.ID})
	if added, err := s.AddWhileMember(ctx, e, lease); err != nil || !added {
		t.Fatalf("with the lease: %v, %v; want stored", added, err)
	}
}

// TestAddNamesThePairOfTheTaskID checks that an entry whose payload named no pair is listed under the
// pair its task id names, while its request stays as it was read.
func TestAddNamesThePairOfTheTaskID(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	s := deadletter.NewStore(db.Client, "activations")
	pair := versori.Pair{UserID: "u:1", IntegrationID: testutil.IntegrationID}
	e := deadletter.Entry{ID: tasks.TaskID(pair), Reason: tasks.ReasonInvalidRequest, Error: "payload is not JSON"}
	if _, err := s.Add(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(context.Background(), e.ID)
	if err != nil || len(got) != 1 {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	if got[0].UserID != pair.UserID || got[0].IntegrationID != pair.IntegrationID || got[0].Request.UserID != "" {
		t.Errorf("entry %+v: want the task id's pair listed and the request left empty", got[0])
	}
}

// TestEntryKeepsOperation: an entry keeps the job's operation, its number and its end user (their
// credentials sealed with the request's), through the store, and gives back the payload that queues
// the same job again.
func TestEntryKeepsOperation(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	s := deadletter.NewStore(db.Client, "activations")
	req := testutil.Request("user-op")
	p := tasks.Payload{Request: req, Batch: "b1", Op: tasks.OpUpdate, Seq: 3, Reconcile: true, MaxRetry: 4,
		EndUser: &tasks.EndUser{DisplayName: "Op", PrimaryConnection: &versori.ConnectionCreate{
			Name: "primary", Credentials: json.RawMessage(`{"token":"SECRET-TOKEN"}`), Variables: []versori.ConnectionVariable{}}}}
	keys, err := tasks.ParseKeyring("a:" + strings.Repeat("A", 43) + "=")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Seal(keys); err != nil {
		t.Fatal(err)
	}
	e := deadletter.Entry{ID: tasks.TaskIDAt(req.Pair(), p.Seq), Reason: tasks.ReasonNotFound, Error: "gone"}
	e.Keep(p)
	mustAdd(t, s, e)
	got, err := s.Get(context.Background(), e.ID)
	if err != nil || len(got) != 1 {
		t.Fatalf("Get = %v, %v", got, err)
	}
	raw, _ := json.Marshal(got[0])
	if strings.Contains(string(raw), "SECRET-TOKEN") {
		t.Errorf("the stored entry holds the end user's credentials: %s", raw)
	}
	if got[0].UserID != req.UserID || got[0].Op != tasks.OpUpdate || got[0].Seq != 3 || got[0].EndUser == nil {
		t.Fatalf("stored entry = %+v", got[0])
	}
	back := got[0].Payload()
	want := p
	want.Reconcile, want.MaxRetry = false, 0 // a requeue sets them anew
	if !reflect.DeepEqual(back, want) {
		t.Errorf("Payload:\n  %+v\nwant\n  %+v", back, want)
	}
	if err := back.Open(keys); err != nil || string(back.EndUser.PrimaryConnection.Credentials) != `{"token":"SECRET-TOKEN"}` {
		t.Errorf("the entry's payload opens to %v, %v", back.EndUser, err)
	}
}
