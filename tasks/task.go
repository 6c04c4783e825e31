// Package tasks defines the activation job: its payload, its task id, the retry policy that maps each
// outcome class to what happens next, and the asynq handler that runs it.
package tasks

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/versori/activator/internal/ingest"
	"github.com/versori/activator/internal/jsonappend"
	"github.com/versori/activator/internal/jsonscan"
	"github.com/versori/activator/versori"
)

// TypeActivate is the asynq task type of an activation job.
const TypeActivate = "versori:activate"

// Payload is an activation job's payload: one activation request, plus what the worker must know
// about the job's history that asynq does not tell it.
type Payload struct {
	Request versori.ActivationRequest `json:"request"`
	// Reconcile makes the first attempt look up the pair's activations before activating. Replays of
	// dead letters set it, since an earlier attempt's outcome may be unknown.
	Reconcile bool `json:"reconcile,omitempty"`
	// Batch is the id of the enqueue run the job came from, if any.
	Batch string `json:"batch,omitempty"`
	// EnqueuedAt is when the job was first queued; a job older than the worker's maximum age is
	// dead-lettered instead of retried.
	EnqueuedAt time.Time `json:"enqueuedAt,omitzero"`
	// MaxRetry, when positive, is how many failures the job may have before it is dead-lettered.
	// NewTask gives asynq CrashRetries more, so that the handler, not asynq, ends the job. A payload
	// without it (from an older producer) ends at asynq's own limit.
	MaxRetry int `json:"maxRetry,omitempty"`
}

// CrashRetries is how many attempts asynq allows a job beyond Payload.MaxRetry. asynq counts the
// recovery of a job whose worker died as a retry, and archives a recovered job that is at its limit
// without calling the handler: its dead letter would then exist only in asynq's archive, which is
// capped and trims silently. With these to spare, the handler ends every job itself, and asynq's
// archive only ever sees a job that killed its workers this many times in a row.
const CrashRetries = 10

// TaskID is the stable asynq task id of a pair. Enqueueing a second task for a pair fails with
// asynq.ErrTaskIDConflict for as long as the first task's record exists (queued, running, retrying,
// or completed and retained), which is what makes re-running a file safe. The integration id is a
// ULID (no colon), so the id is unambiguous whatever the user id holds, and is written in canonical
// form, so that one pair has one id whatever case it was spelt in.
func TaskID(p versori.Pair) string {
	return "act:" + versori.CanonicalULID(p.IntegrationID) + ":" + p.UserID
}

// CanonicalTaskID returns id with its integration ULID in canonical form: the id TaskID gives the
// pair today. Releases before ULIDs were made canonical wrote them as the request spelt them.
func CanonicalTaskID(id string) string {
	rest, ok := strings.CutPrefix(id, "act:")
	if !ok {
		return id
	}
	integration, user, ok := strings.Cut(rest, ":")
	if !ok {
		return id
	}
	if c := versori.CanonicalULID(integration); c != integration {
		return "act:" + c + ":" + user
	}
	return id
}

// NewTask validates p's request and returns its task, with the request's ULIDs in canonical form,
// the pair's task id and opts. When p.MaxRetry is set, asynq's own limit is set above it (by
// CrashRetries), whatever opts say.
func NewTask(p Payload, opts ...asynq.Option) (*asynq.Task, error) {
	req, err := p.Request.Canonical()
	if err != nil {
		return nil, err
	}
	p.Request = req
	b, err := p.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("tasks: encoding payload: %w", err)
	}
	opts = append([]asynq.Option{asynq.TaskID(TaskID(p.Request.Pair()))}, opts...)
	if p.MaxRetry > 0 {
		opts = append(opts, asynq.MaxRetry(p.MaxRetry+CrashRetries))
	}
	return asynq.NewTask(TypeActivate, b, opts...), nil
}

// MarshalJSON encodes p as json.Marshal would, in one pass and without reflection: it is one
// payload per row of a bulk enqueue.
func (p Payload) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 256)
	b = append(b, `{"request":`...)
	b, err := p.Request.AppendJSON(b)
	if err != nil {
		return nil, err
	}
	if p.Reconcile {
		b = append(b, `,"reconcile":true`...)
	}
	if p.Batch != "" {
		b = append(b, `,"batch":`...)
		b = jsonappend.String(b, p.Batch)
	}
	if !p.EnqueuedAt.IsZero() {
		b = append(b, `,"enqueuedAt":"`...)
		// AppendText is MarshalJSON's RFC 3339 form without the quotes.
		if b, err = p.EnqueuedAt.AppendText(b); err != nil {
			return nil, err
		}
		b = append(b, '"')
	}
	if p.MaxRetry != 0 {
		b = append(b, `,"maxRetry":`...)
		b = strconv.AppendInt(b, int64(p.MaxRetry), 10)
	}
	return append(b, '}'), nil
}

// DecodePayload decodes and validates a task payload. Its request is read as every way in reads
// one (ingest.DecodeRequest: exact field names, none twice, ULIDs made canonical), so that a payload
// from another producer cannot name a pair other than the one the API would see.
func DecodePayload(b []byte) (Payload, error) {
	var w struct {
		Request json.RawMessage `json:"request"`
		Payload
	}
	if err := json.Unmarshal(b, &w); err != nil {
		return w.Payload, fmt.Errorf("tasks: payload is not JSON: %w", err)
	}
	p := w.Payload
	if len(w.Request) == 0 {
		return p, fmt.Errorf("tasks: payload request: %w", &versori.ValidationError{Field: "request", Reason: "is missing"})
	}
	req, err := ingest.DecodeRequest(w.Request)
	p.Request = req
	if err != nil {
		// The pair, if it can be read, names the dead letter.
		var loose versori.ActivationRequest
		if json.Unmarshal(w.Request, &loose) == nil {
			p.Request = loose
		}
		return p, fmt.Errorf("tasks: payload request: %w", err)
	}
	return p, nil
}

// Job is a payload as the worker's handler uses it. On the usual path Body is the request exactly as
// NewTask encoded it (the API's wire form, validated by the producer) and is sent as it is; only the
// pair is read from it. Decoding, validating and re-encoding the whole request for every job cost
// the worker more CPU than anything else it does on its own.
type Job struct {
	Pair       versori.Pair
	Body       []byte // the encoded request
	Reconcile  bool
	Batch      string
	EnqueuedAt time.Time
	MaxRetry   int
	// decoded is the request when the payload was decoded whole (the slow path), even if invalid.
	decoded *versori.ActivationRequest
}

// ReadJob reads a task payload for the worker. A payload of the shape NewTask writes takes the fast path: it is
// checked to be valid JSON, its request to hold exactly the wire form's fields (each once, of the
// right kind) and a valid pair; its connections are not validated again. Anything else (a payload
// from another producer, or a malformed one) is decoded, validated and re-encoded whole, as
// DecodePayload does, and fails as it fails.
func ReadJob(b []byte) (Job, error) {
	if p, ok := readWire(b); ok {
		return p, nil
	}
	p, err := DecodePayload(b)
	w := Job{Pair: p.Request.Pair(), Reconcile: p.Reconcile, Batch: p.Batch, EnqueuedAt: p.EnqueuedAt,
		MaxRetry: p.MaxRetry, decoded: &p.Request}
	if err != nil {
		return w, err
	}
	if w.Body, err = p.Request.MarshalJSON(); err != nil {
		return w, fmt.Errorf("tasks: encoding payload request: %w", err)
	}
	return w, nil
}

// readWire is ReadJob's fast path; ok is false when b is not of NewTask's shape.
func readWire(b []byte) (p Job, ok bool) {
	if !json.Valid(b) {
		return p, false
	}
	ok = true
	var seen [5]bool // request, reconcile, batch, enqueuedAt, maxRetry
	err := jsonscan.Object(b, func(name, v []byte) bool {
		var err error
		i := -1
		switch string(name) {
		case "request":
			i, p.Body = 0, v
		case "reconcile":
			i = 1
			p.Reconcile, ok = string(v) == "true", string(v) == "true" || string(v) == "false"
		case "batch":
			i = 2
			p.Batch, err = jsonscan.String(v)
		case "enqueuedAt":
			i = 3
			var s string
			if s, err = jsonscan.String(v); err == nil {
				p.EnqueuedAt, err = time.Parse(time.RFC3339Nano, s)
			}
		case "maxRetry":
			i = 4
			var n int64
			n, err = strconv.ParseInt(string(v), 10, 0)
			p.MaxRetry = int(n)
		default:
			// encoding/json would match these names whatever their case; leave them to it.
			ok = !foldsTo(name, "request", "reconcile", "batch", "enqueuedAt", "maxRetry")
		}
		if i >= 0 {
			ok, seen[i] = ok && !seen[i], true
		}
		ok = ok && err == nil
		return ok
	})
	if err != nil || !ok || len(p.Body) == 0 || p.Body[0] != '{' {
		return p, false
	}
	var has [4]bool // userId, integrationId, connections, dynamicVariables
	err = jsonscan.Object(p.Body, func(name, v []byte) bool {
		i, kind := -1, byte(0)
		switch string(name) {
		case "userId":
			i, kind = 0, '"'
			p.Pair.UserID, _ = jsonscan.String(v)
		case "integrationId":
			i, kind = 1, '"'
			p.Pair.IntegrationID, _ = jsonscan.String(v)
		case "connections":
			i, kind = 2, '['
		case "dynamicVariables":
			i, kind = 3, '{'
		}
		ok = i >= 0 && !has[i] && v[0] == kind
		if ok {
			has[i] = true
		}
		return ok
	})
	// A pair not in canonical form is left to the slow path, which makes it so: the request's bytes
	// are sent as they are on this path.
	if err != nil || !ok || !has[0] || !has[1] || !has[2] || p.Pair.Validate() != nil ||
		p.Pair.Canonical() != p.Pair {
		return Job{}, false
	}
	return p, true
}

// foldsTo reports whether name equals one of names under Unicode case folding.
func foldsTo(name []byte, names ...string) bool {
	for _, n := range names {
		if bytes.EqualFold(name, []byte(n)) {
			return true
		}
	}
	return false
}

// request is the payload's whole request, decoded only when it is needed (for a dead letter).
func (p Job) Request() versori.ActivationRequest {
	if p.decoded != nil {
		return *p.decoded
	}
	var r versori.ActivationRequest
	if err := json.Unmarshal(p.Body, &r); err != nil {
		return versori.ActivationRequest{UserID: p.Pair.UserID, IntegrationID: p.Pair.IntegrationID}
	}
	return r
}
