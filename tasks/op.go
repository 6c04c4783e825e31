package tasks

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/versori/activator/versori"
)

// Op is what a job does to its pair. The empty Op activates, so that payloads of releases before
// the lifecycle read as what they are.
type Op string

// The operations.
const (
	// OpActivate activates the pair; an active pair is left as it is (already_active).
	OpActivate Op = ""
	// OpUpdate activates the pair when it is not active, and otherwise sets its dynamic variables to
	// the request's (PUT /activations/{id}/variables).
	OpUpdate Op = "update"
	// OpDeactivate deletes the pair's activation; a pair without one is already_inactive.
	OpDeactivate Op = "deactivate"
)

// Ops lists every operation.
func Ops() []Op { return []Op{OpActivate, OpUpdate, OpDeactivate} }

// String is the operation's name in logs, metrics and batch counts: "activate" for OpActivate.
func (o Op) String() string {
	if o == OpActivate {
		return "activate"
	}
	return string(o)
}

// ParseOp returns the Op named s ("activate", "update" or "deactivate"; "" is activate).
func ParseOp(s string) (Op, error) {
	switch s {
	case "", "activate":
		return OpActivate, nil
	case string(OpUpdate), string(OpDeactivate):
		return Op(s), nil
	}
	return "", fmt.Errorf("unknown operation %q (one of: activate, update, deactivate)", s)
}

// EndUser is what a job needs to create its end user when the API does not know them: the
// CreateEndUser body without its externalId, which is the request's userId.
type EndUser struct {
	DisplayName string `json:"displayName,omitzero"`
	// PrimaryConnection is the user's connection to the hub's primary connector. Its credentials are
	// sealed with the request's (Payload.Secrets) and read Withheld in the payload.
	PrimaryConnection *versori.ConnectionCreate `json:"primaryConnection,omitzero"`
}

// CreateRequest is the CreateEndUser body for userID.
func (e *EndUser) CreateRequest(userID string) versori.EndUserCreate {
	return versori.EndUserCreate{ExternalID: userID, DisplayName: e.DisplayName, PrimaryConnection: e.PrimaryConnection}
}

// seqPrefix starts the task id of a pair's operation after its first activation.
const seqPrefix = "op:"

// TaskIDAt is the task id of the pair's operation number seq (internal/pairorder numbers them): the
// pair's TaskID for 0, its first activation and every activation before the lifecycle existed, and
// "op:<seq>:<integration ULID>:<user id>" after it.
func TaskIDAt(p versori.Pair, seq int64) string {
	if seq == 0 {
		return TaskID(p)
	}
	return seqPrefix + strconv.FormatInt(seq, 10) + ":" + versori.CanonicalULID(p.IntegrationID) + ":" + p.UserID
}

// SeqOf returns the operation number a task id of TaskIDAt's form names, and false for any other id.
func SeqOf(id string) (int64, bool) {
	if _, ok := PairOf(id); !ok {
		return 0, false
	}
	rest, ok := strings.CutPrefix(id, seqPrefix)
	if !ok {
		return 0, true
	}
	n, _, _ := strings.Cut(rest, ":")
	seq, err := strconv.ParseInt(n, 10, 64)
	return seq, err == nil
}
