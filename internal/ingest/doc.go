// Package ingest reads activation requests from JSONL or CSV files for `enqueue file`.
//
// Files may hold millions of rows, so a [Reader] streams them: it holds one line (at most
// [MaxLineBytes]) in memory at a time whatever the file size. Every row is validated with
// [versori.ActivationRequest.Validate], so rows from either format meet the same rules as any other
// request, and a bad row does not stop the file: it comes back as a [Reject] naming its line, the
// bad field and the reason, while every good row still comes back as a [Row]. [RejectsWriter] collects rejects into a JSONL
// file next to the input so that an operator can fix them and run that file again.
//
// # Common rules
//
// Lines end in "\n" or "\r\n". Line numbers are 1-based and are the file's real line numbers,
// blank lines included. A blank line (only spaces, tabs and carriage returns) is skipped. A UTF-8
// byte order mark at the very start of the input is ignored. A line that is not valid UTF-8, or that
// is longer than the line limit (1 MiB unless set with [MaxLineBytes]), is rejected and reading goes
// on with the next line.
//
// # JSONL
//
// Each non-blank line is exactly the JSON body of POST /activations:
//
//	{"userId":"u-1","integrationId":"01HZY8Q6T4J8K2M3N4P5Q6R7S8","connections":[{"templateId":"01HZY8Q6T4J8K2M3N4P5Q6R7S9","connectionId":"01HZY8Q6T4J8K2M3N4P5Q6R7SA"}],"dynamicVariables":{"region":"EU"}}
//
// A row may carry "endUser" beside the request's fields: the end user its job creates when the API
// does not know the row's userId (docs/lifecycle.md), read by [versori.DecodeEndUser]:
//
//	{"userId":"u-1","integrationId":"…","connections":[],"endUser":{"displayName":"Ada","primaryConnection":{"name":"crm","credentials":{"action":[]},"variables":[]}}}
//
// primaryConnection, and its name, credentials (a JSON object) and variables ([] for none), are
// required; displayName is not. The user's externalId is the row's userId: an "externalId" member
// is refused unless it is that userId. A bad endUser rejects the row, naming the field
// ("endUser.primaryConnection.name"). "endUser": null is the same as leaving it out.
//
// An unknown field, malformed JSON, a value of the wrong type, or anything after the object on
// the same line rejects the row. Field names match exactly, as the API reads them: "USERID" is an
// unknown field, not userId, and a name given twice in one object rejects the row, since which of
// the two values counts would be a guess.
//
// ULIDs (the integration's, each connection's template and connection) are case-insensitive: a row
// may spell them in either case, and comes back with them in canonical upper case
// ([versori.CanonicalULID]), so that one pair is one job whatever case its rows use.
// "dynamicVariables": null is the same as leaving the field out.
//
// # CSV
//
// The first non-blank line is the header. Column names are case-sensitive and trimmed of
// surrounding spaces; columns may come in any order, and each may appear once:
//
//	userId            required: the end user's external id, taken as is (no trimming)
//	integrationId     required: the integration's ULID
//	connections       optional: a JSON array of connection objects, exactly as in JSONL;
//	                  an empty cell means no connections
//	templateId        optional, together with connectionId: shorthand for one existing
//	connectionId      connection, appended after those of the connections column. In a row,
//	                  both cells are set or both are empty.
//	dynamicVariables  optional: a JSON object; an empty cell means none
//	endUser           optional: the row's endUser object as in JSONL; an empty cell means none
//	var.NAME          optional, any number: the dynamic variable NAME. The cell is a JSON value
//	                  ("\"EU\"", 42, true, {"a":1}); a cell that is not valid JSON is taken as a
//	                  plain string, so EU and "EU" (JSON-quoted) are the same, but 42 is a number
//	                  and 0042 a string: quote a value as JSON to force a string. An empty cell
//	                  leaves the variable unset. Setting a variable both here and in the
//	                  dynamicVariables cell rejects the row (field dynamicVariables.NAME).
//
// Cells of the JSON-valued columns (connections, dynamicVariables, var.NAME) that hold only
// whitespace count as empty.
//
// An unknown, duplicate or unnamed column, a missing userId or integrationId column, or a
// templateId column without a connectionId column (or the reverse) is a [HeaderError] from
// [NewReader], since no row can be read without a good header.
//
// Records follow RFC 4180 as encoding/csv reads it with LazyQuotes off: a quoted field may span
// lines (a row's line number is the line where it starts) and "" is a quote inside a quoted field.
// A record with a different number of fields than the header, or with a stray quote, is rejected
// and reading goes on with the next record. A quoted field that is never closed runs, as CSV
// says, to the end of the input, and its record is rejected. The line limit applies to a whole
// record.
//
// Example:
//
//	userId,integrationId,templateId,connectionId,var.region,var.seats
//	u-1,01HZY8Q6T4J8K2M3N4P5Q6R7S8,01HZY8Q6T4J8K2M3N4P5Q6R7S9,01HZY8Q6T4J8K2M3N4P5Q6R7SA,EU,5
//	u-2,01HZY8Q6T4J8K2M3N4P5Q6R7S8,,,"""US""",
//
// gives u-1 {"region":"EU","seats":5} and u-2 {"region":"US"} with no connections.
package ingest
