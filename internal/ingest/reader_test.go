package ingest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/versori/activator/internal/testutil"
)

// want is one expected output of a Reader: a row when reason is "", else a reject.
type want struct {
	line   int
	user   string // a row's userId
	field  string // a reject's field
	reason string // a substring of a reject's reason
	json   string // if set, the row's request marshalled
}

func row(line int, user string) want { return want{line: line, user: user} }
func rowJSON(line int, user, js string) want {
	return want{line: line, user: user, json: js}
}
func rej(line int, field, reason string) want { return want{line: line, field: field, reason: reason} }

// readAll reads every output of a Reader of input, checking the Next contract on the way.
func readAll(t testing.TB, f Format, input string, opts ...Option) ([]*Row, []*Reject, []want, error) {
	t.Helper()
	r, err := NewReader(strings.NewReader(input), f, opts...)
	if err != nil {
		return nil, nil, nil, err
	}
	var (
		rows []*Row
		rjs  []*Reject
		got  []want
	)
	for {
		row, rj, err := next(t, r)
		switch {
		case err == io.EOF:
			return rows, rjs, got, nil
		case row != nil:
			rows = append(rows, row)
			got = append(got, want{line: row.Line, user: row.Request.UserID})
		default:
			rjs = append(rjs, rj)
			got = append(got, want{line: rj.Line, field: rj.Field, reason: rj.Reason})
		}
	}
}

// collect returns the outputs of r as wants.
func collect(t testing.TB, r *Reader) []want {
	t.Helper()
	var got []want
	for {
		row, rj, err := next(t, r)
		switch {
		case err == io.EOF:
			return got
		case row != nil:
			got = append(got, want{line: row.Line, user: row.Request.UserID})
		default:
			got = append(got, want{line: rj.Line, field: rj.Field, reason: rj.Reason})
		}
	}
}

// next calls r.Next, failing t unless the result keeps Next's contract and err is nil or io.EOF.
func next(t testing.TB, r *Reader) (*Row, *Reject, error) {
	t.Helper()
	row, rj, err := r.Next()
	switch {
	case err == io.EOF:
		if row != nil || rj != nil {
			t.Fatalf("Next returned a row or reject with io.EOF")
		}
	case err != nil:
		t.Fatalf("Next: unexpected error %v", err)
	case (row == nil) == (rj == nil):
		t.Fatalf("Next returned row %v and reject %v", row, rj)
	}
	return row, rj, err
}

func jline(user, integration, rest string) string {
	s := `{"userId":` + quote(user) + `,"integrationId":` + quote(integration)
	if rest != "" {
		s += "," + rest
	}
	return s + "}"
}

func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

type corpusCase struct {
	name      string
	format    Format
	input     string
	opts      []Option
	headerErr string // substring of NewReader's error
	want      []want
}

func runCorpus(t *testing.T, cases []corpusCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rows, _, got, err := readAll(t, tc.format, tc.input, tc.opts...)
			if tc.headerErr != "" {
				var he *HeaderError
				if err == nil || !errors.As(err, &he) || !strings.Contains(err.Error(), tc.headerErr) {
					t.Fatalf("NewReader error = %v, want a *HeaderError containing %q", err, tc.headerErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewReader: %v", err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d outputs, want %d:\n got %s\nwant %s", len(got), len(tc.want), fmtWants(got), fmtWants(tc.want))
			}
			ri := 0
			for i, w := range tc.want {
				g := got[i]
				ok := g.line == w.line
				if w.reason == "" {
					ok = ok && g.reason == "" && g.user == w.user
				} else {
					ok = ok && g.field == w.field && strings.Contains(g.reason, w.reason)
				}
				if !ok {
					t.Errorf("output %d = %s, want %s", i, fmtWant(g), fmtWant(w))
				}
				if g.reason == "" {
					if w.json != "" && ri < len(rows) {
						b, err := json.Marshal(rows[ri].Request)
						if err != nil || string(b) != w.json {
							t.Errorf("output %d request = %s (%v), want %s", i, b, err, w.json)
						}
					}
					ri++
				}
			}
		})
	}
}

func fmtWant(w want) string {
	if w.reason == "" {
		return fmt.Sprintf("row{line %d, user %q}", w.line, w.user)
	}
	return fmt.Sprintf("reject{line %d, field %q, reason %q}", w.line, w.field, w.reason)
}

func fmtWants(ws []want) string {
	s := make([]string, len(ws))
	for i, w := range ws {
		s[i] = fmtWant(w)
	}
	return "[" + strings.Join(s, ", ") + "]"
}

func TestJSONLCorpus(t *testing.T) { runCorpus(t, jsonlCorpus()) }

// jsonlCorpus is malformed and well-formed JSONL input with the outputs expected of it.
func jsonlCorpus() []corpusCase {
	good := jline("u1", testutil.IntegrationID, "")
	existing := `"connections":[{"templateId":"` + testutil.TemplateID + `","connectionId":"` + testutil.ConnectionID + `"}]`
	return []corpusCase{
		{name: "good", format: JSONL, input: good + "\n" + jline("u2", testutil.IntegrationID, existing) + "\n",
			want: []want{row(1, "u1"), rowJSON(2, "u2", jline("u2", testutil.IntegrationID, existing))}},
		{name: "no final newline", format: JSONL, input: good + "\n" + jline("u2", testutil.IntegrationID, ""),
			want: []want{row(1, "u1"), row(2, "u2")}},
		{name: "bad JSON", format: JSONL, input: `{"userId":"u1",,}` + "\n" + good,
			want: []want{rej(1, "", "invalid JSON at byte 16: invalid character ','"), row(2, "u1")}},
		{name: "truncated JSON", format: JSONL, input: `{"userId":"u1"`,
			want: []want{rej(1, "", "invalid JSON: unexpected end of input")}},
		{name: "not JSON at all", format: JSONL, input: "userId,integrationId\n",
			want: []want{rej(1, "", "invalid JSON at byte 1")}},
		{name: "missing userId", format: JSONL, input: `{"integrationId":"` + testutil.IntegrationID + `"}`,
			want: []want{rej(1, "userId", "is required")}},
		{name: "userId with a space", format: JSONL, input: jline("u 1", testutil.IntegrationID, ""),
			want: []want{rej(1, "userId", "whitespace")}},
		{name: "missing integrationId", format: JSONL, input: `{"userId":"u1"}`,
			want: []want{rej(1, "integrationId", "is required")}},
		{name: "integrationId not a ULID", format: JSONL, input: jline("u1", "integration-1", ""),
			want: []want{rej(1, "integrationId", "is not a ULID")}},
		{name: "unknown field", format: JSONL, input: jline("u1", testutil.IntegrationID, `"colour":"red"`),
			want: []want{rej(1, "colour", "is not a known field (known: userId, integrationId, connections, dynamicVariables, endUser)")}},
		{name: "unknown nested field", format: JSONL,
			input: jline("u1", testutil.IntegrationID, `"connections":[{"templateId":"`+testutil.TemplateID+`","connectionId":"`+testutil.ConnectionID+`"},{"templateId":"`+testutil.OtherTemplateID+`","name":"n","credentials":{},"variables":[{"name":"a","value":"b","secret":true}]}]`),
			want:  []want{rej(1, "connections[1].variables[0].secret", "is not a known field")}},
		{name: "field of the wrong type", format: JSONL,
			input: jline("u1", testutil.IntegrationID, `"connections":[{},{"templateId":5}]`),
			want:  []want{rej(1, "connections[1].templateId", "must be a string, not a number")}},
		{name: "connections not an array", format: JSONL, input: jline("u1", testutil.IntegrationID, `"connections":{}`),
			want: []want{rej(1, "connections", "must be an array, not an object")}},
		{name: "field names are case-sensitive", format: JSONL,
			input: `{"USERID":"u1","integrationId":"` + testutil.IntegrationID + `"}`,
			want:  []want{rej(1, "USERID", "names are case-sensitive (did you mean userId?)")}},
		{name: "a name in another case beside the right one", format: JSONL,
			input: `{"userId":"a","integrationId":"` + testutil.IntegrationID + `","USERID":"b"}`,
			want:  []want{rej(1, "USERID", "names are case-sensitive (did you mean userId?)")}},
		{name: "a repeated name", format: JSONL,
			input: `{"userId":"a","integrationId":"` + testutil.IntegrationID + `","userId":"b"}`,
			want:  []want{rej(1, "userId", "appears more than once")}},
		{name: "a repeated nested name", format: JSONL,
			input: jline("u1", testutil.IntegrationID, `"connections":[{"templateId":"`+testutil.TemplateID+`","connectionId":"`+testutil.ConnectionID+`","connectionId":"`+testutil.ConnectionID+`"}]`),
			want:  []want{rej(1, "connections[0].connectionId", "appears more than once")}},
		{name: "lower-case ULIDs are canonicalized", format: JSONL,
			input: jline("u1", strings.ToLower(testutil.IntegrationID), `"connections":[{"templateId":"`+strings.ToLower(testutil.TemplateID)+`","connectionId":"`+strings.ToLower(testutil.ConnectionID)+`"}]`),
			want: []want{rowJSON(1, "u1", jline("u1", testutil.IntegrationID,
				`"connections":[{"templateId":"`+testutil.TemplateID+`","connectionId":"`+testutil.ConnectionID+`"}]`))}},
		{name: "connection neither form", format: JSONL,
			input: jline("u1", testutil.IntegrationID, `"connections":[{"templateId":"`+testutil.TemplateID+`"}]`),
			want:  []want{rej(1, "connections[0]", "needs either connectionId")}},
		{name: "connection both forms", format: JSONL,
			input: jline("u1", testutil.IntegrationID, `"connections":[{"templateId":"`+testutil.TemplateID+`","connectionId":"`+testutil.ConnectionID+`","name":"n"}]`),
			want:  []want{rej(1, "connections[0]", "use one form")}},
		{name: "connectionId not a ULID", format: JSONL,
			input: jline("u1", testutil.IntegrationID, `"connections":[{"templateId":"`+testutil.TemplateID+`","connectionId":"c1"}]`),
			want:  []want{rej(1, "connections[0].connectionId", "is not a ULID")}},
		{name: "credentials not an object", format: JSONL,
			input: jline("u1", testutil.IntegrationID, `"connections":[{"templateId":"`+testutil.TemplateID+`","name":"n","credentials":"secret"}]`),
			want:  []want{rej(1, "connections[0].credentials", "must be a JSON object")}},
		{name: "new connection", format: JSONL,
			input: jline("u1", testutil.IntegrationID, `"connections":[{"templateId":"`+testutil.TemplateID+`","name":"n","credentials":{"k":"v"}}]`),
			want: []want{rowJSON(1, "u1", jline("u1", testutil.IntegrationID,
				`"connections":[{"templateId":"`+testutil.TemplateID+`","name":"n","credentials":{"k":"v"},"variables":[]}]`))}},
		{name: "dynamicVariables not an object", format: JSONL, input: jline("u1", testutil.IntegrationID, `"dynamicVariables":[1]`),
			want: []want{rej(1, "dynamicVariables", "must be a JSON object")}},
		{name: "dynamicVariables null", format: JSONL, input: jline("u1", testutil.IntegrationID, `"dynamicVariables":null`),
			want: []want{rowJSON(1, "u1", jline("u1", testutil.IntegrationID, `"connections":[]`))}},
		{name: "row null", format: JSONL, input: "null\n",
			want: []want{rej(1, "", "must be a JSON object, not null")}},
		{name: "row an array", format: JSONL, input: "[" + good + "]\n",
			want: []want{rej(1, "", "must be an object, not an array")}},
		{name: "non-UTF-8", format: JSONL, input: `{"userId":"u` + "\xff" + `1","integrationId":"` + testutil.IntegrationID + `"}` + "\n" + good,
			want: []want{rej(1, "", "not valid UTF-8"), row(2, "u1")}},
		{name: "over-long line", format: JSONL, opts: []Option{MaxLineBytes(len(good))},
			input: good + "\n" + jline("u12", testutil.IntegrationID, "") + "\n" + good + "\r\n" + strings.Repeat("x", 1000) + "\n" + good,
			want:  []want{row(1, "u1"), rej(2, "", fmt.Sprintf("line longer than %d bytes", len(good))), row(3, "u1"), rej(4, "", "line longer"), row(5, "u1")}},
		{name: "over-long last line", format: JSONL, opts: []Option{MaxLineBytes(10)},
			input: strings.Repeat("y", 100),
			want:  []want{rej(1, "", "line longer than 10 bytes")}},
		{name: "over-long blank line", format: JSONL, opts: []Option{MaxLineBytes(10)},
			input: strings.Repeat(" ", 100) + "\n" + good,
			want:  []want{rej(2, "", "line longer than 10 bytes")}},
		{name: "trailing garbage", format: JSONL, input: good + " x\n" + good + " " + good + "\n" + good + " \t\r\n",
			want: []want{rej(1, "", "unexpected data after the JSON value at byte"), rej(2, "", "unexpected data"), row(3, "u1")}},
		{name: "blank lines skipped", format: JSONL, input: "\n  \n" + good + "\n\t\r\n\n" + good + "\n\n",
			want: []want{row(3, "u1"), row(6, "u1")}},
		{name: "CRLF", format: JSONL, input: good + "\r\n\r\n" + good + "\r\n",
			want: []want{row(1, "u1"), row(3, "u1")}},
		{name: "BOM", format: JSONL, input: "\xEF\xBB\xBF" + good + "\n" + good,
			want: []want{row(1, "u1"), row(2, "u1")}},
		{name: "empty", format: JSONL, input: ""},
	}
}
