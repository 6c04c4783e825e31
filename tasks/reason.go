package tasks

import (
	"fmt"
	"strings"
)

// Reason says why a job was dead-lettered. The values are part of the CLI and metrics interface.
type Reason string

// The dead-letter reasons.
const (
	ReasonMissingConnections Reason = "missing_connections" // the integration needs a connection the request lacks
	ReasonInvalidRequest     Reason = "invalid_request"     // the API refused the request as malformed
	ReasonUnauthorized       Reason = "unauthorized"        // the end user's token was refused
	ReasonNotFound           Reason = "not_found"           // unknown user or integration
	ReasonPermanentError     Reason = "permanent_error"     // any other error that retrying cannot fix
	ReasonRetriesExhausted   Reason = "retries_exhausted"   // transient failures until the retry limit
	// ReasonSecretUnreadable: the job's sealed credentials cannot be opened (its key id is not in
	// ACTIVATOR_ENCRYPTION_KEYS, or they do not authenticate). The dead letter keeps them sealed:
	// add the key to the workers, then requeue it.
	ReasonSecretUnreadable Reason = "secret_unreadable"
)

// Reasons lists every reason.
func Reasons() []Reason {
	return []Reason{ReasonMissingConnections, ReasonInvalidRequest, ReasonUnauthorized, ReasonNotFound, ReasonPermanentError, ReasonRetriesExhausted, ReasonSecretUnreadable}
}

// ParseReason returns the Reason named s, or an error listing the valid ones.
func ParseReason(s string) (Reason, error) {
	for _, r := range Reasons() {
		if string(r) == s {
			return r, nil
		}
	}
	names := make([]string, 0, len(Reasons()))
	for _, r := range Reasons() {
		names = append(names, string(r))
	}
	return "", fmt.Errorf("unknown dead-letter reason %q (one of: %s)", s, strings.Join(names, ", "))
}
