package ingest

import (
	"strings"
	"testing"

	"github.com/versori/activator/internal/testutil"
)

func TestCSVCorpus(t *testing.T) { runCorpus(t, csvCorpus()) }

// csvCorpus is malformed and well-formed CSV input with the outputs or header error expected of it.
func csvCorpus() []corpusCase {
	const hdr = "userId,integrationId\n"
	good := "u1," + testutil.IntegrationID
	existing := `{"templateId":"` + testutil.TemplateID + `","connectionId":"` + testutil.ConnectionID + `"}`
	return []corpusCase{
		// Header errors.
		{name: "unknown column", format: CSV, input: "userId,integrationId,colour\n",
			headerErr: `column "colour": unknown column; the known columns are userId, integrationId, connections, templateId, connectionId, dynamicVariables, endUser, var.NAME`},
		{name: "column names are case-sensitive", format: CSV, input: "userid,integrationId\n", headerErr: `column "userid": unknown column`},
		{name: "var. without a name", format: CSV, input: "userId,integrationId,var.\n", headerErr: `column "var.": unknown column`},
		{name: "duplicate column", format: CSV, input: "userId,integrationId, userId\n", headerErr: `column "userId": appears more than once`},
		{name: "duplicate var column", format: CSV, input: "userId,integrationId,var.a,var.a\n", headerErr: `column "var.a": appears more than once`},
		{name: "missing userId column", format: CSV, input: "integrationId\n", headerErr: `column "userId": required column is missing`},
		{name: "missing integrationId column", format: CSV, input: "userId\n", headerErr: `column "integrationId": required column is missing`},
		{name: "templateId without connectionId", format: CSV, input: "userId,integrationId,templateId\n", headerErr: `column "templateId": needs a connectionId column`},
		{name: "connectionId without templateId", format: CSV, input: "userId,integrationId,connectionId\n", headerErr: `column "connectionId": needs a templateId column`},
		{name: "unnamed column", format: CSV, input: "userId,integrationId,\n", headerErr: "column 3 has no name"},
		{name: "empty input", format: CSV, input: "\n \n", headerErr: "the input is empty"},
		{name: "bad header quoting", format: CSV, input: "userId,\"integrationId\"x\n", headerErr: `(line 1): bad CSV at line 1, column`},
		{name: "header not UTF-8", format: CSV, input: "userId,integrationId\xff\n", headerErr: "not valid UTF-8"},
		{name: "header too long", format: CSV, opts: []Option{MaxLineBytes(10)}, input: hdr, headerErr: "line longer than 10 bytes"},

		// Header forms.
		{name: "BOM, spaces and blank lines before the header", format: CSV,
			input: "\xEF\xBB\xBF\n userId , integrationId \n" + good + "\n",
			want:  []want{row(3, "u1")}},
		{name: "columns in any order", format: CSV, input: "integrationId,userId\n" + testutil.IntegrationID + ",u1\n",
			want: []want{row(2, "u1")}},

		// Rows.
		{name: "good", format: CSV, input: hdr + good + "\n" + "u2," + testutil.IntegrationID,
			want: []want{rowJSON(2, "u1", jline("u1", testutil.IntegrationID, `"connections":[]`)), row(3, "u2")}},
		{name: "missing userId", format: CSV, input: hdr + "," + testutil.IntegrationID + "\n",
			want: []want{rej(2, "userId", "is required")}},
		{name: "missing integrationId", format: CSV, input: hdr + "u1,\n",
			want: []want{rej(2, "integrationId", "is required")}},
		{name: "integrationId not a ULID", format: CSV, input: hdr + "u1,i-1\n",
			want: []want{rej(2, "integrationId", "is not a ULID")}},
		{name: "cells are not trimmed", format: CSV, input: hdr + " u1," + testutil.IntegrationID + "\n",
			want: []want{rej(2, "userId", "whitespace")}},
		{name: "wrong field count", format: CSV, input: hdr + good + ",extra\n" + "u1\n" + good + "\n",
			want: []want{rej(2, "", "wrong number of fields: expected 2 (one per header column), got 3"), rej(3, "", "expected 2"), row(4, "u1")}},
		{name: "bad quoting", format: CSV,
			input: hdr + `u1,"` + testutil.IntegrationID + `"x` + "\n" + `u"1,` + testutil.IntegrationID + "\n" + good + "\n",
			want:  []want{rej(2, "", `bad CSV at line 2, column 31: extraneous or missing " in quoted-field`), rej(3, "", `bad CSV at line 3, column 2: bare " in non-quoted-field`), row(4, "u1")}},
		{name: "bad quoting on a later line of a record", format: CSV,
			input: hdr + "\"u\n1\"x," + testutil.IntegrationID + "\n" + good + "\n",
			want:  []want{rej(2, "", `bad CSV at line 3, column 2: extraneous or missing "`), row(4, "u1")}},
		{name: "quoted field never closed", format: CSV,
			input: hdr + good + "\n" + `"u2,` + testutil.IntegrationID + "\n" + good + "\n",
			want:  []want{row(2, "u1"), rej(3, "", "quoted field opened on line 3 is never closed")}},
		{name: "quoted fields", format: CSV, input: hdr + `"u1","` + testutil.IntegrationID + `"` + "\n" + `"u""2",` + testutil.IntegrationID + "\n",
			want: []want{row(2, "u1"), row(3, `u"2`)}},
		{name: "multi-line record", format: CSV,
			input: "userId,connections,integrationId\n" + "u1,\"[\n" + strings.ReplaceAll(existing, `"`, `""`) + "\n\n]\"," + testutil.IntegrationID + "\n" + "u2,," + testutil.IntegrationID + "\n",
			want:  []want{rowJSON(2, "u1", jline("u1", testutil.IntegrationID, `"connections":[`+existing+`]`)), row(6, "u2")}},
		{name: "non-UTF-8", format: CSV, input: hdr + "u\xff1," + testutil.IntegrationID + "\n" + good + "\n",
			want: []want{rej(2, "", "not valid UTF-8"), row(3, "u1")}},
		{name: "over-long line", format: CSV, opts: []Option{MaxLineBytes(len(good))},
			input: hdr + good + "\n" + "u2," + testutil.IntegrationID + "," + strings.Repeat("x", 100) + "\n" + good + "\n",
			want:  []want{row(2, "u1"), rej(3, "", "line longer than 29 bytes"), row(4, "u1")}},
		{name: "over-long record", format: CSV, opts: []Option{MaxLineBytes(len(good))},
			input: hdr + "\"u\n" + strings.Repeat("x\n", 20) + "\"," + testutil.IntegrationID + "\n" + good + "\n",
			want:  []want{rej(2, "", "record longer than 29 bytes"), row(24, "u1")}},
		{name: "over-long line inside a record keeps the quote state", format: CSV, opts: []Option{MaxLineBytes(len(good))},
			input: hdr + "\"u\n" + strings.Repeat("x", 100) + "\"\"\n" + "\"," + testutil.IntegrationID + "\n" + good + "\n",
			want:  []want{rej(2, "", "record longer than 29 bytes"), row(5, "u1")}},
		{name: "blank lines skipped", format: CSV, input: hdr + "\n" + good + "\n \t\n\n" + good + "\n\n",
			want: []want{row(3, "u1"), row(6, "u1")}},
		{name: "CRLF", format: CSV, input: "userId,integrationId\r\n" + good + "\r\n\r\n\"u2\"," + testutil.IntegrationID + "\r\n",
			want: []want{row(2, "u1"), row(4, "u2")}},

		// Connections.
		{name: "connections cell", format: CSV, input: "userId,integrationId,connections\n" + good + ",\"[" + strings.ReplaceAll(existing, `"`, `""`) + "]\"\n" + good + ", \n" + good + ",null\n",
			want: []want{rowJSON(2, "u1", jline("u1", testutil.IntegrationID, `"connections":[`+existing+`]`)), rowJSON(3, "u1", jline("u1", testutil.IntegrationID, `"connections":[]`)), row(4, "u1")}},
		{name: "connections cell not JSON", format: CSV, input: "userId,integrationId,connections\n" + good + ",[x]\n",
			want: []want{rej(2, "connections", "invalid JSON at byte 2")}},
		{name: "connections cell not an array", format: CSV, input: "userId,integrationId,connections\n" + good + ",\"" + strings.ReplaceAll(existing, `"`, `""`) + "\"\n",
			want: []want{rej(2, "connections", "must be an array, not an object")}},
		{name: "connections cell unknown field", format: CSV, input: "userId,integrationId,connections\n" + good + `,"[{""templateId"":""` + testutil.TemplateID + `"",""id"":1}]"` + "\n",
			want: []want{rej(2, "connections[0].id", "is not a known field")}},
		{name: "connection neither form", format: CSV, input: "userId,integrationId,connections\n" + good + `,"[{""templateId"":""` + testutil.TemplateID + `""}]"` + "\n",
			want: []want{rej(2, "connections[0]", "needs either connectionId")}},
		{name: "connection both forms", format: CSV, input: "userId,integrationId,connections\n" + good + `,"[{""templateId"":""` + testutil.TemplateID + `"",""connectionId"":""` + testutil.ConnectionID + `"",""credentials"":{}}]"` + "\n",
			want: []want{rej(2, "connections[0]", "use one form")}},
		{name: "credentials not an object", format: CSV, input: "userId,integrationId,connections\n" + good + `,"[{""templateId"":""` + testutil.TemplateID + `"",""name"":""n"",""credentials"":[]}]"` + "\n",
			want: []want{rej(2, "connections[0].credentials", "must be a JSON object")}},
		{name: "templateId and connectionId", format: CSV,
			input: "userId,integrationId,connections,templateId,connectionId\n" +
				good + `,"[{""templateId"":""` + testutil.OtherTemplateID + `"",""name"":""n"",""credentials"":{}}]",` + testutil.TemplateID + "," + testutil.ConnectionID + "\n" +
				good + ",,,\n" +
				good + ",," + testutil.TemplateID + ",\n" +
				good + ",,," + testutil.ConnectionID + "\n" +
				good + ",," + testutil.TemplateID + ",c1\n",
			want: []want{
				rowJSON(2, "u1", jline("u1", testutil.IntegrationID, `"connections":[{"templateId":"`+testutil.OtherTemplateID+`","name":"n","credentials":{},"variables":[]},`+existing+`]`)),
				rowJSON(3, "u1", jline("u1", testutil.IntegrationID, `"connections":[]`)),
				rej(4, "connectionId", "is required when templateId is set"),
				rej(5, "templateId", "is required when connectionId is set"),
				rej(6, "connections[0].connectionId", "is not a ULID"),
			}},
		{name: "template bound twice", format: CSV,
			input: "userId,integrationId,connections,templateId,connectionId\n" +
				good + `,"[` + strings.ReplaceAll(existing, `"`, `""`) + `]",` + testutil.TemplateID + "," + testutil.ConnectionID + "\n",
			want: []want{rej(2, "connections[1].templateId", "is already bound by connections[0]")}},

		// Dynamic variables.
		{name: "dynamicVariables", format: CSV, input: "userId,integrationId,dynamicVariables\n" + good + `,"{""a"": [1]}"` + "\n" + good + ",\n" + good + ",null\n",
			want: []want{rowJSON(2, "u1", jline("u1", testutil.IntegrationID, `"connections":[],"dynamicVariables":{"a":[1]}`)), rowJSON(3, "u1", jline("u1", testutil.IntegrationID, `"connections":[]`)), rowJSON(4, "u1", jline("u1", testutil.IntegrationID, `"connections":[]`))}},
		{name: "dynamicVariables not JSON", format: CSV, input: "userId,integrationId,dynamicVariables\n" + good + ",region=EU\n",
			want: []want{rej(2, "dynamicVariables", "must be a JSON object; invalid JSON at byte 1")}},
		{name: "dynamicVariables not an object", format: CSV, input: "userId,integrationId,dynamicVariables\n" + good + ",[1]\n",
			want: []want{rej(2, "dynamicVariables", "must be a JSON object")}},
		// Values that the request's encoder refuses (a name twice, a lone surrogate) are refused here,
		// as a JSONL row's are, and not merged by the var columns into one of their readings.
		{name: "dynamicVariables that a JSONL row could not hold", format: CSV,
			input: "userId,integrationId,dynamicVariables,var.b\n" +
				good + `,"{""a"":1,""a"":2}",` + "\n" +
				good + `,"{""a"":1,""a"":2}",x` + "\n" +
				good + `,"{""a"":""\ud800""}",` + "\n" +
				good + `,,"{""k"":1,""k"":2}"` + "\n" +
				good + `,,"""\udc00"""` + "\n",
			want: []want{
				rej(2, "dynamicVariables", "no name twice"),
				rej(3, "dynamicVariables", "no name twice"),
				rej(4, "dynamicVariables", "lone surrogate"),
				rej(5, "dynamicVariables.b", "no name twice"),
				rej(6, "dynamicVariables.b", "lone surrogate"),
			}},
		{name: "var columns", format: CSV,
			input: "userId,integrationId,var.region,var.seats,var.on,var.zip,var.obj,var.none\n" +
				good + `,EU,42,true,0042,"{""k"":1}",` + "\n" +
				good + `,"""EU""", 1.5 ,false,"""0042""",null, ` + "\n",
			want: []want{
				rowJSON(2, "u1", jline("u1", testutil.IntegrationID, `"connections":[],"dynamicVariables":{"obj":{"k":1},"on":true,"region":"EU","seats":42,"zip":"0042"}`)),
				rowJSON(3, "u1", jline("u1", testutil.IntegrationID, `"connections":[],"dynamicVariables":{"obj":null,"on":false,"region":"EU","seats":1.5,"zip":"0042"}`)),
			}},
		{name: "var columns with dynamicVariables", format: CSV,
			input: "userId,integrationId,dynamicVariables,var.region\n" +
				good + `,"{""a"":1}",EU` + "\n" +
				good + `,"{""region"":""US""}",EU` + "\n" +
				good + `,"{""region"":""US""}",` + "\n" +
				good + `,[1],EU` + "\n",
			want: []want{
				rowJSON(2, "u1", jline("u1", testutil.IntegrationID, `"connections":[],"dynamicVariables":{"a":1,"region":"EU"}`)),
				rej(3, "dynamicVariables.region", "is set both in the dynamicVariables column and in the var.region column"),
				rowJSON(4, "u1", jline("u1", testutil.IntegrationID, `"connections":[],"dynamicVariables":{"region":"US"}`)),
				rej(5, "dynamicVariables", "must be a JSON object"),
			}},
	}
}
