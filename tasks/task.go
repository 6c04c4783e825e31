// Package tasks defines the activation job: its payload, its task id, and the retry policy that maps
// each outcome class to what happens next.
package tasks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/hibiken/asynq"

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
	Reconcile bool `json:"reconcile,omitzero"`
	// Batch is the id of the enqueue run the job came from, if any.
	Batch string `json:"batch,omitzero"`
	// EnqueuedAt is when the job was first queued; a job older than the worker's maximum age is
	// dead-lettered instead of retried.
	EnqueuedAt time.Time `json:"enqueuedAt,omitzero"`
	// MaxRetry, when positive, is how many failures the job may have before it is dead-lettered.
	// NewTask gives asynq CrashRetries more, so that the handler, not asynq, ends the job. A payload
	// without it (from an older producer) ends at asynq's own limit.
	MaxRetry int `json:"maxRetry,omitzero"`
	// Secrets holds the request's secret parts (its connections' credentials), sealed with the key
	// named in front: "keyid:base64(nonce||ciphertext)". The request holds Withheld in their place.
	// Empty when the request carries none, or carries them in plain text (no key was configured and
	// plaintext was allowed, or an older release queued it). See Seal and Open.
	Secrets string `json:"secrets,omitzero"`
	// Op is what the job does to the pair ("" activates).
	Op Op `json:"op,omitzero"`
	// Seq is the job's place in the order of its pair's operations (internal/pairorder): a job
	// whose pair has a later operation is superseded and does nothing. 0 for a pair's first
	// activation, and for jobs of releases before the lifecycle.
	Seq int64 `json:"seq,omitzero"`
	// EndUser, when set, lets the job create its end user should the API not know them.
	EndUser *EndUser `json:"endUser,omitzero"`
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

// CanonicalTaskID returns id with its integration ULID in canonical form: the id TaskID (or
// TaskIDAt, for an operation after the pair's first) gives it today. Releases before ULIDs were
// made canonical wrote them as the request spelt them.
func CanonicalTaskID(id string) string {
	if p, ok := PairOf(id); ok && p.IntegrationID != versori.CanonicalULID(p.IntegrationID) {
		seq, _ := SeqOf(id)
		return TaskIDAt(p, seq)
	}
	return id
}

// PairOf returns the pair a task id of TaskID's or TaskIDAt's form names, and false for any other id.
func PairOf(id string) (versori.Pair, bool) {
	rest, ok := strings.CutPrefix(id, "act:")
	if !ok {
		if rest, ok = strings.CutPrefix(id, seqPrefix); !ok {
			return versori.Pair{}, false
		}
		n, after, ok := strings.Cut(rest, ":")
		if !ok || n == "" || strings.Trim(n, "0123456789") != "" || n[0] == '0' {
			return versori.Pair{}, false
		}
		rest = after
	}
	integration, user, ok := strings.Cut(rest, ":")
	return versori.Pair{UserID: user, IntegrationID: integration}, ok
}

// NewTask validates p's request and returns its task, with the request's ULIDs in canonical form,
// the task id of the pair's operation p.Seq (TaskIDAt) and opts. When p.MaxRetry is set, asynq's own limit is set above it (by
// CrashRetries), whatever opts say.
func NewTask(p Payload, opts ...asynq.Option) (*asynq.Task, error) {
	req, err := p.Request.Canonical()
	if err != nil {
		return nil, err
	}
	p.Request = req
	b, err := jsonv2.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("tasks: encoding payload: %w", err)
	}
	opts = append([]asynq.Option{asynq.TaskID(TaskIDAt(p.Request.Pair(), p.Seq))}, opts...)
	if p.MaxRetry > 0 {
		opts = append(opts, asynq.MaxRetry(p.MaxRetry+CrashRetries))
	}
	return asynq.NewTask(TypeActivate, b, opts...), nil
}

// DecodePayload decodes and validates a task payload. Its request is read as every way in reads one
// (versori.DecodeActivationRequest: exact field names, none twice, ULIDs made canonical), so that a
// payload from another producer cannot name a pair other than the one the API would see. Fields of
// the payload it does not know are skipped, so that a worker reads what a newer producer wrote.
func DecodePayload(b []byte) (Payload, error) {
	if p, ok := decodeUsual(b); ok {
		return p, nil
	}
	return decodeSteps(b)
}

// decodeSteps is DecodePayload for any payload: the payload first, then its request, so that an
// error names what is wrong and the dead letter names the pair whenever it can be read.
func decodeSteps(b []byte) (Payload, error) {
	// The request is kept as it came, to be read on its own: the field at the shallower depth wins.
	var w struct {
		Payload
		Request jsontext.Value `json:"request"`
	}
	if err := jsonv2.Unmarshal(b, &w); err != nil {
		notJSON := fmt.Errorf("tasks: payload is not JSON of its shape: %s", errorText(err))
		// The request may be fine when another field is not (an enqueuedAt in another format, a
		// maxRetry of 3.0, a name given twice): read it alone, so that the dead letter names its pair.
		// A name given twice inside the request is the request's fault: say which in its words.
		m, ok := members(b, "request")
		if !ok || m[0] == nil {
			return Payload{}, notJSON
		}
		req, rerr := versori.DecodeActivationRequest(m[0])
		if rerr == nil {
			return Payload{Request: req}, notJSON
		}
		return Payload{Request: looseRequest(m[0])}, fmt.Errorf("tasks: payload request: %w", requestError(rerr))
	}
	p := w.Payload
	if len(w.Request) == 0 {
		return p, fmt.Errorf("tasks: payload request: %w", &versori.ValidationError{Field: "request", Reason: "is missing"})
	}
	req, err := versori.DecodeActivationRequest(w.Request)
	p.Request = req
	if err != nil {
		p.Request = looseRequest(w.Request)
		return p, fmt.Errorf("tasks: payload request: %w", requestError(err))
	}
	return p, nil
}

// decodeUsual reads a payload in one pass by DecodeActivationRequest's rules (the request's names
// exact, each once, none unknown; the request valid and canonical), and reports false for anything
// else, which DecodePayload then reads in steps that say what is wrong. One pass instead of two is
// 1.9 µs a job instead of 2.3 (go test ./tasks -bench DecodePayload).
func decodeUsual(b []byte) (Payload, bool) {
	var w struct {
		Payload
		// Unknown holds members of the payload a newer producer may write; their presence makes the
		// request's unknown members, and only those, refused.
		Unknown jsontext.Value `json:",unknown"`
	}
	if jsonv2.Unmarshal(b, &w, jsonv2.RejectUnknownMembers(true)) != nil || w.Request.UserID == "" ||
		len(w.Request.DynamicVariables) > 0 && w.Request.DynamicVariables[0] == 'n' {
		return Payload{}, false
	}
	req, err := w.Request.Canonical()
	if err != nil {
		return Payload{}, false
	}
	w.Payload.Request = req
	return w.Payload, true
}

// requestError names the request itself where err blames the whole value it was given.
func requestError(err error) error {
	var ve *versori.ValidationError
	if errors.As(err, &ve) && ve.Field == "" {
		return &versori.ValidationError{Field: "request", Reason: ve.Reason}
	}
	return err
}

// errorText is a decoding error's text without the input it quotes: the library quotes bytes of a
// bad escape sequence, which inside credentials are part of a secret.
func errorText(err error) string {
	var syn *jsontext.SyntacticError
	switch {
	case errors.As(err, &syn) && errors.Is(syn.Err, jsontext.ErrDuplicateName):
		return fmt.Sprintf("%q is given twice", syn.JSONPointer)
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at byte %d (within %q)", syn.ByteOffset+1, syn.JSONPointer)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// looseRequest reads what it can of a request the strict decoder refused, for its dead letter. The
// pair is read by the strict decoder's rules (exact names, each once, strings), and left out when
// it cannot be: encoding/json matches names in any case and keeps the last of two, so it could name
// another pair than the task's, which a requeue of the dead letter would then activate.
func looseRequest(raw []byte) versori.ActivationRequest {
	var loose versori.ActivationRequest
	_ = json.Unmarshal(raw, &loose)
	loose.UserID, loose.IntegrationID = "", ""
	m, ok := members(raw, "userId", "integrationId")
	if !ok {
		return loose
	}
	var user, integration string
	if m[0] != nil && m[1] != nil && jsonv2.Unmarshal(m[0], &user) == nil && jsonv2.Unmarshal(m[1], &integration) == nil {
		loose.UserID, loose.IntegrationID = user, integration
	}
	return loose
}

// members returns the raw values of the members of the JSON object b with the given names, exactly
// as spelt (nil for one that is absent). ok is false when b is not a JSON object or one of the names
// appears more than once in it. Names given twice elsewhere, inside values included, are allowed.
func members(b []byte, names ...string) (vals []jsontext.Value, ok bool) {
	dec := jsontext.NewDecoder(bytes.NewReader(b), jsontext.AllowDuplicateNames(true))
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return nil, false
	}
	vals = make([]jsontext.Value, len(names))
	for dec.PeekKind() != '}' {
		tok, err := dec.ReadToken()
		if err != nil {
			return nil, false
		}
		name := tok.String() // tok is valid only until the next read
		val, err := dec.ReadValue()
		if err != nil {
			return nil, false
		}
		if i := slices.Index(names, name); i >= 0 {
			if vals[i] != nil {
				return nil, false
			}
			vals[i] = val.Clone()
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return nil, false
	}
	return vals, true
}
