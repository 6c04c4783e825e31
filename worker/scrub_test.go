package worker

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

// TestScrubSecrets: an API error that echoes a credential value reaches no log line or dead letter
// with it, and still classifies as the API's error.
func TestScrubSecrets(t *testing.T) {
	const secret = "END-USER-THIRD-PARTY-SECRET"
	req := versori.ActivationRequest{Connections: []versori.ActivationConnection{
		{Credentials: json.RawMessage(`{"oauth":{"token":"` + secret + `","n":["ab","` + secret + `-2"]}}`)},
		{Credentials: json.RawMessage(`{"pin":98765432,"card":4111111111111111.5e3,"n":12}`)},
	}}
	tests := []struct {
		name    string
		err     error
		want    string
		changed bool
	}{
		{"nil", nil, "", false},
		{"no echo", &versori.Error{Op: versori.OpActivate, StatusCode: 400, ErrorBody: versori.ErrorBody{Message: "bad"}}, "versori activate: HTTP 400: bad", false},
		{"message echoes", &versori.Error{Op: versori.OpActivate, StatusCode: 400, ErrorBody: versori.ErrorBody{Message: "token " + secret + " refused"}},
			"versori activate: HTTP 400: token [redacted] refused", true},
		{"field echoes", &versori.Error{Op: versori.OpActivate, StatusCode: 422,
			ErrorBody: versori.ErrorBody{Fields: []versori.ErrorField{{Field: "credentials", Message: secret + "-2 expired"}}}},
			"versori activate: HTTP 422 (credentials: [redacted] expired)", true},
		{"short values kept", errors.New("ab is fine"), "ab is fine", false},
		// A PIN or account number given as a JSON number is as secret as a string one.
		{"number echoes", errors.New("pin 98765432 and 4111111111111111.5e3 refused"), "pin [redacted] and [redacted] refused", true},
		{"end user's primary connection echoes", errors.New("refresh PRIMARY-CONNECTION-SECRET refused"), "refresh [redacted] refused", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := scrubSecrets(tt.err, tasks.Payload{Request: req, EndUser: &tasks.EndUser{PrimaryConnection: &versori.ConnectionCreate{
				Credentials: json.RawMessage(`{"refresh":"PRIMARY-CONNECTION-SECRET"}`)}}})
			if tt.err == nil {
				if got != nil {
					t.Fatalf("scrubSecrets(nil) = %v", got)
				}
				return
			}
			if got.Error() != tt.want || strings.Contains(got.Error(), secret) || (got != tt.err) != tt.changed {
				t.Errorf("scrubSecrets = %q (changed %v), want %q (changed %v)", got, got != tt.err, tt.want, tt.changed)
			}
			var ae *versori.Error
			if errors.As(tt.err, &ae) && (!errors.As(got, &ae) || versori.Classify(got) != versori.Classify(tt.err)) {
				t.Errorf("the scrubbed error no longer classifies as the API's")
			}
		})
	}
}
