package jobs

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/hibiken/asynq"

	"github.com/versori/activator/internal/batch"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/ingest"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

// RequeueResult says what Requeue did with each id.
type RequeueResult struct {
	Requeued []string // queued again, looking up the pair before activating
	Missing  []string // no such dead letter
	Busy     []string // the pair has a job queued or running again; the dead letter is left
	// Invalid are dead letters whose request cannot be sent as it is (a dead letter of reason
	// invalid_request may hold no request at all): they are left, for `dlq requeue --file` with the
	// corrected rows, or for a purge.
	Invalid []InvalidEntry
}

// InvalidEntry is a dead letter that cannot be requeued as it is, and why.
type InvalidEntry struct {
	ID  string
	Err error
}

// requeueChunk bounds how many dead letters one round trip reads.
const requeueChunk = 500

// Requeue queues the dead letters with the given ids again, each with the request it holds, and
// removes them from the store. The new jobs look up their pair before activating, since an earlier
// attempt's outcome may be unknown. A dead letter whose request is not valid is skipped and reported
// in Invalid; the others are requeued.
func (q *Queue) Requeue(ctx context.Context, ids []string) (RequeueResult, error) {
	var res RequeueResult
	if err := q.backfill(ctx); err != nil {
		return res, err
	}
	for len(ids) > 0 {
		n := min(len(ids), requeueChunk)
		chunk := ids[:n]
		ids = ids[n:]
		entries, err := q.store.Get(ctx, chunk...)
		if err != nil {
			return res, err
		}
		found := make(map[string]bool, len(entries))
		for _, e := range entries {
			found[e.ID] = true
			st, err := q.requeueEntry(ctx, e, e.Payload())
			var ve *versori.ValidationError
			switch {
			case errors.As(err, &ve):
				res.Invalid = append(res.Invalid, InvalidEntry{ID: e.ID, Err: err})
			case err != nil:
				return res, err
			case st == Enqueued:
				res.Requeued = append(res.Requeued, e.ID)
			default:
				res.Busy = append(res.Busy, e.ID)
			}
		}
		for _, id := range chunk {
			if !found[id] {
				res.Missing = append(res.Missing, id)
			}
		}
	}
	return res, nil
}

// requeueEntry queues dead letter e again as pl (e's own payload, or a corrected one for the same
// pair: fixedPayload) and removes e from the store. It returns Enqueued, or Duplicate when a job for the pair
// is queued or running again (or another queue owns it), in which case e is left. An invalid req is
// a *versori.ValidationError, and e is left.
//
// The new job is e's operation under its task id, with its number in the pair's order and its end
// user: requeued after a later operation on the pair was enqueued, it ends superseded, doing
// nothing, since the later one decides the pair's state.
//
// pl.Secrets are its request's sealed credentials (e.Secrets for e's own payload); the new job
// keeps them sealed as they are, so that they open with the key they were sealed with, and a
// plaintext payload is sealed if q has keys.
func (q *Queue) requeueEntry(ctx context.Context, e deadletter.Entry, pl tasks.Payload) (Status, error) {
	req, err := pl.Request.Canonical()
	if err != nil {
		return "", err
	}
	// A dead letter of a payload the worker could not read holds what could be read of it; a request
	// that names another pair than the task's (or none) must be fixed and requeued from a file.
	if id := tasks.TaskIDAt(req.Pair(), e.Seq); id != tasks.CanonicalTaskID(e.ID) {
		return "", &versori.ValidationError{Field: "userId", Reason: fmt.Sprintf(
			"names pair %s, not the dead letter's task %s: fix the request and requeue it with --file", id, e.ID)}
	}
	// A dead letter stored before the store kept every one may still have its task in asynq's
	// archive, holding the task id: free it first.
	if err := q.deleteArchived(e.ID); errors.Is(err, errHasJob) {
		return Duplicate, nil
	} else if err != nil {
		return "", err
	}
	claims, err := q.pairs.Claim(ctx, q.cfg.Queue, []string{tasks.TaskID(req.Pair())})
	if err != nil {
		return "", err
	}
	pl.Request, pl.Reconcile = req, true
	r, err := q.enqueueClaimed(ctx, pl, claims[0])
	if err != nil {
		return "", err
	}
	if r.Status != Enqueued {
		return r.Status, nil
	}
	// Only the entry read: the new job may have been dead-lettered again already, under the same id.
	if _, err := q.store.RemoveEntry(ctx, e); err != nil {
		return "", err
	}
	// The job counts in its batch again when it ends, so it no longer counts as dead.
	if e.Batch != "" {
		if err := batch.Write(ctx, q.rdb, q.cfg.Queue,
			map[string]map[string]int64{e.Batch: {batch.FieldDeadPrefix + string(e.Reason): -1}}); err != nil {
			return "", err
		}
	}
	return Enqueued, nil
}

// errHasJob says a dead letter's pair has a job queued or running again.
var errHasJob = errors.New("the pair has a job queued or running")

// deleteArchived deletes task id from asynq's archive, if it is there. A task in any other state is
// left, and reported as errHasJob.
func (q *Queue) deleteArchived(id string) error {
	info, err := q.inspector.GetTaskInfo(q.cfg.Queue, id)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return nil
	case err != nil:
		return err
	case info.State != asynq.TaskStateArchived:
		return fmt.Errorf("task %s is %s: %w", id, info.State, errHasJob)
	}
	err = q.inspector.DeleteTask(q.cfg.Queue, id)
	if errors.Is(err, asynq.ErrTaskNotFound) {
		return nil
	}
	return err
}

// PurgeResult says what Purge did.
type PurgeResult struct {
	Purged  []string
	Missing []string // no such dead letter
	Busy    []string // the pair has a job queued or running again; the dead letter is left
}

// Purge drops the dead letters with the given ids for good: from the store, and from asynq's archive
// if their task is there (so that the archive sweep cannot store them again). Their pairs are
// released: enqueueing a pair again afterwards (the corrected row, on any queue) queues it, with a
// look-up first, since a purged job may have activated its pair with a call whose outcome was
// unknown.
func (q *Queue) Purge(ctx context.Context, ids []string) (PurgeResult, error) {
	var res PurgeResult
	for len(ids) > 0 {
		n := min(len(ids), requeueChunk)
		chunk := ids[:n]
		ids = ids[n:]
		has, err := q.store.Has(ctx, chunk)
		if err != nil {
			return res, err
		}
		var found []string
		for i, id := range chunk {
			if !has[i] {
				res.Missing = append(res.Missing, id)
				continue
			}
			// The archived task first: a sweep between the two steps then finds neither.
			if err := q.deleteArchived(id); errors.Is(err, errHasJob) {
				res.Busy = append(res.Busy, id)
				continue
			} else if err != nil {
				return res, fmt.Errorf("purging %s: %w", id, err)
			}
			found = append(found, id)
		}
		if _, err := q.store.Remove(ctx, found...); err != nil {
			return res, err
		}
		if _, err := q.pairs.Release(ctx, q.cfg.Queue, found); err != nil {
			return res, err
		}
		res.Purged = append(res.Purged, found...)
	}
	return res, nil
}

// RequeueFileOptions configures one RequeueFile run.
type RequeueFileOptions struct {
	// Path is the file of corrected rows: .jsonl/.ndjson, .csv, or "-" for JSONL on Stdin, read as
	// EnqueueFile reads its input.
	Path  string
	Stdin io.Reader
	// Format is the input's format, "jsonl" or "csv", whatever Path's name; "" tells it from the
	// name (stdin: JSONL), as for EnqueueFile.
	Format string
	// RejectsPath receives malformed rows (default: PATH.rejects.jsonl beside the input, or
	// stdin.rejects.jsonl in the working directory for "-").
	RejectsPath string
}

// RequeueFileSummary counts what RequeueFile did with a file's rows.
type RequeueFileSummary struct {
	Rows     int
	Requeued int
	// NotDeadLettered rows name a pair that has no dead letter (never failed, already requeued or
	// purged, or the fix changed the pair): nothing was done with them.
	NotDeadLettered      int
	NotDeadLetteredLines []int
	// Busy rows name a pair that has a job queued or running again; its dead letter is left.
	Busy      int
	BusyLines []int
	Rejected  int // malformed; see RejectsPath
	// RejectsPath is where malformed rows went, when there were any.
	RejectsPath string
}

// RequeueFile is the "fix the rows, then requeue" workflow: for each row of a file of corrected
// activation requests, the dead letter of the row's pair is replaced by a job with the corrected
// request (looking up the pair before activating, as every requeued job does). Malformed rows go to
// the rejects file, and the rest of the file still runs. It stops at the first Redis error, which it
// returns with the counts so far; re-running the file is safe (requeued pairs no longer have a dead
// letter, and count as NotDeadLettered). An input it cannot use at all (it cannot be opened, its
// format cannot be told, its CSV header is bad) is an *InputError, returned before any row is read.
func (q *Queue) RequeueFile(ctx context.Context, o RequeueFileOptions) (RequeueFileSummary, error) {
	var sum RequeueFileSummary
	if err := q.backfill(ctx); err != nil {
		return sum, err
	}
	in, format, closeIn, err := openInput(o.Path, o.Format, o.Stdin)
	if err != nil {
		return sum, &InputError{err}
	}
	defer closeIn()
	rd, err := ingest.NewReader(in, format)
	if err != nil {
		return sum, &InputError{err}
	}
	if o.RejectsPath == "" {
		o.RejectsPath = ingest.RejectsPath(o.Path)
	}
	rejects := ingest.NewRejectsWriter(o.RejectsPath)
	addLine := func(lines []int, n int) []int {
		if len(lines) < maxFailedLines {
			lines = append(lines, n)
		}
		return lines
	}
	for ctx.Err() == nil {
		row, rej, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			rejects.Close()
			return sum, fmt.Errorf("reading %s: %w", o.Path, err)
		}
		sum.Rows++
		if rej != nil {
			sum.Rejected++
			if err := rejects.Write(*rej); err != nil {
				rejects.Close()
				return sum, fmt.Errorf("writing rejects: %w", err)
			}
			continue
		}
		entries, err := q.deadLetterOf(ctx, row.Request.Pair())
		if err != nil {
			rejects.Close()
			return sum, err
		}
		if len(entries) == 0 {
			sum.NotDeadLettered++
			sum.NotDeadLetteredLines = addLine(sum.NotDeadLetteredLines, row.Line)
			continue
		}
		pl, err := q.fixedPayload(entries[0], row)
		if err != nil {
			sum.Rejected++
			raw, _ := json.Marshal(tasks.Redact(row.Request))
			if err := rejects.Write(ingest.Reject{Line: row.Line, Field: fieldOf(err), Reason: reasonOf(err), Raw: string(raw)}); err != nil {
				rejects.Close()
				return sum, fmt.Errorf("writing rejects: %w", err)
			}
			continue
		}
		st, err := q.requeueEntry(ctx, entries[0], pl)
		if err != nil {
			rejects.Close()
			return sum, fmt.Errorf("line %d: %w", row.Line, err)
		}
		if st == Enqueued {
			sum.Requeued++
		} else {
			sum.Busy++
			sum.BusyLines = addLine(sum.BusyLines, row.Line)
		}
	}
	if err := rejects.Close(); err != nil {
		return sum, fmt.Errorf("writing rejects: %w", err)
	}
	if rejects.Count() > 0 {
		sum.RejectsPath = rejects.Path()
	}
	if err := context.Cause(ctx); err != nil {
		return sum, fmt.Errorf("interrupted after %d rows: re-run the same file to requeue the rest: %w", sum.Rows, err)
	}
	return sum, nil
}

// deadLetterLookBack is how many of a pair's latest operations deadLetterOf looks for a dead letter.
const deadLetterLookBack = 64

// deadLetterOf returns the pair's dead letter of its latest operation that has one (none or one
// entry): a row names a pair, not which of its operations failed. A dead letter of an earlier
// operation is superseded by the later one's anyway.
func (q *Queue) deadLetterOf(ctx context.Context, pair versori.Pair) ([]deadletter.Entry, error) {
	last, err := q.order.Last(ctx, pair)
	if err != nil {
		return nil, err
	}
	ids := []string{tasks.TaskID(pair)}
	for seq := last; seq > 0 && seq > last-deadLetterLookBack; seq-- {
		ids = append(ids, tasks.TaskIDAt(pair, seq))
	}
	entries, err := q.store.Get(ctx, ids...)
	if err != nil || len(entries) <= 1 {
		return entries, err
	}
	newest := slices.MaxFunc(entries, func(a, b deadletter.Entry) int { return cmp.Compare(a.Seq, b.Seq) })
	return []deadletter.Entry{newest}, nil
}

// fixedPayload is the payload a corrected row for dead letter e queues: e's operation, number and
// batch with the row's request (fixedRequest), and the row's end user in place of e's when it gives
// one (operations.md's fix for not_found), its credentials held to CheckSecrets' rule. A
// deactivation's holds the row's pair alone, as `enqueue deactivate` queues it: the row's other
// fields, end user and credentials were checked by the reader and are dropped, never stored.
func (q *Queue) fixedPayload(e deadletter.Entry, row *ingest.Row) (tasks.Payload, error) {
	pl := e.Payload()
	if e.Op == tasks.OpDeactivate {
		pl.Request, pl.Secrets = row.Request, ""
		return forOp(pl), nil
	}
	req, secrets, err := q.fixedRequest(e, row.Request)
	if err != nil {
		return pl, err
	}
	pl.Request, pl.Secrets = req, secrets
	if row.EndUser == nil {
		return pl, nil
	}
	if pc := row.EndUser.PrimaryConnection; pc != nil {
		if err := q.checkCredentials("endUser.primaryConnection.credentials", pc.Credentials); err != nil {
			return pl, err
		}
	}
	if pl.Secrets != "" {
		// The seal holds the connections' credentials (and e's end user's) as one: opened here, the
		// payload is sealed again with the row's end user when it is queued.
		if q.cfg.Keys == nil {
			return pl, &versori.ValidationError{Field: "endUser", Reason: "the dead letter's credentials are sealed: set " +
				tasks.EncryptionKeysVar + " to requeue it with another end user"}
		}
		if err := pl.Open(q.cfg.Keys); err != nil {
			return pl, err
		}
	}
	pl.EndUser = row.EndUser
	return pl, nil
}

// fixedRequest is the request and sealed secrets a corrected row for dead letter e stands for. A
// connection whose credentials are tasks.Withheld (as `dlq export` writes them) takes the dead
// letter's own: its sealed secrets, kept sealed, or its plaintext credentials at the same index.
// Credentials the row gives itself are new input, held to CheckSecrets' rule. The requeued job
// keeps e's end user, whose sealed credentials keep e's seal.
func (q *Queue) fixedRequest(e deadletter.Entry, req versori.ActivationRequest) (versori.ActivationRequest, string, error) {
	var withheld, given []int
	for i, c := range req.Connections {
		switch {
		case tasks.IsWithheld(c.Credentials):
			withheld = append(withheld, i)
		case len(c.Credentials) > 0:
			given = append(given, i)
		}
	}
	field := func(i int) string { return "connections[" + strconv.Itoa(i) + "].credentials" }
	if len(given) > 0 && q.cfg.Keys == nil && !q.cfg.AllowPlaintext {
		return req, "", &secretsError{field: field(given[0])}
	}
	// The end user's credentials, sealed with the connections' (the requeued job keeps e's end
	// user), hold the seal to the same rule.
	sealedUser := e.EndUser != nil && e.EndUser.PrimaryConnection != nil && tasks.IsWithheld(e.EndUser.PrimaryConnection.Credentials)
	if len(withheld) == 0 && !sealedUser {
		return req, "", nil
	}
	// Withheld credentials are the dead letter's by index: a row whose connections were reordered or
	// given another template would hand one third party's credentials to another's connection.
	for _, i := range withheld {
		if i >= len(e.Request.Connections) || len(e.Request.Connections[i].Credentials) == 0 ||
			versori.CanonicalULID(e.Request.Connections[i].TemplateID) != versori.CanonicalULID(req.Connections[i].TemplateID) {
			return req, "", &versori.ValidationError{Field: field(i), Reason: "is withheld, and the dead letter has no credentials for a connection " +
				"of this template at this index (connections reordered, or the template changed): keep the exported order and template, or give the credentials"}
		}
	}
	if e.Secrets != "" {
		if len(given) > 0 {
			return req, "", &versori.ValidationError{Field: field(given[0]), Reason: "the dead letter's credentials are sealed as one: " +
				"withhold every connection's credentials, or give every one"}
		}
		for i, c := range e.Request.Connections {
			if tasks.IsWithheld(c.Credentials) && !slices.Contains(withheld, i) {
				// The worker would find the seal naming a connection the row does not withhold.
				return req, "", &versori.ValidationError{Field: field(i), Reason: "the dead letter's credentials are sealed as one: " +
					"withhold every connection's credentials, or give every one"}
			}
		}
		return req, e.Secrets, nil
	}
	req.Connections = slices.Clone(req.Connections)
	for _, i := range withheld {
		if i >= len(e.Request.Connections) || len(e.Request.Connections[i].Credentials) == 0 || tasks.IsWithheld(e.Request.Connections[i].Credentials) {
			return req, "", &versori.ValidationError{Field: field(i), Reason: "is withheld, and the dead letter has no credentials for this connection: give them"}
		}
		req.Connections[i].Credentials = e.Request.Connections[i].Credentials
	}
	return req, "", nil
}

func fieldOf(err error) string {
	var ve *versori.ValidationError
	if errors.As(err, &ve) {
		return ve.Field
	}
	return ""
}

func reasonOf(err error) string {
	var ve *versori.ValidationError
	if errors.As(err, &ve) {
		return ve.Reason
	}
	return err.Error()
}
