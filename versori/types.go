package versori

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// ActivationRequest is the body of POST /activations: one end user's request to turn one
// integration on. It is also the payload of an activation job and the row format of JSONL input.
type ActivationRequest struct {
	UserID           string                 `json:"userId"`
	IntegrationID    string                 `json:"integrationId"`
	Connections      []ActivationConnection `json:"connections"`
	DynamicVariables json.RawMessage        `json:"dynamicVariables,omitempty"`
}

// Pair returns the request's (userId, integrationId) pair, the unit activator activates at most once.
func (r ActivationRequest) Pair() Pair {
	return Pair{UserID: r.UserID, IntegrationID: r.IntegrationID}
}

// MarshalJSON writes r as the API wants it: connections always as an array, and each connection
// with exactly the fields of its form (a new one always with credentials, {} when it has none, and
// variables).
func (r ActivationRequest) MarshalJSON() ([]byte, error) { return jsonv2.Marshal(r.wire()) }

// MarshalJSONTo is MarshalJSON for encoders that stream (go-json-experiment/json), so that a payload
// holding the request is encoded in one pass.
func (r ActivationRequest) MarshalJSONTo(enc *jsontext.Encoder) error {
	return jsonv2.MarshalEncode(enc, r.wire())
}

// wireRequest is a request as MarshalJSON writes it.
type wireRequest struct {
	UserID           string           `json:"userId"`
	IntegrationID    string           `json:"integrationId"`
	Connections      []wireConnection `json:"connections"`
	DynamicVariables jsontext.Value   `json:"dynamicVariables,omitzero"`
}

// wireConnection is a connection of either form: the new form's fields are pointers or values that
// are nil for an existing connection, so that it is written with its two fields only.
type wireConnection struct {
	TemplateID   string                `json:"templateId"`
	ConnectionID string                `json:"connectionId,omitzero"`
	Name         *string               `json:"name,omitzero"`
	Credentials  jsontext.Value        `json:"credentials,omitzero"`
	Variables    *[]ConnectionVariable `json:"variables,omitzero"`
}

func (r ActivationRequest) wire() wireRequest {
	w := wireRequest{UserID: r.UserID, IntegrationID: r.IntegrationID, DynamicVariables: jsontext.Value(r.DynamicVariables),
		Connections: make([]wireConnection, len(r.Connections))}
	for i := range r.Connections {
		c := &r.Connections[i]
		if c.IsExisting() {
			w.Connections[i] = wireConnection{TemplateID: c.TemplateID, ConnectionID: c.ConnectionID}
			continue
		}
		creds := jsontext.Value(c.Credentials)
		if len(creds) == 0 {
			creds = jsontext.Value("{}")
		}
		w.Connections[i] = wireConnection{TemplateID: c.TemplateID, Name: &c.Name, Credentials: creds, Variables: &c.Variables}
	}
	return w
}

// Pair identifies one end user's activation of one integration.
type Pair struct {
	UserID        string `json:"userId"`
	IntegrationID string `json:"integrationId"`
}

// ActivationConnection binds a connection template of the integration to a connection: either an
// existing one (TemplateID and ConnectionID), or a new one (TemplateID, Name, Credentials and Variables).
type ActivationConnection struct {
	TemplateID   string `json:"templateId"`
	ConnectionID string `json:"connectionId,omitempty"`

	Name        string               `json:"name,omitempty"`
	Credentials json.RawMessage      `json:"credentials,omitempty"`
	Variables   []ConnectionVariable `json:"variables,omitempty"`
}

// IsExisting reports whether c references an existing connection rather than creating one.
func (c ActivationConnection) IsExisting() bool { return c.ConnectionID != "" }

// ConnectionVariable is a name/value pair that configures a new connection.
type ConnectionVariable struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Activation is the API's record of an activated integration, as POST and GET /activations return it.
type Activation struct {
	ID          string             `json:"id"`
	HubID       string             `json:"hubId"`
	User        EndUser            `json:"user"`
	Integration IntegrationSummary `json:"integration"`
}

// Activated is what Activate reads from POST /activations' answer: the new activation's id.
// GetActivation returns all of the activation.
type Activated struct {
	ID string `json:"id"`
}

// decodeBody reads the answer with the faster decoder; the rest of the activation is skipped.
func (a *Activated) decodeBody(body []byte) error { return jsonv2.Unmarshal(body, a) }

// EndUser is the end user an activation belongs to.
type EndUser struct {
	ID                string          `json:"id"`
	ExternalID        string          `json:"externalId"`
	DisplayName       string          `json:"displayName"`
	HubID             string          `json:"hubId"`
	PrimaryConnection json.RawMessage `json:"primaryConnection,omitempty"`
	CreatedAt         time.Time       `json:"createdAt"`
	UpdatedAt         time.Time       `json:"updatedAt"`
}

// IntegrationSummary is the summary of an integration embedded in activations.
type IntegrationSummary struct {
	ID              string          `json:"id"`
	Name            string          `json:"name"`
	ImageURL        string          `json:"imageUrl"`
	Description     string          `json:"description"`
	VariablesSchema json.RawMessage `json:"variablesSchema,omitempty"`
	IsDeployed      bool            `json:"isDeployed"`
	IsActivated     bool            `json:"isActivated"`
}

// EndUserActivation is one entry of an end user's activations list.
type EndUserActivation struct {
	ID          string             `json:"id"`
	HubID       string             `json:"hubId"`
	Integration IntegrationSummary `json:"integration"`
}

// EndUserActivationPage is one page of an end user's activations; Next is the cursor for the next page.
type EndUserActivationPage struct {
	TotalCount  int                 `json:"totalCount"`
	Next        string              `json:"next,omitempty"`
	Prev        string              `json:"prev,omitempty"`
	Activations []EndUserActivation `json:"activations"`
}

// errListShape is the error for a page of activations without the documented shape.
var errListShape = errors.New(`the answer does not have the documented shape (a JSON object holding an "activations" array of activations with ids)`)

// decodeBody reads a page, refusing one whose "activations" is missing, null or not an array, or
// holds an entry without an id or an integration id: a caller looking for an activation must not
// read an answer it cannot understand (a gateway's `{}`, an envelope `{"data":...}`) as "none".
func (p *EndUserActivationPage) decodeBody(body []byte) error {
	// A pointer to the slice tells a missing or null "activations" from an empty array.
	var page struct {
		TotalCount  int                  `json:"totalCount"`
		Next        string               `json:"next"`
		Prev        string               `json:"prev"`
		Activations *[]EndUserActivation `json:"activations"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return err // not JSON, or cut short: undecodable rather than of another shape
		}
		return fmt.Errorf("%w: %w", errListShape, err)
	}
	if page.Activations == nil {
		return errListShape
	}
	for _, a := range *page.Activations {
		if a.ID == "" || a.Integration.ID == "" {
			return errListShape
		}
	}
	*p = EndUserActivationPage{TotalCount: page.TotalCount, Next: page.Next, Prev: page.Prev, Activations: *page.Activations}
	return nil
}

// ErrorBody is the documented JSON body of every error response.
type ErrorBody struct {
	Code    string       `json:"code"`
	Message string       `json:"message"`
	Fields  []ErrorField `json:"fields,omitempty"`
	Details string       `json:"details,omitempty"`
}

// ErrorField names one field of a request that the API refused, and why.
type ErrorField struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// EndUserCreate is the body of POST /hubs/{hub_id}/users (CreateEndUser).
type EndUserCreate struct {
	// ExternalID is the user's id in the hub's primary system: the userId activations name them by.
	ExternalID        string            `json:"externalId"`
	DisplayName       string            `json:"displayName,omitempty"`
	PrimaryConnection *ConnectionCreate `json:"primaryConnection,omitempty"`
}

// ConnectionCreate is a connection to create against a connector (the spec's ConnectionCreate).
type ConnectionCreate struct {
	Name        string               `json:"name"`
	Credentials json.RawMessage      `json:"credentials"`
	Variables   []ConnectionVariable `json:"variables"`
}
