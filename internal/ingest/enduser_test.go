package ingest

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/versori/activator/internal/testutil"
)

// TestEndUserRows reads rows with endUser, in JSONL and in the CSV column: good ones carry it in
// Row.EndUser, and a bad one is a reject naming its line and field while the rows around it run.
func TestEndUserRows(t *testing.T) {
	const good = `{"displayName":"Ada","primaryConnection":{"name":"crm","credentials":{"action":[{"apiKey":"s3cret"}]},"variables":[{"name":"region","value":"EU"}]}}`
	bad := func(endUser string) string { return `"endUser":` + endUser }
	pc := func(members string) string { return `{"primaryConnection":{` + members + `}}` }
	tests := []struct {
		name, endUser string // endUser: the member's value; "" leaves it out
		field, reason string // a reject's; "" for a row
	}{
		{"none", "", "", ""},
		{"null", "null", "", ""},
		{"good", good, "", ""},
		{"externalId that is the userId", `{"externalId":"u1","primaryConnection":{"name":"crm","credentials":{},"variables":[]}}`, "", ""},
		{"externalId of someone else", `{"externalId":"u2","primaryConnection":{"name":"crm","credentials":{},"variables":[]}}`, "endUser.externalId", "must be the row's userId"},
		{"not an object", `"ada"`, "endUser", "must be an object"},
		{"unknown member", `{"displayname":"Ada"}`, "endUser.displayname", "did you mean displayName?"},
		{"member twice", `{"displayName":"a","displayName":"b"}`, "endUser.displayName", "appears more than once"},
		{"no primaryConnection", `{"displayName":"Ada"}`, "endUser.primaryConnection", "is required"},
		{"no name", pc(`"credentials":{},"variables":[]`), "endUser.primaryConnection.name", "is required"},
		{"empty name", pc(`"name":"","credentials":{},"variables":[]`), "endUser.primaryConnection.name", "is required"},
		{"no credentials", pc(`"name":"crm","variables":[]`), "endUser.primaryConnection.credentials", "is required"},
		{"credentials not an object", pc(`"name":"crm","credentials":[],"variables":[]`), "endUser.primaryConnection.credentials", "must be a JSON object"},
		{"no variables", pc(`"name":"crm","credentials":{}`), "endUser.primaryConnection.variables", "is required"},
		{"unnamed variable", pc(`"name":"crm","credentials":{},"variables":[{"value":"x"}]`), "endUser.primaryConnection.variables[0].name", "is required"},
		{"unknown connection member", pc(`"name":"crm","credentials":{},"variables":[],"templateId":"x"`), "endUser.primaryConnection.templateId", "known: name, credentials, variables"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rest string
			if tt.endUser != "" {
				rest = bad(tt.endUser)
			}
			jsonl := jline("u0", testutil.IntegrationID, "") + "\n" + jline("u1", testutil.IntegrationID, rest) + "\n" + jline("u2", testutil.IntegrationID, "") + "\n"
			cell := ""
			if tt.endUser != "" {
				cell = `"` + strings.ReplaceAll(tt.endUser, `"`, `""`) + `"`
			}
			csv := "userId,integrationId,endUser\nu0," + testutil.IntegrationID + ",\nu1," + testutil.IntegrationID + "," + cell + "\nu2," + testutil.IntegrationID + ",\n"
			for _, in := range []struct {
				f     Format
				input string
				line  int
			}{{JSONL, jsonl, 2}, {CSV, csv, 3}} {
				rows, rejects, _, err := readAll(t, in.f, in.input)
				if err != nil {
					t.Fatalf("%s: %v", in.f, err)
				}
				if tt.reason != "" {
					if len(rejects) != 1 || len(rows) != 2 {
						t.Fatalf("%s: %d rows and rejects %+v, want 2 rows and 1 reject", in.f, len(rows), rejects)
					}
					rj := rejects[0]
					if rj.Line != in.line || rj.Field != tt.field || !strings.Contains(rj.Reason, tt.reason) {
						t.Errorf("%s: reject %+v, want line %d field %q reason containing %q", in.f, *rj, in.line, tt.field, tt.reason)
					}
					if strings.Contains(rj.Reason, "s3cret") {
						t.Errorf("%s: reason quotes the credentials: %q", in.f, rj.Reason)
					}
					continue
				}
				if len(rejects) != 0 || len(rows) != 3 {
					t.Fatalf("%s: %d rows, rejects %+v; want 3 rows", in.f, len(rows), rejects)
				}
				got := rows[1].EndUser
				if tt.endUser == "" || tt.endUser == "null" {
					if got != nil {
						t.Errorf("%s: EndUser %+v, want none", in.f, got)
					}
					continue
				}
				if got == nil || got.PrimaryConnection == nil || got.PrimaryConnection.Name != "crm" {
					t.Fatalf("%s: EndUser %+v, want the row's", in.f, got)
				}
				if tt.endUser == good {
					b, _ := json.Marshal(got)
					if string(b) != good {
						t.Errorf("%s: EndUser %s, want %s", in.f, b, good)
					}
				}
				if rows[0].EndUser != nil || rows[2].EndUser != nil {
					t.Errorf("%s: rows without endUser got one", in.f)
				}
			}
		})
	}
}
