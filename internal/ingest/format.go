package ingest

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Format is an input file format.
type Format string

const (
	// JSONL is one JSON activation request per line (also known as NDJSON).
	JSONL Format = "jsonl"
	// CSV is a header row followed by one activation request per record; see the package doc for the columns.
	CSV Format = "csv"
)

// FormatOf picks the format from a path: .jsonl/.ndjson -> JSONL, .csv -> CSV, "-" -> JSONL (stdin).
// Extensions match case-insensitively. Any other path is an error naming the supported extensions.
func FormatOf(path string) (Format, error) {
	if path == "-" {
		return JSONL, nil
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".jsonl", ".ndjson":
		return JSONL, nil
	case ".csv":
		return CSV, nil
	}
	return "", fmt.Errorf("ingest: cannot tell the format of %q: the name must end in .jsonl, .ndjson or .csv (or be \"-\" for JSONL on stdin)", path)
}
