package ingest

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

// HeaderError is a bad CSV header row. It stops the whole file, since no row can be read without it.
type HeaderError struct {
	Line   int    // the header's line, 0 when there is none
	Column string // the column concerned, as written; "" when the problem is not one column's
	Reason string
}

// Error formats e as `ingest: csv header (line 1): column "foo": unknown column; ...`.
func (e *HeaderError) Error() string {
	s := "ingest: csv header"
	if e.Line > 0 {
		s += " (line " + strconv.Itoa(e.Line) + ")"
	}
	if e.Column != "" {
		s += ": column " + strconv.Quote(e.Column)
	}
	return s + ": " + e.Reason
}

const (
	colUserID           = "userId"
	colIntegrationID    = "integrationId"
	colConnections      = "connections"
	colTemplateID       = "templateId"
	colConnectionID     = "connectionId"
	colDynamicVariables = "dynamicVariables"
	colEndUser          = "endUser"
	colVarPrefix        = "var."

	knownColumns = "userId, integrationId, connections, templateId, connectionId, dynamicVariables, endUser, var.NAME"
)

// csvColumns holds the index of each column in a record, -1 when the header lacks it.
type csvColumns struct {
	n                                    int // number of columns
	userID, integrationID, connections   int
	templateID, connectionID, dynamicVar int
	endUser                              int
	vars                                 []csvVar
}

type csvVar struct {
	name string
	col  int
}

func (r *Reader) readHeader() error {
	text, p, err := r.readRecord()
	if err == io.EOF {
		return &HeaderError{Reason: "the input is empty: a header row naming the columns (" + knownColumns + ") is required"}
	}
	if err != nil {
		return err
	}
	line := r.recStart
	if p != nil {
		return &HeaderError{Line: line, Reason: p.Reason}
	}
	cr := csv.NewReader(bytes.NewReader(text))
	names, err := cr.Read()
	if err != nil {
		return &HeaderError{Line: line, Reason: csvErrorReason(err, line)}
	}
	c := csvColumns{n: len(names), userID: -1, integrationID: -1, connections: -1, templateID: -1, connectionID: -1, dynamicVar: -1, endUser: -1}
	seen := make(map[string]bool, len(names))
	for i, raw := range names {
		name := strings.TrimSpace(raw)
		if name == "" {
			return &HeaderError{Line: line, Reason: fmt.Sprintf("column %d has no name", i+1)}
		}
		if seen[name] {
			return &HeaderError{Line: line, Column: name, Reason: "appears more than once"}
		}
		seen[name] = true
		var slot *int
		switch name {
		case colUserID:
			slot = &c.userID
		case colIntegrationID:
			slot = &c.integrationID
		case colConnections:
			slot = &c.connections
		case colTemplateID:
			slot = &c.templateID
		case colConnectionID:
			slot = &c.connectionID
		case colDynamicVariables:
			slot = &c.dynamicVar
		case colEndUser:
			slot = &c.endUser
		default:
			v, ok := strings.CutPrefix(name, colVarPrefix)
			if !ok || v == "" {
				return &HeaderError{Line: line, Column: name, Reason: "unknown column; the known columns are " + knownColumns}
			}
			c.vars = append(c.vars, csvVar{name: v, col: i})
			continue
		}
		*slot = i
	}
	switch {
	case c.userID < 0:
		return &HeaderError{Line: line, Column: colUserID, Reason: "required column is missing"}
	case c.integrationID < 0:
		return &HeaderError{Line: line, Column: colIntegrationID, Reason: "required column is missing"}
	case c.templateID < 0 && c.connectionID >= 0:
		return &HeaderError{Line: line, Column: colConnectionID, Reason: "needs a templateId column too: together they name one existing connection"}
	case c.templateID >= 0 && c.connectionID < 0:
		return &HeaderError{Line: line, Column: colTemplateID, Reason: "needs a connectionId column too: together they name one existing connection"}
	}
	r.cols = c
	return nil
}

func (r *Reader) nextCSV() (*Row, *Reject, error) {
	text, p, err := r.readRecord()
	if err != nil {
		return nil, nil, err
	}
	n := r.recStart
	reject := func(p *problem) (*Row, *Reject, error) {
		return nil, &Reject{Line: n, Field: p.Field, Reason: p.Reason, Raw: truncate(text)}, nil
	}
	if p != nil {
		return reject(p)
	}
	cr := csv.NewReader(bytes.NewReader(text))
	cr.FieldsPerRecord = r.cols.n
	cells, err := cr.Read()
	var pe *csv.ParseError
	switch {
	case err == nil:
		if _, err := cr.Read(); err != io.EOF {
			// Cannot happen while quoteScanner agrees with encoding/csv on where records end.
			return reject(&problem{"", "internal error: the record holds more than one CSV record"})
		}
	case errors.As(err, &pe) && errors.Is(err, csv.ErrFieldCount):
		return reject(&problem{"", fmt.Sprintf("wrong number of fields: expected %d (one per header column), got %d", r.cols.n, len(cells))})
	default:
		return reject(&problem{"", csvErrorReason(err, n)})
	}
	req, p := r.cols.request(cells)
	if p == nil {
		req, p = canonical(req)
	}
	var end *versori.EndUserCreate
	if p == nil {
		end, p = r.cols.endUserOf(cells, req.UserID)
	}
	if p != nil {
		return reject(p)
	}
	return &Row{Line: n, Request: req, EndUser: tasks.EndUserFrom(end)}, nil, nil
}

// csvErrorReason describes a csv error in terms of the file's lines; start is the record's first line.
func csvErrorReason(err error, start int) string {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return fmt.Sprintf("bad CSV at line %d, column %d: %v", start+pe.Line-1, pe.Column, pe.Err)
	}
	return "bad CSV: " + err.Error()
}

// readRecord returns the text of the next CSV record, its physical lines joined with "\n", and sets
// r.recStart and r.end to its first and last lines. A record that cannot be parsed at all (too long,
// not UTF-8, unterminated quote) comes back as a problem, with as much of its text as was kept.
//
// Records are cut out of the stream here, rather than by one csv.Reader over the whole input, so
// that a bad record cannot take the rest of the file down with it and memory stays bounded by the
// line limit: encoding/csv holds a whole record in memory however long it is.
func (r *Reader) readRecord() ([]byte, *problem, error) {
	r.quotes.reset()
	var (
		line           []byte
		tooLong, blank bool
		err            error
	)
	for {
		r.quotes.line = r.lines.line + 1
		line, tooLong, blank, err = r.lines.next()
		if err == io.EOF {
			return nil, nil, io.EOF
		}
		if err != nil {
			return nil, nil, fmt.Errorf("ingest: reading line %d: %w", r.lines.line+1, err)
		}
		r.quotes.endLine()
		if !blank {
			break
		}
		r.quotes.reset()
	}
	r.recStart = r.lines.line
	r.rec = append(r.rec[:0], line...)
	for r.quotes.inQuotes {
		r.quotes.line = r.lines.line + 1
		line, tl, _, err := r.lines.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("ingest: reading line %d: %w", r.lines.line+1, err)
		}
		r.quotes.endLine()
		if tooLong = tooLong || tl || len(r.rec)+1+len(line) > r.maxLine; !tooLong {
			r.rec = append(r.rec, '\n')
			r.rec = append(r.rec, line...)
		}
	}
	r.end = r.lines.line
	switch {
	case r.quotes.inQuotes:
		return r.rec, &problem{"", fmt.Sprintf("quoted field opened on line %d is never closed", r.quotes.openLine)}, nil
	case tooLong && r.end > r.recStart:
		return r.rec, &problem{"", fmt.Sprintf("record longer than %d bytes", r.maxLine)}, nil
	case tooLong:
		return r.rec, &problem{"", fmt.Sprintf("line longer than %d bytes", r.maxLine)}, nil
	case !utf8.Valid(r.rec):
		return r.rec, &problem{"", "not valid UTF-8"}, nil
	}
	return r.rec, nil, nil
}

// request builds the activation request of one record's cells.
func (c *csvColumns) request(cells []string) (versori.ActivationRequest, *problem) {
	req := versori.ActivationRequest{UserID: cells[c.userID], IntegrationID: cells[c.integrationID]}
	if c.connections >= 0 {
		if cell := cells[c.connections]; !isBlankString(cell) && !isNull([]byte(cell)) {
			var err error
			if req.Connections, err = versori.DecodeConnections([]byte(cell)); err != nil {
				return req, problemOf(err)
			}
		}
	}
	if c.templateID >= 0 {
		t, id := cells[c.templateID], cells[c.connectionID]
		switch {
		case t == "" && id == "":
		case t == "":
			return req, &problem{colTemplateID, "is required when connectionId is set (the two columns name one existing connection)"}
		case id == "":
			return req, &problem{colConnectionID, "is required when templateId is set (the two columns name one existing connection)"}
		default:
			req.Connections = append(req.Connections, versori.ActivationConnection{TemplateID: t, ConnectionID: id})
		}
	}
	if c.dynamicVar >= 0 {
		if cell := cells[c.dynamicVar]; !isBlankString(cell) && !isNull([]byte(cell)) {
			if !json.Valid([]byte(cell)) {
				return req, &problem{colDynamicVariables, "must be a JSON object; " + syntaxReason([]byte(cell))}
			}
			// As strict as a JSONL row: addVars below merges through a map, which would otherwise
			// pick one of two values of a name without a word.
			if !jsontext.Value(cell).IsValid() {
				return req, &problem{colDynamicVariables, notIJSON}
			}
			req.DynamicVariables = json.RawMessage(cell)
		}
	}
	return req, c.addVars(&req, cells)
}

// endUserOf reads the endUser cell of a record for the user userID: nil when there is no such
// column or the cell is empty.
func (c *csvColumns) endUserOf(cells []string, userID string) (*versori.EndUserCreate, *problem) {
	if c.endUser < 0 {
		return nil, nil
	}
	cell := cells[c.endUser]
	if isBlankString(cell) || isNull([]byte(cell)) {
		return nil, nil
	}
	end, err := versori.DecodeEndUser([]byte(cell), userID)
	return end, problemOf(err)
}

// addVars merges the var.NAME cells into req.DynamicVariables.
func (c *csvColumns) addVars(req *versori.ActivationRequest, cells []string) *problem {
	var vars map[string]json.RawMessage
	for _, v := range c.vars {
		cell := cells[v.col]
		if isBlankString(cell) {
			continue
		}
		if vars == nil {
			vars = make(map[string]json.RawMessage)
			if req.DynamicVariables != nil {
				if err := json.Unmarshal(req.DynamicVariables, &vars); err != nil {
					return &problem{colDynamicVariables, "must be a JSON object"}
				}
			}
		}
		if _, dup := vars[v.name]; dup {
			return &problem{colDynamicVariables + "." + v.name, "is set both in the dynamicVariables column and in the var." + v.name + " column"}
		}
		value := json.RawMessage(cell)
		switch {
		case !json.Valid(value):
			value, _ = json.Marshal(cell) // documented: a cell that is not JSON is a plain string
		case !jsontext.Value(value).IsValid():
			// JSON that the request's encoder would refuse (a name twice, a lone surrogate).
			return &problem{colDynamicVariables + "." + v.name, notIJSON}
		}
		vars[v.name] = value
	}
	if vars == nil {
		return nil
	}
	b, err := json.Marshal(vars)
	if err != nil {
		return &problem{colDynamicVariables, err.Error()}
	}
	req.DynamicVariables = b
	return nil
}

// notIJSON is why a cell that is JSON is refused all the same.
const notIJSON = "must be JSON with no name twice in any object and no lone surrogate (RFC 7493)"

// syntaxReason says where b, which is not valid JSON, goes wrong.
func syntaxReason(b []byte) string {
	var raw json.RawMessage
	err := json.Unmarshal(b, &raw)
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return fmt.Sprintf("invalid JSON at byte %d: %s", syn.Offset, syn.Error())
	}
	if err != nil {
		return err.Error()
	}
	return "invalid JSON"
}

func isBlankString(s string) bool {
	return strings.TrimLeft(s, " \t\r\n") == ""
}

// quoteScanner follows encoding/csv's quoting rules byte by byte to tell whether a line ends inside
// a quoted field, and so whether the record goes on to the next line. It sees the bytes of an
// over-long line that are not kept, so that the record's end is still found.
type quoteScanner struct {
	inQuotes   bool
	pending    bool // a quote inside a quoted field, which the next byte makes an escaped quote or the field's end
	fieldStart bool
	line       int // the line being scanned
	openLine   int // the line where the open quoted field started
}

func (s *quoteScanner) reset() {
	*s = quoteScanner{fieldStart: true, line: s.line}
}

func (s *quoteScanner) feed(b []byte) {
	for _, c := range b {
		if s.pending {
			s.pending = false
			if c == '"' {
				continue
			}
			s.inQuotes = false
		} else if s.inQuotes {
			s.pending = c == '"'
			continue
		}
		switch c {
		case ',':
			s.fieldStart = true
		case '"':
			// A quote that does not open a field is a bare quote: encoding/csv rejects the record,
			// which then ends with its line.
			if s.fieldStart {
				s.inQuotes = true
				s.openLine = s.line
			}
			s.fieldStart = false
		default:
			s.fieldStart = false
		}
	}
}

// endLine tells s that the line ended.
func (s *quoteScanner) endLine() {
	if s.pending {
		s.pending = false
		s.inQuotes = false
	}
	if !s.inQuotes {
		s.fieldStart = true
	}
}
