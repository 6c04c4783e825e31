package tasks_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/versori/activator/tasks"
)

// FuzzOpenRedact: whatever a payload in Redis holds (altered by hand, by a bug, or by someone with
// write access), opening its secrets and redacting it for display do not panic, and a display shows
// no credential the payload's request held.
func FuzzOpenRedact(f *testing.F) {
	keys := ring(f, key("a", 1))
	p := tasks.Payload{Request: secretReq("u-1")}
	if err := p.Seal(keys); err != nil {
		f.Fatal(err)
	}
	sealed, err := tasks.NewTask(p)
	if err != nil {
		f.Fatal(err)
	}
	plain, err := tasks.NewTask(tasks.Payload{Request: secretReq("u-2")})
	if err != nil {
		f.Fatal(err)
	}
	withUser := tasks.Payload{Request: secretReq("u-3"), EndUser: endUser(), Op: tasks.OpUpdate, Seq: 2}
	if err := withUser.Seal(keys); err != nil {
		f.Fatal(err)
	}
	sealedUser, err := tasks.NewTask(withUser)
	if err != nil {
		f.Fatal(err)
	}
	plainUser, err := tasks.NewTask(tasks.Payload{Request: secretReq("u-4"), EndUser: endUser()})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed.Payload())
	f.Add(plain.Payload())
	f.Add(sealedUser.Payload())
	f.Add(plainUser.Payload())
	f.Add([]byte(`{"request":{"userId":"u","integrationId":"01JDCRM0000000000000000000"},"endUser":{"primaryConnection":{"credentials":{"$activator":"withheld"}}},"secrets":"a:AAAA"}`))
	f.Add([]byte(`{"request":{},"endUser":{"primaryConnection":null}}`))
	f.Add([]byte(`{"request":{},"endUser":{"primaryConnection":{"credentials":"x"}},"secrets":5}`))
	f.Add([]byte(`{"request":{"userId":"u","integrationId":"01JDCRM0000000000000000000","connections":[{"credentials":{"$activator":"withheld"}}]},"secrets":"a:AAAA"}`))
	f.Add([]byte(`{"request":{"connections":[null,{"credentials":"x"}]},"secrets":5}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if q, err := tasks.DecodePayload(b); err == nil {
			_ = q.Open(keys)
			_, _ = q.Reseal(keys)
		}
		out, ok := tasks.RedactPayload(b)
		if !ok {
			return
		}
		var shown struct {
			Request struct {
				Connections []struct {
					Credentials json.RawMessage `json:"credentials"`
				} `json:"connections"`
			} `json:"request"`
			EndUser struct {
				PrimaryConnection struct {
					Credentials json.RawMessage `json:"credentials"`
				} `json:"primaryConnection"`
			} `json:"endUser"`
		}
		if json.Unmarshal(out, &shown) != nil {
			t.Fatalf("RedactPayload(%q) = %q, not JSON", b, out)
		}
		for _, c := range shown.Request.Connections {
			if len(c.Credentials) > 0 && !tasks.IsWithheld(c.Credentials) {
				t.Fatalf("RedactPayload(%q) shows credentials %s", b, c.Credentials)
			}
		}
		if c := shown.EndUser.PrimaryConnection.Credentials; len(c) > 0 && !tasks.IsWithheld(c) {
			t.Fatalf("RedactPayload(%q) shows the end user's credentials %s", b, c)
		}
		if strings.Contains(string(out), primarySecret) && !strings.Contains(string(b), `"PRIMARY`) {
			t.Fatalf("RedactPayload(%q) = %q", b, out)
		}
		if strings.Contains(string(out), "END-USER-THIRD-PARTY-SECRET") && !strings.Contains(string(b), `"END-USER`) {
			t.Fatalf("RedactPayload(%q) = %q", b, out)
		}
	})
}
