package enqueuecmd_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/versori/activator/internal/cmd/enqueuecmd"
	"github.com/versori/activator/internal/deadletter"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

// endUserSecret is the credential value these tests look for wherever it must not be.
const endUserSecret = "END-USER-THIRD-PARTY-SECRET"

// secretRequest gives its new connection the credential endUserSecret.
func secretRequest(user string) versori.ActivationRequest {
	req := fullRequest(user)
	req.Connections[1].Credentials = json.RawMessage(`{"apiKey":"` + endUserSecret + `-` + user + `"}`)
	return req
}

// TestDLQExportWithholdsCredentials: dlq list (text and --json) and dlq export show no credential,
// sealed or plaintext, unless --show-secrets; what export writes requeues with requeue --file, and
// the jobs it queues hold each dead letter's own credentials, sealed.
func TestDLQExportWithholdsCredentials(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	plain := secretRequest("u-plain")
	addDeadLetter(t, db, plain, tasks.ReasonMissingConnections) // as an older release stored it
	sealed := secretRequest("u-sealed")
	keys, err := tasks.ParseKeyring(testKeys)
	if err != nil {
		t.Fatal(err)
	}
	p := tasks.Payload{Request: sealed}
	if err := p.Seal(keys); err != nil {
		t.Fatal(err)
	}
	addDeadLetter(t, db, p.Request, tasks.ReasonNotFound, func(e *deadletter.Entry) { e.Secrets = p.Secrets })

	for _, args := range [][]string{{"dlq", "list"}, {"dlq", "list", "--json"}, {"dlq", "export"}} {
		r := runDB(t, db, "", args...)
		if r.code != enqueuecmd.ExitOK || strings.Contains(r.stdout+r.stderr, endUserSecret) {
			t.Errorf("%s: exit %d, or shows a credential:\n%s", strings.Join(args, " "), r.code, r)
		}
		if args[len(args)-1] != "list" && !strings.Contains(r.stdout, "withheld") {
			t.Errorf("%s does not say the credentials are withheld:\n%s", strings.Join(args, " "), r)
		}
	}
	for _, args := range [][]string{{"dlq", "list", "--json", "--show-secrets"}, {"dlq", "export", "--show-secrets"}} {
		r := runDB(t, db, "", args...)
		if r.code != enqueuecmd.ExitOK || !strings.Contains(r.stdout, endUserSecret+"-u-plain") || !strings.Contains(r.stdout, endUserSecret+"-u-sealed") {
			t.Errorf("%s: want both dead letters' credentials:\n%s", strings.Join(args, " "), r)
		}
	}

	r := runDB(t, db, "", "dlq", "export")
	path := filepath.Join(t.TempDir(), "fixed.jsonl")
	if err := os.WriteFile(path, []byte(r.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	r = runDB(t, db, "", "dlq", "requeue", "--file", path)
	if r.code != enqueuecmd.ExitOK || !strings.Contains(r.stdout, "requeued: 2") {
		t.Fatalf("requeue --file of the export: want exit 0, 2 requeued:\n%s", r)
	}
	for _, req := range []versori.ActivationRequest{plain, sealed} {
		got, _ := payload(t, db, queue, id(req)) // fails on plaintext credentials, then opens them
		sameRequest(t, got.Request, req)
	}
}

// TestCredentialsRefusedWithoutKey: without ACTIVATOR_ENCRYPTION_KEYS, enqueue file sends a row
// with credentials to the rejects file (line and reason naming the setting) and queues the rest;
// ALLOW_PLAINTEXT_CREDENTIALS=true queues it in plain text; with a key it is queued sealed.
func TestCredentialsRefusedWithoutKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		vars          map[string]string
		code          int
		queued        int
		plaintextOnly bool // the row with credentials is queued unsealed
	}{
		{"no key", map[string]string{}, enqueuecmd.ExitRejected, 1, false},
		{"opt-out", map[string]string{tasks.AllowPlaintextVar: "true"}, enqueuecmd.ExitOK, 2, true},
		{"key", map[string]string{tasks.EncryptionKeysVar: testKeys}, enqueuecmd.ExitOK, 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := testutil.Redis(t)
			dir := t.TempDir()
			in := testutil.WriteJSONL(t, filepath.Join(dir, "in.jsonl"), request("u-none"), secretRequest("u-creds"))
			tt.vars["REDIS_URL"] = db.URL()
			r := run(t, tt.vars, "", "file", in, "--quiet")
			if r.code != tt.code {
				t.Fatalf("want exit %d:\n%s", tt.code, r)
			}
			counts(t, r, tt.queued, 0, 0, 2-tt.queued)
			if strings.Contains(r.stdout+r.stderr, endUserSecret) {
				t.Errorf("the output shows a credential:\n%s", r)
			}
			if tt.queued == 1 {
				rej := readRejects(t, in+".rejects.jsonl")
				if len(rej) != 1 || rej[0].Line != 2 || rej[0].Field != "connections[1].credentials" ||
					!strings.Contains(rej[0].Reason, tasks.EncryptionKeysVar) || !strings.Contains(rej[0].Reason, tasks.AllowPlaintextVar) {
					t.Errorf("rejects = %+v, want line 2, connections[1].credentials, naming both settings", rej)
				}
				return
			}
			info, err := inspector(db).GetTaskInfo(queue, id(secretRequest("u-creds")))
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Contains(string(info.Payload), endUserSecret); got != tt.plaintextOnly {
				t.Errorf("payload holds the credential in plain text: %v, want %v", got, tt.plaintextOnly)
			}
		})
	}
}

// TestEncryptionKeysSetting: a bad keyring stops the command with one line naming the setting and
// the entry, never the key material.
func TestEncryptionKeysSetting(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, keys, want string }{
		{"no colon", "abc", "key 1 has no ':'"},
		{"short key", "a:" + "c2hvcnQ=", `key 1 (id "a") is 5 bytes`},
		{"bad id", "a:" + strings.Split(testKeys, ":")[1] + ",b!:x", "key 2 has an id"},
		{"repeated id", testKeys + "," + testKeys, `key 2 repeats id "t1"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := run(t, map[string]string{tasks.EncryptionKeysVar: tt.keys}, "", "file", "x.jsonl")
			if r.code != enqueuecmd.ExitUsage || !strings.Contains(r.stderr, tasks.EncryptionKeysVar+": "+tt.want) ||
				strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || strings.Contains(r.stderr, "c2hvcnQ") ||
				strings.Contains(r.stderr, strings.Split(testKeys, ":")[1]) {
				t.Errorf("want exit 2 and one line with %q, no key material:\n%s", tt.want, r)
			}
		})
	}
}

// TestReencryptCommand: reencrypt needs keys; after a rotation it reseals what the old key sealed,
// reports the counts, and exits 0 once nothing is left under another key.
func TestReencryptCommand(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	in := testutil.WriteJSONL(t, filepath.Join(t.TempDir(), "in.jsonl"), secretRequest("u-1"), request("u-2"))
	if r := runDB(t, db, "", "file", in, "--quiet"); r.code != enqueuecmd.ExitOK {
		t.Fatalf("file: %s", r)
	}
	newKey := "t2:" + strings.Repeat("A", 43) + "="
	tests := []struct {
		name, keys string
		code       int
		out        string
	}{
		{"no keys", "", enqueuecmd.ExitUsage, ""},
		{"rotated", newKey + "," + testKeys, enqueuecmd.ExitOK, "sealed with key t2: 1 tasks, 0 dead letters\nalready current or without credentials: 1\n"},
		{"again", newKey + "," + testKeys, enqueuecmd.ExitOK, "sealed with key t2: 0 tasks, 0 dead letters\nalready current or without credentials: 2\n"},
	}
	for _, tt := range tests {
		r := run(t, map[string]string{"REDIS_URL": db.URL(), tasks.EncryptionKeysVar: tt.keys}, "", "reencrypt")
		if r.code != tt.code || !strings.HasPrefix(r.stdout, tt.out) {
			t.Errorf("%s: want exit %d and %q:\n%s", tt.name, tt.code, tt.out, r)
		}
	}
	info, err := inspector(db).GetTaskInfo(queue, id(secretRequest("u-1")))
	if err != nil {
		t.Fatal(err)
	}
	p, err := tasks.DecodePayload(info.Payload)
	if err != nil || tasks.SecretKeyID(p.Secrets) != "t2" {
		t.Errorf("payload sealed with %q, %v; want t2", tasks.SecretKeyID(p.Secrets), err)
	}
}

// TestDLQRequeueFileKeepsCredentialsWithTheirConnection: an exported row whose connections an
// operator reordered (or replaced) is rejected, sealed or plaintext, rather than requeued with one
// connection's withheld credentials given to another third party's connection.
func TestDLQRequeueFileKeepsCredentialsWithTheirConnection(t *testing.T) {
	t.Parallel()
	keys, err := tasks.ParseKeyring(testKeys)
	if err != nil {
		t.Fatal(err)
	}
	twoSecrets := func(user string) versori.ActivationRequest {
		req := fullRequest(user)
		req.Connections[0] = versori.ActivationConnection{TemplateID: testutil.TemplateID, Name: "crm",
			Credentials: json.RawMessage(`{"apiKey":"` + endUserSecret + `-crm"}`)}
		return req
	}
	tests := []struct {
		name string
		fix  func(*versori.ActivationRequest)
	}{
		{"swapped", func(r *versori.ActivationRequest) {
			r.Connections[0], r.Connections[1] = r.Connections[1], r.Connections[0]
		}},
		{"template replaced", func(r *versori.ActivationRequest) { r.Connections[0].TemplateID = "01JDZZZZZZZZZZZZZZZZZZZZZZ" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := testutil.Redis(t)
			plain := twoSecrets("u-plain")
			addDeadLetter(t, db, plain, tasks.ReasonMissingConnections)
			p := tasks.Payload{Request: twoSecrets("u-sealed")}
			if err := p.Seal(keys); err != nil {
				t.Fatal(err)
			}
			addDeadLetter(t, db, p.Request, tasks.ReasonNotFound, func(e *deadletter.Entry) { e.Secrets = p.Secrets })

			r := runDB(t, db, "", "dlq", "export")
			var lines []string
			for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
				var req versori.ActivationRequest
				if err := json.Unmarshal([]byte(l), &req); err != nil {
					t.Fatalf("export line %q: %v", l, err)
				}
				tt.fix(&req)
				b, err := json.Marshal(req)
				if err != nil {
					t.Fatal(err)
				}
				lines = append(lines, string(b))
			}
			path := filepath.Join(t.TempDir(), "fixed.jsonl")
			if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			r = runDB(t, db, "", "dlq", "requeue", "--file", path)
			if r.code != enqueuecmd.ExitRejected || !strings.Contains(r.stdout, "requeued: 0") {
				t.Errorf("requeue --file of reordered rows: want exit 1, none requeued:\n%s", r)
			}
			rej := readRejects(t, path+".rejects.jsonl")
			if len(rej) != 2 || rej[0].Field != "connections[0].credentials" || rej[1].Field != "connections[0].credentials" {
				t.Errorf("rejects = %+v, want both rows, on connections[0].credentials", rej)
			}
		})
	}
}

// TestRejectsFileIsPrivate: a rejects file quotes its rows whole, credentials included (a row
// refused for want of a key holds them in plain text), so only its owner may read it, even when it
// replaces a world-readable one an earlier run left.
func TestRejectsFileIsPrivate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		leftover bool
	}{
		{"new", false},
		{"replaces a world-readable one", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := testutil.Redis(t)
			in := testutil.WriteJSONL(t, filepath.Join(t.TempDir(), "in.jsonl"), secretRequest("u-creds"))
			if err := os.Chmod(in, 0o600); err != nil {
				t.Fatal(err)
			}
			rejects := in + ".rejects.jsonl"
			if tt.leftover {
				if err := os.WriteFile(rejects, []byte(`{"line":1,"reason":"x","raw":"{}"}`+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(rejects, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			r := run(t, map[string]string{"REDIS_URL": db.URL()}, "", "file", in, "--quiet")
			if r.code != enqueuecmd.ExitRejected {
				t.Fatalf("want exit 1:\n%s", r)
			}
			b, err := os.ReadFile(rejects)
			if err != nil || !strings.Contains(string(b), endUserSecret) {
				t.Fatalf("rejects file = %q, %v; want the row, credentials included", b, err)
			}
			fi, err := os.Stat(rejects)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm()&0o077 != 0 {
				t.Errorf("rejects file mode = %v, want readable by its owner only", fi.Mode().Perm())
			}
		})
	}
}
