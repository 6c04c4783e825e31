package versori

import (
	"errors"
	"strings"
	"testing"
)

// TestDecodeRow reads rows with and without endUser: the request as DecodeActivationRequest reads
// it, the end user with the row's userId as externalId, and every error naming its field, while
// DecodeActivationRequest itself still refuses endUser (a job's request never holds one).
func TestDecodeRow(t *testing.T) {
	t.Parallel()
	head := `{"userId":"u","integrationId":"` + vIntegration + `"`
	pc := `"primaryConnection":{"name":"crm","credentials":{"k":"SECRET"},"variables":[]}`
	tests := []struct {
		name, in, field, reason string
		endUser                 bool
	}{
		{"no end user", head + `}`, "", "", false},
		{"null end user", head + `,"endUser":null}`, "", "", false},
		{"end user", head + `,"endUser":{"displayName":"Ada",` + pc + `}}`, "", "", true},
		{"externalId the userId", head + `,"endUser":{"externalId":"u",` + pc + `}}`, "", "", true},
		{"externalId another", head + `,"endUser":{"externalId":"v",` + pc + `}}`, "endUser.externalId", "must be the row's userId", false},
		{"unknown top-level field", head + `,"colour":1}`, "colour", "is not a known field (known: userId, integrationId, connections, dynamicVariables, endUser)", false},
		{"miscased endUser", head + `,"enduser":{}}`, "enduser", "did you mean endUser?", false},
		{"unknown end user field", head + `,"endUser":{"name":"x"}}`, "endUser.name", "is not a known field (known: externalId, displayName, primaryConnection)", false},
		{"end user twice", head + `,"endUser":{},"endUser":{}}`, "endUser", "appears more than once", false},
		{"field twice inside", head + `,"endUser":{"displayName":"a","displayName":"b"}}`, "endUser.displayName", "appears more than once", false},
		{"no primary connection", head + `,"endUser":{"displayName":"Ada"}}`, "endUser.primaryConnection", "is required", false},
		{"bad request first", `{"userId":"","endUser":{}}`, "userId", "is required", false},
		{"wrong type", head + `,"endUser":{"primaryConnection":{"name":1}}}`, "endUser.primaryConnection.name", "must be a string, not a number", false},
		{"bad escape in its credentials", head + `,"endUser":{"primaryConnection":{"name":"n","credentials":{"k":"\uSECRET"},"variables":[]}}}`, "", "invalid escape sequence in string", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, end, err := DecodeRow([]byte(tt.in))
			if tt.reason == "" {
				if err != nil || req.UserID != "u" || (end != nil) != tt.endUser {
					t.Fatalf("got %+v, %+v, %v", req, end, err)
				}
				if end != nil && (end.ExternalID != "u" || end.PrimaryConnection.Name != "crm") {
					t.Errorf("end user %+v", end)
				}
				return
			}
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field != tt.field || !strings.Contains(ve.Reason, tt.reason) || strings.Contains(ve.Reason, "SECRET") {
				t.Fatalf("error %v, want field %q reason %q", err, tt.field, tt.reason)
			}
		})
	}
	if _, err := DecodeActivationRequest([]byte(head + `,"endUser":{}}`)); err == nil {
		t.Error("DecodeActivationRequest took endUser")
	}
}
