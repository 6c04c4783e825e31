package versori

import (
	"encoding/json"
	"strconv"

	"github.com/go-json-experiment/json/jsontext"
)

// rowBody is what DecodeRow reads: a request's members, and endUser beside them.
type rowBody struct {
	UserID           string                 `json:"userId"`
	IntegrationID    string                 `json:"integrationId"`
	Connections      []ActivationConnection `json:"connections"`
	DynamicVariables json.RawMessage        `json:"dynamicVariables,omitempty"`
	EndUser          jsontext.Value         `json:"endUser,omitzero"`
}

// DecodeRow decodes and validates a producer's row: the body of POST /activations, as
// DecodeActivationRequest reads it, with an optional "endUser" member beside the request's, the end
// user to create should the API not know them (DecodeEndUser). end is nil when the row has none
// ("endUser": null is the same). A bad row is a *ValidationError naming the field to blame, as
// "endUser.primaryConnection.name".
func DecodeRow(data []byte) (req ActivationRequest, end *EndUserCreate, err error) {
	var b rowBody
	if err := decodeStrictIn(data, &b, "", rowFields); err != nil {
		return req, nil, err
	}
	if string(jsontext.Value(data).Kind()) != "{" {
		return req, nil, invalid("", "must be a JSON object, not null")
	}
	req = ActivationRequest{UserID: b.UserID, IntegrationID: b.IntegrationID, Connections: b.Connections, DynamicVariables: b.DynamicVariables}
	if isNull(req.DynamicVariables) {
		req.DynamicVariables = nil
	}
	if req, err = req.Canonical(); err != nil {
		return req, nil, err
	}
	if len(b.EndUser) == 0 || isNull(b.EndUser) {
		return req, nil, nil
	}
	end, err = DecodeEndUser(b.EndUser, req.UserID)
	return req, end, err
}

// DecodeEndUser decodes and validates the "endUser" member of a row (or a CSV row's endUser cell)
// for the user userID, by DecodeActivationRequest's rules: {"displayName", "primaryConnection":
// {"name", "credentials", "variables"}}. Its ExternalID is userID: a row may give "externalId", but
// only as userID, since the job creates the user the request names. Field paths in its errors
// start with "endUser".
func DecodeEndUser(data []byte, userID string) (*EndUserCreate, error) {
	var w struct {
		ExternalID        *string `json:"externalId"`
		DisplayName       string  `json:"displayName"`
		PrimaryConnection *struct {
			Name        *string              `json:"name"`
			Credentials json.RawMessage      `json:"credentials"`
			Variables   []ConnectionVariable `json:"variables"`
		} `json:"primaryConnection"`
	}
	if err := decodeStrictIn(data, &w, "endUser", endUserFields); err != nil {
		return nil, err
	}
	if string(jsontext.Value(data).Kind()) != "{" {
		return nil, invalid("endUser", "must be a JSON object, not null")
	}
	if w.ExternalID != nil && *w.ExternalID != userID {
		return nil, invalid("endUser.externalId", "must be the row's userId, or left out (the user created is the one the row names)")
	}
	e := &EndUserCreate{ExternalID: userID, DisplayName: w.DisplayName}
	if pc := w.PrimaryConnection; pc != nil {
		e.PrimaryConnection = &ConnectionCreate{Credentials: pc.Credentials, Variables: pc.Variables}
		if pc.Name != nil {
			e.PrimaryConnection.Name = *pc.Name
		}
		switch {
		case pc.Name == nil:
			return nil, invalid("endUser.primaryConnection.name", "is required")
		case len(pc.Credentials) == 0 || isNull(pc.Credentials):
			return nil, invalid("endUser.primaryConnection.credentials", "is required (a JSON object)")
		case pc.Variables == nil:
			return nil, invalid("endUser.primaryConnection.variables", "is required (a JSON array of {\"name\",\"value\"}, [] for none)")
		}
	}
	return e, e.Validate()
}

// Validate checks e as CreateEndUser's body: an externalId, and a primaryConnection with a name,
// credentials that are a JSON object, and variables (none may be nil: [] for none), each named.
// Field paths in its errors are those of a row's "endUser" member ("endUser.primaryConnection.name").
func (e EndUserCreate) Validate() error {
	if e.ExternalID == "" {
		return invalid("endUser.externalId", "is required")
	}
	c := e.PrimaryConnection
	if c == nil {
		return invalid("endUser.primaryConnection", "is required: the connection the user authenticates to the hub's primary connector with")
	}
	const field = "endUser.primaryConnection."
	if c.Name == "" {
		return invalid(field+"name", "is required")
	}
	if len(c.Credentials) == 0 {
		return invalid(field+"credentials", "must be a JSON object")
	}
	if reason := objectProblem(c.Credentials); reason != "" {
		return invalid(field+"credentials", "%s", reason)
	}
	if c.Variables == nil {
		return invalid(field+"variables", "is required (a JSON array of {\"name\",\"value\"}, [] for none)")
	}
	for j, v := range c.Variables {
		if v.Name == "" {
			return invalid(field+"variables["+strconv.Itoa(j)+"].name", "is required")
		}
	}
	return nil
}
