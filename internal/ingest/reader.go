package ingest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"

	"github.com/versori/activator/tasks"
	"github.com/versori/activator/versori"
)

// DefaultMaxLineBytes is the longest line (or CSV record) a Reader accepts unless told otherwise.
const DefaultMaxLineBytes = 1 << 20

// maxRawBytes bounds Reject.Raw, so that a rejects file stays small even for huge bad rows.
const maxRawBytes = 4 << 10

// Row is one good input row.
type Row struct {
	Line    int // 1-based line number in the file (for CSV: the line where the record starts)
	Request versori.ActivationRequest
	// EndUser is the row's endUser, the end user its job creates should the API not know them; nil
	// when the row has none.
	EndUser *tasks.EndUser
}

// Reject is one bad input row.
type Reject struct {
	Line   int    `json:"line"`
	Field  string `json:"field,omitempty"` // JSON path of the bad field, e.g. "connections[0].templateId", or "" for the whole row
	Reason string `json:"reason"`
	Raw    string `json:"raw"` // the row as read (truncated to 4 KiB), so it can be fixed and re-run
}

// Error formats r as "line 12: connections[0].templateId: is not a ULID ...", leaving out an empty field.
func (r Reject) Error() string {
	if r.Field == "" {
		return "line " + strconv.Itoa(r.Line) + ": " + r.Reason
	}
	return "line " + strconv.Itoa(r.Line) + ": " + r.Field + ": " + r.Reason
}

// Option configures a Reader.
type Option func(*Reader)

// MaxLineBytes sets the longest line, or CSV record, that is read; default 1 MiB. A longer one is a
// reject (reason "line longer than N bytes") and reading continues with the next line. It also
// bounds the Reader's memory. n <= 0 keeps the default.
func MaxLineBytes(n int) Option {
	return func(r *Reader) {
		if n > 0 {
			r.maxLine = n
		}
	}
}

// Reader reads rows one at a time. It is not safe for concurrent use.
type Reader struct {
	format  Format
	maxLine int
	lines   *lineReader
	err     error // sticky: once reading failed or ended, every Next returns it

	// recStart and end are the first and last lines of the latest record; end lets tests check that
	// every line is accounted for.
	recStart, end int

	// CSV only.
	cols   csvColumns
	quotes quoteScanner
	rec    []byte
}

// NewReader returns a Reader of r in format f. For CSV it reads and checks the header row at once: a
// header error (unknown column, duplicate column, missing userId/integrationId column) is returned
// here, as a *HeaderError, since no row could be read. Other errors are I/O errors.
func NewReader(r io.Reader, f Format, opts ...Option) (*Reader, error) {
	rd := &Reader{format: f, maxLine: DefaultMaxLineBytes}
	for _, o := range opts {
		o(rd)
	}
	rd.lines = newLineReader(r, rd.maxLine)
	switch f {
	case JSONL:
	case CSV:
		rd.lines.scan = rd.quotes.feed
		if err := rd.readHeader(); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("ingest: unknown format %q (want %q or %q)", f, JSONL, CSV)
	}
	return rd, nil
}

// Next returns the next row. Exactly one of row/reject is non-nil unless err != nil. err is io.EOF
// at the end, or an I/O error. Blank lines are skipped (not rejects).
func (r *Reader) Next() (row *Row, reject *Reject, err error) {
	if r.err != nil {
		return nil, nil, r.err
	}
	if r.format == CSV {
		row, reject, err = r.nextCSV()
	} else {
		row, reject, err = r.nextJSONL()
	}
	if err != nil {
		r.err = err
	}
	return row, reject, err
}

func (r *Reader) nextJSONL() (*Row, *Reject, error) {
	for {
		line, tooLong, blank, err := r.lines.next()
		if err == io.EOF {
			return nil, nil, io.EOF
		}
		if err != nil {
			return nil, nil, fmt.Errorf("ingest: reading line %d: %w", r.lines.line+1, err)
		}
		if blank {
			continue
		}
		n := r.lines.line
		r.recStart, r.end = n, n
		reject := func(field, reason string) (*Row, *Reject, error) {
			return nil, &Reject{Line: n, Field: field, Reason: reason, Raw: truncate(line)}, nil
		}
		switch {
		case tooLong:
			return reject("", fmt.Sprintf("line longer than %d bytes", r.maxLine))
		case !utf8.Valid(line):
			return reject("", "not valid UTF-8")
		}
		req, end, p := decodeRow(line)
		if p != nil {
			return reject(p.Field, p.Reason)
		}
		return &Row{Line: n, Request: req, EndUser: tasks.EndUserFrom(end)}, nil, nil
	}
}

// decodeRow reads a JSONL row with the decoder every way into the queue shares.
func decodeRow(data []byte) (versori.ActivationRequest, *versori.EndUserCreate, *problem) {
	req, end, err := versori.DecodeRow(data)
	return req, end, problemOf(err)
}

// problemOf is err as a problem; nil for nil.
func problemOf(err error) *problem {
	if err == nil {
		return nil
	}
	var ve *versori.ValidationError
	if errors.As(err, &ve) {
		return &problem{ve.Field, ve.Reason}
	}
	return &problem{"", err.Error()}
}

// canonical runs the API's own checks, so that JSONL and CSV rows meet the same rules, and returns
// req with its ULIDs in canonical form.
func canonical(req versori.ActivationRequest) (versori.ActivationRequest, *problem) {
	req, err := req.Canonical()
	return req, problemOf(err)
}

func isNull(b []byte) bool {
	return string(bytes.Trim(b, " \t\r\n")) == "null"
}

// truncate copies b for Reject.Raw, cut to maxRawBytes without splitting a UTF-8 sequence.
func truncate(b []byte) string {
	if len(b) <= maxRawBytes {
		return string(b)
	}
	cut := maxRawBytes
	for i := 0; i < utf8.UTFMax-1 && cut > 0 && !utf8.RuneStart(b[cut]); i++ {
		cut--
	}
	return string(b[:cut])
}

// problem is why a piece of input is not a valid request: Field is a JSON path as in
// versori.ValidationError, "" for the whole row.
type problem struct {
	Field  string
	Reason string
}
