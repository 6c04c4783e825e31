package enqueuecmd_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/versori/activator/internal/batch"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

// endUserMember is an endUser member of a row, whose primary connection has credentials.
const endUserMember = `"endUser":{"displayName":"Ada","primaryConnection":{"name":"crm","credentials":{"action":[{"apiKey":"s3cret"}]},"variables":[]}}`

// withEndUser is req's JSONL line with endUserMember.
func withEndUser(t *testing.T, req versori.ActivationRequest) string {
	line := jsonLine(t, req)
	return line[:len(line)-1] + "," + endUserMember + "}"
}

// TestFileOperations runs one onboarding file (JSONL and CSV, a row with endUser) through `enqueue
// file`, `enqueue deactivate` and `enqueue file --update-variables`, as the command functions: each
// run's jobs have their operation and their place in the pair's order, a repeated run is all
// duplicates, activate → deactivate → activate gives three jobs of rising seq, and `enqueue status`
// says what each batch does.
func TestFileOperations(t *testing.T) {
	t.Parallel()
	for _, format := range []string{"jsonl", "csv"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			db := testutil.Redis(t)
			// Every row has dynamic variables: an update without them is refused (TestUpdateNeedsVariables).
			plan := json.RawMessage(`{"plan":"pro"}`)
			reqs := []versori.ActivationRequest{fullRequest("u-1"), request("u-2"), request("u-3")}
			reqs[1].DynamicVariables, reqs[2].DynamicVariables = plan, plan
			var content string
			if format == "jsonl" {
				content = withEndUser(t, reqs[0]) + "\n" + jsonLine(t, reqs[1]) + "\n" + jsonLine(t, reqs[2]) + "\n"
			} else {
				cell := `"{""displayName"":""Ada"",""primaryConnection"":{""name"":""crm"",""credentials"":{""action"":[]},""variables"":[]}}"`
				content = "userId,integrationId,endUser,var.plan\n" +
					"u-1," + testutil.IntegrationID + "," + cell + ",pro\n" +
					"u-2," + testutil.IntegrationID + ",,pro\n" +
					"u-3," + testutil.IntegrationID + ",,pro\n"
				reqs[0] = request("u-1")
				reqs[0].DynamicVariables = plan
			}
			path := testutil.WriteFile(t, "rows."+format, content)
			runs := []struct {
				args      []string
				enqueued  int
				duplicate int
				op        tasks.Op
				seq       int64
				status    string // a line `enqueue status` prints for the run's batch
			}{
				{[]string{"file", path}, 3, 0, tasks.OpActivate, 0, "queued: 3\n"},
				{[]string{"file", path}, 0, 3, tasks.OpActivate, 0, ""},
				{[]string{"deactivate", path}, 3, 0, tasks.OpDeactivate, 1, "queued: 3 (deactivate 3)\nactivated: 0\nalready active: 0\ndeactivated: 0\nalready inactive: 0\nsuperseded: 0\n"},
				{[]string{"deactivate", path}, 0, 3, tasks.OpDeactivate, 1, ""},
				{[]string{"file", path}, 3, 0, tasks.OpActivate, 2, "queued: 3\n"},
				{[]string{"file", "--update-variables", path}, 3, 0, tasks.OpUpdate, 3, "queued: 3 (update 3)\n"},
			}
			for i, r := range runs {
				res := runDB(t, db, "", r.args...)
				if res.code != 0 {
					t.Fatalf("run %d %v: exit %d\n%s", i, r.args, res.code, res)
				}
				m := counts(t, res, r.enqueued, r.duplicate, 0, 0)
				for j, req := range reqs {
					pl, _ := payload(t, db, queue, tasks.TaskIDAt(req.Pair(), r.seq))
					if pl.Op != r.op || pl.Seq != r.seq {
						t.Errorf("run %d %v, row %d: payload op %q seq %d, want %q %d", i, r.args, j, pl.Op, pl.Seq, r.op, r.seq)
					}
					switch {
					case r.op == tasks.OpDeactivate:
						if pl.EndUser != nil || len(pl.Request.Connections) != 0 || pl.Request.DynamicVariables != nil {
							t.Errorf("run %d, row %d: a deactivation holds %+v, end user %+v", i, j, pl.Request, pl.EndUser)
						}
					case r.enqueued > 0:
						sameRequest(t, pl.Request, reqs[j])
						if (pl.EndUser != nil) != (j == 0) || j == 0 && pl.EndUser.DisplayName != "Ada" {
							t.Errorf("run %d, row %d: end user %+v", i, j, pl.EndUser)
						}
					}
				}
				if r.status == "" {
					continue
				}
				st := runDB(t, db, "", "status", m["batch"])
				if st.code != 0 || !strings.Contains(st.stdout, r.status) {
					t.Errorf("run %d: status of its batch lacks %q:\n%s", i, r.status, st)
				}
			}
		})
	}
}

// TestDeactivateFile: `enqueue deactivate` takes the onboarding file as it is (credentials need no
// key, since a deactivation stores none), refuses rows with unknown fields or a bad pair to the
// rejects file and runs the rest (exit 1), and counts its batch's workers' results.
func TestDeactivateFile(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	good := []versori.ActivationRequest{fullRequest("u-1"), request("u-2")}
	content := withEndUser(t, good[0]) + "\n" +
		`{"userId":"u-3","integrationId":"` + testutil.IntegrationID + `","colour":"red"}` + "\n" +
		`{"userId":"u-4","integrationId":"not-a-ulid"}` + "\n" +
		jsonLine(t, good[1]) + "\n"
	path := testutil.WriteFile(t, "rows.jsonl", content)
	// No keys, no plaintext: the credentials of u-1's row are dropped, not refused.
	res := run(t, map[string]string{"REDIS_URL": db.URL()}, "", "deactivate", path)
	if res.code != 1 {
		t.Fatalf("exit %d, want 1 (rows rejected)\n%s", res.code, res)
	}
	m := counts(t, res, 2, 0, 0, 2)
	rejects := readRejects(t, path+".rejects.jsonl")
	if len(rejects) != 2 || rejects[0].Line != 2 || rejects[0].Field != "colour" || rejects[1].Line != 3 || rejects[1].Field != "integrationId" {
		t.Errorf("rejects %+v, want line 2 colour and line 3 integrationId", rejects)
	}
	for _, req := range good {
		if pl, _ := payload(t, db, queue, tasks.TaskIDAt(req.Pair(), 1)); pl.Op != tasks.OpDeactivate {
			t.Errorf("%s: op %q, want deactivate", req.UserID, pl.Op)
		}
	}
	// The workers' counts, as they flush them.
	if err := batch.Write(context.Background(), db.Client, queue, map[string]map[string]int64{m["batch"]: {
		batch.FieldDeactivated: 1, batch.FieldAlreadyInactive: 1}}); err != nil {
		t.Fatal(err)
	}
	st := runDB(t, db, "", "status", m["batch"])
	if want := "batch " + m["batch"] + ": done\nqueued: 2 (deactivate 2)\nactivated: 0\nalready active: 0\ndeactivated: 1\nalready inactive: 1\nsuperseded: 0\nretries: 0\n"; st.code != 0 || !strings.HasPrefix(st.stdout, want) {
		t.Errorf("status, want it to start\n%s\ngot\n%s", want, st)
	}
}

// TestLifecycleUsage: the new verb and flag are held to the usage rules of `enqueue file`.
func TestLifecycleUsage(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"deactivate"}, "enqueue: deactivate takes one PATH\n"},
		{[]string{"deactivate", "a.jsonl", "b.jsonl"}, "enqueue: deactivate takes one PATH\n"},
		{[]string{"deactivate", "--update-variables", "a.jsonl"}, "enqueue: flag provided but not defined: -update-variables; see enqueue deactivate -h\n"},
		{[]string{"deactivate", "--reconcile", "a.jsonl"}, "enqueue: flag provided but not defined: -reconcile; see enqueue deactivate -h\n"},
		{[]string{"file", "--update-variables"}, "enqueue: file takes one PATH\n"},
		// An update always looks its pair up first: --reconcile would do nothing, and saying so
		// beats an operator believing it changed something, as deactivate refuses it.
		{[]string{"file", "--update-variables", "--reconcile", "a.jsonl"}, "enqueue: --reconcile does nothing with --update-variables: an update always looks its pair up first; see enqueue file -h\n"},
		{[]string{"deactivate", "rows.txt"}, "enqueue: cannot tell the format of \"rows.txt\" from its name (not .jsonl, .ndjson or .csv): pass --format jsonl or --format csv\n"},
	} {
		res := run(t, nil, "", tt.args...)
		if res.code != 2 || res.stderr != tt.want || res.stdout != "" {
			t.Errorf("%v: want exit 2 and stderr %q:\n%s", tt.args, tt.want, res)
		}
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"deactivate", "-h"}, "usage: enqueue deactivate PATH [flags]\n"},
		{[]string{"file", "-h"}, "  -update-variables\n"},
		{[]string{"--help"}, "  enqueue deactivate PATH [flags]"},
	} {
		res := run(t, nil, "", tt.args...)
		if res.code != 0 || !strings.Contains(res.stdout, tt.want) {
			t.Errorf("%v: want exit 0 and stdout with %q:\n%s", tt.args, tt.want, res)
		}
	}
}

// TestFileRejectsBadEndUsers: a row whose endUser is bad goes to the rejects file naming its line
// and field, and the rest of the file runs (exit 1); the reject quotes the row but the reason never
// quotes its credentials.
func TestFileRejectsBadEndUsers(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ok := request("u-1")
	line := func(user, end string) string {
		l := jsonLine(t, request(user))
		return l[:len(l)-1] + `,"endUser":` + end + "}"
	}
	content := withEndUser(t, ok) + "\n" +
		line("u-2", `{"primaryConnection":{"credentials":{"k":"s3cret"},"variables":[]}}`) + "\n" +
		line("u-3", `{"displayName":"Ada","primaryConnection":{"name":"crm","credentials":{"k":"s3cret"}}}`) + "\n" +
		line("u-4", `{"externalId":"u-5","primaryConnection":{"name":"crm","credentials":{},"variables":[]}}`) + "\n" +
		line("u-6", `{"primaryConnection":{"name":"crm","credentials":{},"variables":[]},"colour":1}`) + "\n"
	path := testutil.WriteFile(t, "rows.jsonl", content)
	res := runDB(t, db, "", "file", path)
	if res.code != 1 {
		t.Fatalf("exit %d, want 1\n%s", res.code, res)
	}
	counts(t, res, 1, 0, 0, 4)
	want := []struct {
		line  int
		field string
	}{{2, "endUser.primaryConnection.name"}, {3, "endUser.primaryConnection.variables"}, {4, "endUser.externalId"}, {5, "endUser.colour"}}
	got := readRejects(t, path+".rejects.jsonl")
	if len(got) != len(want) {
		t.Fatalf("rejects %+v, want %v", got, want)
	}
	for i, w := range want {
		if got[i].Line != w.line || got[i].Field != w.field || strings.Contains(got[i].Reason, "s3cret") {
			t.Errorf("reject %d: %+v, want line %d field %s", i, got[i], w.line, w.field)
		}
	}
	if pl, _ := payload(t, db, queue, tasks.TaskID(ok.Pair())); pl.EndUser == nil {
		t.Error("the good row's job has no end user")
	}
}

// TestUpdateNeedsVariables: an update row without dynamicVariables (absent, null, or CSV var. cells
// all empty) goes to the rejects file naming the field, since it would clear the pair's variables;
// an explicit {} is taken, and the rest of the file runs.
func TestUpdateNeedsVariables(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	withVars := request("u-1")
	withVars.DynamicVariables = json.RawMessage(`{"plan":"pro"}`)
	cleared := request("u-2")
	cleared.DynamicVariables = json.RawMessage(`{}`)
	content := jsonLine(t, withVars) + "\n" + jsonLine(t, cleared) + "\n" + jsonLine(t, request("u-3")) + "\n" +
		`{"userId":"u-4","integrationId":"` + testutil.IntegrationID + `","connections":[],"dynamicVariables":null}` + "\n"
	path := testutil.WriteFile(t, "rows.jsonl", content)
	res := runDB(t, db, "", "file", "--update-variables", path)
	if res.code != 1 {
		t.Fatalf("exit %d, want 1 (rows rejected)\n%s", res.code, res)
	}
	counts(t, res, 2, 0, 0, 2)
	rejects := readRejects(t, path+".rejects.jsonl")
	if len(rejects) != 2 || rejects[0].Line != 3 || rejects[1].Line != 4 {
		t.Fatalf("rejects %+v, want lines 3 and 4", rejects)
	}
	for _, r := range rejects {
		if r.Field != "dynamicVariables" || !strings.Contains(r.Reason, "{}") {
			t.Errorf("reject %+v: want the field dynamicVariables and how to clear them", r)
		}
	}
	// The same file as activations: variables are optional there.
	if res := runDB(t, db, "", "file", path); res.code != 0 {
		t.Errorf("as activations: exit %d\n%s", res.code, res)
	}
}
