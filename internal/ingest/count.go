package ingest

import (
	"context"
	"fmt"
	"io"
)

// CountRows counts the rows a Reader of r in format f would return, good and bad, without decoding
// them: non-blank lines of JSONL, records after the header of CSV. It reads r to its end, in memory
// bounded by the line limit (opts as for NewReader), and stops early with ctx's error when ctx ends. It is for progress
// displays, which want a file's total before the real read gets there.
func CountRows(ctx context.Context, r io.Reader, f Format, opts ...Option) (int, error) {
	rd, err := NewReader(r, f, opts...)
	if err != nil {
		return 0, err
	}
	for n := 0; ; n++ {
		if n%1024 == 0 && ctx.Err() != nil {
			return n, fmt.Errorf("ingest: counting rows: %w", ctx.Err())
		}
		if err := rd.skip(); err == io.EOF {
			return n, nil
		} else if err != nil {
			return n, err
		}
	}
}

// skip passes over the next row, as Next would read it, without decoding it.
func (r *Reader) skip() error {
	if r.format == CSV {
		_, _, err := r.readRecord()
		return err
	}
	for {
		_, _, blank, err := r.lines.next()
		if err != nil {
			if err != io.EOF {
				err = fmt.Errorf("ingest: reading line %d: %w", r.lines.line+1, err)
			}
			return err
		}
		if !blank {
			return nil
		}
	}
}
