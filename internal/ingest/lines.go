package ingest

import (
	"bufio"
	"errors"
	"io"
)

// lineReader reads physical lines while holding at most max+1 bytes of any one line, so that a
// file with a huge or unterminated line cannot exhaust memory.
type lineReader struct {
	br   *bufio.Reader
	max  int
	buf  []byte
	line int // number of the last line returned
	// scan, if set, sees every byte of every line except the "\n", including the bytes of an
	// over-long line that are not kept, so that the CSV quote state stays right past them.
	scan func([]byte)
}

const utf8BOM = "\xEF\xBB\xBF"

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, 64<<10), max: max}
}

// next returns the next line without its "\n" or "\r\n", valid until the following call. When the
// line is longer than max bytes, tooLong is set and line holds only its first max+1 bytes. blank
// reports whether the whole line is spaces, tabs and carriage returns. err is io.EOF only when no
// line is left.
func (lr *lineReader) next() (line []byte, tooLong, blank bool, err error) {
	if lr.line == 0 {
		// A BOM is not part of the first line, and must not count as a non-blank byte.
		if b, _ := lr.br.Peek(len(utf8BOM)); string(b) == utf8BOM {
			_, _ = lr.br.Discard(len(utf8BOM))
		}
	}
	lr.buf = lr.buf[:0]
	overflowBlank := true
	started := false
	for {
		chunk, err := lr.br.ReadSlice('\n')
		started = started || len(chunk) > 0
		content := chunk
		if err == nil {
			content = chunk[:len(chunk)-1]
		}
		if lr.scan != nil && len(content) > 0 {
			lr.scan(content)
		}
		// Keep one byte more than max, since a trailing "\r" is stripped only once the line ends.
		if room := lr.max + 1 - len(lr.buf); len(content) <= room {
			lr.buf = append(lr.buf, content...)
		} else {
			lr.buf = append(lr.buf, content[:room]...)
			tooLong = true
			overflowBlank = overflowBlank && isBlank(content[room:])
		}
		switch {
		case err == nil:
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF:
			if !started {
				return nil, false, false, io.EOF
			}
		default:
			return nil, false, false, err
		}
		break
	}
	lr.line++
	if !tooLong {
		if n := len(lr.buf); n > 0 && lr.buf[n-1] == '\r' {
			lr.buf = lr.buf[:n-1]
		}
		tooLong = len(lr.buf) > lr.max
	}
	return lr.buf, tooLong, overflowBlank && isBlank(lr.buf), nil
}

// isBlank reports whether b holds only spaces, tabs and carriage returns: JSON's whitespace, short of a newline.
func isBlank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' {
			return false
		}
	}
	return true
}
