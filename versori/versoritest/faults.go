package versoritest

import (
	"cmp"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/versori/activator/versori"
)

// DefaultRetryAfter is the Retry-After sent with rate-limit faults when Faults.RetryAfter is empty.
const DefaultRetryAfter = "1"

// DefaultLateCommitStatus is the status of Faults.LateCommitRate's answers when LateCommitStatus is 0:
// a gateway's timeout.
const DefaultLateCommitStatus = http.StatusGatewayTimeout

// DefaultLateCommitDelay is how long a late commit lands after its call when LateCommitDelay is 0.
const DefaultLateCommitDelay = 300 * time.Millisecond

// DefaultHangFor is how long a call drawn by HangCommitRate is held when HangFor is 0; longer than any
// sane client timeout, so that the client gives up first.
const DefaultHangFor = 30 * time.Second

// RedirectBaseURL is where redirect faults send the client (with the request's path appended) when no
// Location is given: a host that never resolves, so a client that follows the redirect fails.
const RedirectBaseURL = "https://platform.example.invalid"

// Faults are the misbehaviours in force. Latency applies to every call. The rates apply to POST
// /activations, and to the other write operations WriteOps names, except BadListRate, which applies
// to the list route with a draw of its own.
//
// The write operations besides activate are versori.OpCreateEndUser (POST /hubs/{hub}/users),
// versori.OpUpdateVariables (PUT /activations/{id}/variables) and versori.OpDeleteActivation (DELETE
// /activations/{id}). Those WriteOps selects meet the same rates as POST /activations, and
// LatencyAfterCommit, each with a draw of its own on an RNG of its own, so that turning them on does
// not change which POSTs meet faults. There a commit is the operation's effect (the user created, the
// variables stored, the activation deleted), so a late, hung or dropped call still takes effect.
// ConflictRate is the exception: it applies to POST /activations only, because on the other routes a
// 409 says something about the state (the user already exists) that a gateway never says.
//
// The POST rates are drawn once per POST from the seeded RNG, in the order ServerErrorRate,
// RateLimitRate, DropAfterCommitRate, LateCommitRate, HangCommitRate, ForbiddenRate, ConflictRate,
// TooEarlyRate, RedirectRate, so that together they must not exceed 1. The draw falls into the rates
// in that order, so setting a rate leaves unchanged which calls meet the rates before it.
//
// In JSON (the /_standin/faults admin endpoint) the fields are named in camelCase (serverErrorRate,
// hangFor, ...), and durations are Go duration strings such as "250ms"; plain numbers are read as
// nanoseconds.
type Faults struct {
	Latency time.Duration // every call waits this long before being handled
	// LatencyAfterCommit makes POST /activations wait after committing, before answering, so that a
	// client timeout leaves the outcome unknown while the activation exists.
	LatencyAfterCommit  time.Duration
	ServerErrorRate     float64 // fraction of POSTs answered 503, not committed
	RateLimitRate       float64 // fraction of POSTs answered 429 with Retry-After, not committed
	RetryAfter          string  // Retry-After sent with those 429s (default DefaultRetryAfter): seconds, a day or more included, or an HTTP-date
	DropAfterCommitRate float64 // fraction of POSTs committed, then the connection is closed with no answer

	// LateCommitRate is the fraction of POSTs answered LateCommitStatus at once with nothing committed,
	// whose activation is committed LateCommitDelay later all the same: the gateway gave up, the
	// backend finished. The API's own checks are made when the commit lands.
	LateCommitRate float64
	// LateCommitStatus is the status of LateCommitRate's answers: 500, 502, 503 or 504 (0 means
	// DefaultLateCommitStatus).
	LateCommitStatus int
	// LateCommitDelay is how long after the answer a LateCommitRate commit lands, and how long after
	// the call arrived a HangCommitRate one does (0 means DefaultLateCommitDelay).
	LateCommitDelay time.Duration
	// HangCommitRate is the fraction of POSTs held without an answer until the client goes away or
	// HangFor passes (then 504), whose activation is committed LateCommitDelay after the call arrived
	// even if the client has gone: the caller times out, the backend commits.
	HangCommitRate float64
	HangFor        time.Duration // how long HangCommitRate holds a call (0 means DefaultHangFor)
	// ForbiddenRate is the fraction of POSTs answered 403 about that request only (the key keeps
	// working for every other call), not committed.
	ForbiddenRate float64
	ConflictRate  float64 // fraction of POSTs answered 409 Conflict, not committed
	TooEarlyRate  float64 // fraction of POSTs answered 425 Too Early, not committed
	// RedirectRate is the fraction of POSTs answered 307 with a Location on RedirectBaseURL, not
	// committed.
	RedirectRate float64
	// BadListRate is the fraction of list calls answered 200 with a body of the wrong shape instead of
	// the page, one of {}, null, {"data":{"activations":[...]}} and {"activations":null,"totalCount":N},
	// chosen by the seeded RNG. A client that reads any of them as "no activation" would POST again.
	BadListRate float64
	// WriteOps are the write operations besides activate that the POST rates and LatencyAfterCommit
	// apply to. None by default, so that those routes only meet Latency and scripted faults (ScriptOp).
	WriteOps WriteOps
}

// WriteOps selects write operations besides POST /activations. It is a struct of flags so that Faults
// stays comparable.
type WriteOps struct {
	CreateEndUser    bool `json:"createEndUser,omitempty"`    // versori.OpCreateEndUser: POST /hubs/{hub}/users
	UpdateVariables  bool `json:"updateVariables,omitempty"`  // versori.OpUpdateVariables: PUT /activations/{id}/variables
	DeleteActivation bool `json:"deleteActivation,omitempty"` // versori.OpDeleteActivation: DELETE /activations/{id}
}

// AllWriteOps selects every write operation besides activate.
var AllWriteOps = WriteOps{CreateEndUser: true, UpdateVariables: true, DeleteActivation: true}

// Has reports whether o selects op; activate is never selected, its faults always apply.
func (o WriteOps) Has(op string) bool {
	switch op {
	case versori.OpCreateEndUser:
		return o.CreateEndUser
	case versori.OpUpdateVariables:
		return o.UpdateVariables
	case versori.OpDeleteActivation:
		return o.DeleteActivation
	}
	return false
}

// String lists the operations o selects as ParseWriteOps reads them: op names joined by commas.
func (o WriteOps) String() string {
	var ops []string
	for _, op := range writeOps[1:] {
		if o.Has(op) {
			ops = append(ops, op)
		}
	}
	return strings.Join(ops, ",")
}

// ParseWriteOps reads a comma-separated list of versori.OpCreateEndUser, OpUpdateVariables and
// OpDeleteActivation, or "all" for every one of them; "" selects none.
func ParseWriteOps(v string) (WriteOps, error) {
	var o WriteOps
	for op := range strings.SplitSeq(v, ",") {
		switch op = strings.TrimSpace(op); op {
		case "":
		case "all":
			o = AllWriteOps
		case versori.OpCreateEndUser:
			o.CreateEndUser = true
		case versori.OpUpdateVariables:
			o.UpdateVariables = true
		case versori.OpDeleteActivation:
			o.DeleteActivation = true
		default:
			return WriteOps{}, fmt.Errorf("%q is not a write operation: want %s, %s, %s or all", op,
				versori.OpCreateEndUser, versori.OpUpdateVariables, versori.OpDeleteActivation)
		}
	}
	return o, nil
}

// writeOps are the operations faults can be scripted for and rates drawn for, activate first.
var writeOps = []string{versori.OpActivate, versori.OpCreateEndUser, versori.OpUpdateVariables, versori.OpDeleteActivation}

// postFault is a rate-drawn fault of POST /activations; the constants are in the order of the draw.
type postFault int

const (
	pfServerError postFault = iota
	pfRateLimit
	pfDropAfterCommit
	pfLateCommit
	pfHangCommit
	pfForbidden
	pfConflict
	pfTooEarly
	pfRedirect
	nPostFaults
)

// namedRate is a rate with its JSON name, for messages.
type namedRate struct {
	name string
	v    float64
}

// check reports a rate outside [0, 1], NaN included.
func (r namedRate) check() error {
	if !(r.v >= 0 && r.v <= 1) {
		return fmt.Errorf("%s %v is not within [0, 1]", r.name, r.v)
	}
	return nil
}

// postRates lists the POST rates in the order of the draw, indexed by postFault.
func (f Faults) postRates() [nPostFaults]namedRate {
	return [nPostFaults]namedRate{
		pfServerError:     {"serverErrorRate", f.ServerErrorRate},
		pfRateLimit:       {"rateLimitRate", f.RateLimitRate},
		pfDropAfterCommit: {"dropAfterCommitRate", f.DropAfterCommitRate},
		pfLateCommit:      {"lateCommitRate", f.LateCommitRate},
		pfHangCommit:      {"hangCommitRate", f.HangCommitRate},
		pfForbidden:       {"forbiddenRate", f.ForbiddenRate},
		pfConflict:        {"conflictRate", f.ConflictRate},
		pfTooEarly:        {"tooEarlyRate", f.TooEarlyRate},
		pfRedirect:        {"redirectRate", f.RedirectRate},
	}
}

// Validate reports rates outside [0, 1], POST rates adding up to more than 1, a LateCommitStatus that
// is not a gateway's, negative durations and a Retry-After that is neither seconds nor an HTTP-date.
func (f Faults) Validate() error {
	rates := f.postRates()
	sum := 0.0
	for _, r := range rates {
		if err := r.check(); err != nil {
			return err
		}
		sum += r.v
	}
	// BadListRate has a draw of its own, so it does not count towards the POST rates' sum.
	if err := (namedRate{"badListRate", f.BadListRate}).check(); err != nil {
		return err
	}
	if sum > 1+1e-9 {
		return fmt.Errorf("POST fault rates add up to %v, more than 1", sum)
	}
	switch f.LateCommitStatus {
	case 0, http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
	default:
		return fmt.Errorf("lateCommitStatus %d is not 500, 502, 503 or 504", f.LateCommitStatus)
	}
	durations := []struct {
		name string
		v    time.Duration
	}{{"latency", f.Latency}, {"latencyAfterCommit", f.LatencyAfterCommit}, {"lateCommitDelay", f.LateCommitDelay}, {"hangFor", f.HangFor}}
	for _, d := range durations {
		if d.v < 0 {
			return fmt.Errorf("%s %s must not be negative", d.name, d.v)
		}
	}
	if f.RetryAfter != "" {
		if _, ok := versori.ParseRetryAfter(f.RetryAfter, time.Now()); !ok {
			return fmt.Errorf("retryAfter %q is neither seconds nor an HTTP-date", f.RetryAfter)
		}
	}
	return nil
}

// faultsJSON is Faults' wire form, with durations that read as strings or nanoseconds.
type faultsJSON struct {
	Latency             jsonDuration `json:"latency"`
	LatencyAfterCommit  jsonDuration `json:"latencyAfterCommit"`
	ServerErrorRate     float64      `json:"serverErrorRate"`
	RateLimitRate       float64      `json:"rateLimitRate"`
	RetryAfter          string       `json:"retryAfter,omitempty"`
	DropAfterCommitRate float64      `json:"dropAfterCommitRate"`
	LateCommitRate      float64      `json:"lateCommitRate"`
	LateCommitStatus    int          `json:"lateCommitStatus"`
	LateCommitDelay     jsonDuration `json:"lateCommitDelay"`
	HangCommitRate      float64      `json:"hangCommitRate"`
	HangFor             jsonDuration `json:"hangFor"`
	ForbiddenRate       float64      `json:"forbiddenRate"`
	ConflictRate        float64      `json:"conflictRate"`
	TooEarlyRate        float64      `json:"tooEarlyRate"`
	RedirectRate        float64      `json:"redirectRate"`
	BadListRate         float64      `json:"badListRate"`
	WriteOps            WriteOps     `json:"writeOps"`
}

// MarshalJSON writes durations as Go duration strings, so the admin endpoint's output can be sent back.
func (f Faults) MarshalJSON() ([]byte, error) {
	return json.Marshal(faultsJSON{
		Latency:             jsonDuration(f.Latency),
		LatencyAfterCommit:  jsonDuration(f.LatencyAfterCommit),
		ServerErrorRate:     f.ServerErrorRate,
		RateLimitRate:       f.RateLimitRate,
		RetryAfter:          f.RetryAfter,
		DropAfterCommitRate: f.DropAfterCommitRate,
		LateCommitRate:      f.LateCommitRate,
		LateCommitStatus:    f.LateCommitStatus,
		LateCommitDelay:     jsonDuration(f.LateCommitDelay),
		HangCommitRate:      f.HangCommitRate,
		HangFor:             jsonDuration(f.HangFor),
		ForbiddenRate:       f.ForbiddenRate,
		ConflictRate:        f.ConflictRate,
		TooEarlyRate:        f.TooEarlyRate,
		RedirectRate:        f.RedirectRate,
		BadListRate:         f.BadListRate,
		WriteOps:            f.WriteOps,
	})
}

// UnmarshalJSON reads durations as Go duration strings or as nanoseconds; absent fields are zero.
func (f *Faults) UnmarshalJSON(b []byte) error {
	var j faultsJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*f = Faults{
		Latency:             time.Duration(j.Latency),
		LatencyAfterCommit:  time.Duration(j.LatencyAfterCommit),
		ServerErrorRate:     j.ServerErrorRate,
		RateLimitRate:       j.RateLimitRate,
		RetryAfter:          j.RetryAfter,
		DropAfterCommitRate: j.DropAfterCommitRate,
		LateCommitRate:      j.LateCommitRate,
		LateCommitStatus:    j.LateCommitStatus,
		LateCommitDelay:     time.Duration(j.LateCommitDelay),
		HangCommitRate:      j.HangCommitRate,
		HangFor:             time.Duration(j.HangFor),
		ForbiddenRate:       j.ForbiddenRate,
		ConflictRate:        j.ConflictRate,
		TooEarlyRate:        j.TooEarlyRate,
		RedirectRate:        j.RedirectRate,
		BadListRate:         j.BadListRate,
		WriteOps:            j.WriteOps,
	}
	return nil
}

type jsonDuration time.Duration

func (d jsonDuration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

func (d *jsonDuration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = jsonDuration(v)
		return nil
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return fmt.Errorf("duration %s is neither a Go duration string nor nanoseconds", b)
	}
	*d = jsonDuration(n)
	return nil
}

// Fault is one scripted answer to one pair's next POST /activations (Script), or to the next call of
// another write operation about a pair (ScriptOp). It is consumed once the call is authenticated and
// decoded, ahead of the fault rates, and it replaces LatencyAfterCommit for that call. For the other
// operations, "commit" below is the operation's effect and "the activation" what it changes.
//
// A Fault without Commit answers without looking at the request further, as a gateway would. One with
// Commit still meets the API's own checks (unknown user or integration, missing connections) and
// answers those instead when they fail. One with neither Status nor Drop nor CommitAfter answers
// normally (commit, then 200) after Delay, which makes it a way to slow down one call; if the client
// goes away during that Delay, nothing is committed.
//
// CommitAfter (without Commit) is the gateway that gave up on a backend that went on to finish: the
// call answers Status (504 when 0) after Delay, or drops, without committing, and the activation is
// committed CommitAfter after the call was handled, in the background, whatever the client does, if
// the API's own checks pass then. A Delay longer than CommitAfter makes a call that is still unanswered
// when its activation lands.
type Fault struct {
	Status     int                // answer this status with an error body (0: no status fault)
	RetryAfter string             // Retry-After header sent with it, when set
	Location   string             // Location header sent with it; a 3xx without one gets RedirectBaseURL + the path
	Body       *versori.ErrorBody // error body sent (default: a generic one for the status)
	Commit     bool               // commit the activation before answering or dropping
	Drop       bool               // close the connection without answering
	Delay      time.Duration      // wait before answering (after committing when Commit)
	// CommitAfter commits the activation this long after the call was handled, in the background,
	// without the answer reporting it (ignored with Commit).
	CommitAfter time.Duration
}

// commits reports whether the call creates an activation before answering, given that it passes
// validation.
func (f Fault) commits() bool { return f.Commit || (f.Status == 0 && !f.Drop && f.CommitAfter <= 0) }

// forbidden is the 403 about one request; the real API words it about the end user and the
// integration, not the key, which keeps working.
func forbidden() Fault {
	return Fault{Status: http.StatusForbidden, Body: &versori.ErrorBody{Message: "end user may not use this integration"}}
}

// plan is what one write call will do, decided under the lock when it arrives.
type plan struct {
	fault Fault
	// afterCommit is the wait between committing and answering.
	afterCommit time.Duration
	// beforeCommit is the wait before a plain success commits, or before a fault answers.
	beforeCommit time.Duration
	// commitLater, when set, commits in the background at commitAt whatever the call answers.
	commitLater bool
	commitAt    time.Time
	// hangFor, when set, holds the call unanswered this long (or until the client goes away) before
	// it answers fault.
	hangFor time.Duration
}

// scriptKey is whose queue of scripted faults a write call consumes: its operation and its pair (for
// OpCreateEndUser, the user alone).
type scriptKey struct {
	op   string
	pair versori.Pair
}

// planLocked decides a write call of op about p: for activate, 403 when p is forbidden; else p's next
// fault scripted for op, else a draw from the fault rates when they apply to op. A scripted fault
// carries its own timing; the rates' calls wait LatencyAfterCommit after committing. arrived is when
// the call came in, which a hung call's commit is timed from.
func (s *Server) planLocked(op string, p versori.Pair, arrived time.Time) plan {
	now := time.Now()
	if op == versori.OpActivate && s.forbid[p] {
		return plan{fault: forbidden()}
	}
	key := scriptKey{op, p}
	if q := s.scripts[key]; len(q) > 0 {
		f := q[0]
		if len(q) == 1 {
			delete(s.scripts, key)
		} else {
			s.scripts[key] = q[1:]
		}
		if f.Commit {
			return plan{fault: f, afterCommit: f.Delay}
		}
		pl := plan{fault: f, beforeCommit: f.Delay}
		if f.CommitAfter > 0 {
			if f.Status == 0 && !f.Drop {
				pl.fault.Status = http.StatusGatewayTimeout
			}
			pl.commitLater, pl.commitAt = true, now.Add(f.CommitAfter)
		}
		return pl
	}
	fs := s.faults
	if op != versori.OpActivate && !fs.WriteOps.Has(op) {
		return plan{}
	}
	pl := plan{afterCommit: fs.LatencyAfterCommit}
	rates := fs.postRates()
	sum := 0.0
	for _, r := range rates {
		sum += r.v
	}
	if sum <= 0 {
		return pl
	}
	// One draw per call whatever the rates, so the sequence of faults depends only on the seed and
	// the order of the calls of op.
	x := s.rngs[op].Float64()
	drawn := nPostFaults
	cum := 0.0
	for i, r := range rates {
		if cum += r.v; x < cum {
			drawn = postFault(i)
			break
		}
	}
	lateDelay := cmp.Or(fs.LateCommitDelay, DefaultLateCommitDelay)
	switch drawn {
	case pfServerError:
		pl.fault = Fault{Status: http.StatusServiceUnavailable}
	case pfRateLimit:
		pl.fault = Fault{Status: http.StatusTooManyRequests, RetryAfter: cmp.Or(fs.RetryAfter, DefaultRetryAfter)}
	case pfDropAfterCommit:
		pl.fault = Fault{Commit: true, Drop: true}
	case pfLateCommit:
		pl.fault = Fault{Status: cmp.Or(fs.LateCommitStatus, DefaultLateCommitStatus)}
		pl.commitLater, pl.commitAt = true, now.Add(lateDelay)
	case pfHangCommit:
		pl.fault = Fault{Status: http.StatusGatewayTimeout}
		pl.hangFor = cmp.Or(fs.HangFor, DefaultHangFor)
		pl.commitLater, pl.commitAt = true, arrived.Add(lateDelay)
	case pfForbidden:
		pl.fault = forbidden()
	case pfConflict:
		if op == versori.OpActivate {
			pl.fault = Fault{Status: http.StatusConflict}
		}
	case pfTooEarly:
		pl.fault = Fault{Status: http.StatusTooEarly}
	case pfRedirect:
		pl.fault = Fault{Status: http.StatusTemporaryRedirect}
	}
	return pl
}

// commitLaterLocked schedules the effect of call idx about p for at, whatever becomes of the call: the
// backend finishing after the gateway gave up. The API's own checks are made then, by eff, as the
// backend would make them. The commit takes s.mu like every other, so it may safely land after the
// test has ended.
func (s *Server) commitLaterLocked(idx int, p versori.Pair, eff effect, at time.Time) {
	s.pending++
	time.AfterFunc(time.Until(at), func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.pending--
		if status, _ := eff(time.Now()); status/100 == 2 {
			s.markCommittedLocked(idx, p)
		}
	})
}

// listShape is what a list call answers: the page, or a body of the wrong shape.
type listShape int

const (
	listPage listShape = iota
	listEmptyObject
	listNull
	listWrapped
	listNullActivations
	nListShapes
	listScripted // a ScriptList body, not drawn
)

// listFaultLocked consumes p's next ScriptList body, or else draws from BadListRate, on an RNG of its
// own so that list calls do not change which faults the POSTs meet.
func (s *Server) listFaultLocked(p versori.Pair) (listShape, string) {
	if q := s.lists[p]; len(q) > 0 {
		body := q[0]
		if len(q) == 1 {
			delete(s.lists, p)
		} else {
			s.lists[p] = q[1:]
		}
		return listScripted, body
	}
	if rate := s.faults.BadListRate; rate <= 0 || s.listRng.Float64() >= rate {
		return listPage, ""
	}
	return listEmptyObject + listShape(s.listRng.IntN(int(nListShapes-listEmptyObject))), ""
}
