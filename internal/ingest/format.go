package ingest

import (
	"errors"
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

// ErrUnknownFormat is the error FormatOf and FormatFor wrap when a path's name does not tell its
// format: a caller that can be told the format (a --format flag) says how.
var ErrUnknownFormat = errors.New("cannot tell the format")

// FormatOf picks the format from a path: .jsonl/.ndjson -> JSONL, .csv -> CSV, "-" -> JSONL (stdin).
// Extensions match case-insensitively. Any other path is an error wrapping ErrUnknownFormat and
// naming the supported extensions.
func FormatOf(path string) (Format, error) {
	return FormatFor(path, "")
}

// FormatFor is the format of path when it is named: name is "jsonl" (or "ndjson") or "csv", in any
// case, or "" to pick the format from the path as FormatOf does. An unknown name is an error.
func FormatFor(path, name string) (Format, error) {
	if name != "" {
		return ParseFormat(name)
	}
	if path == "-" {
		return JSONL, nil
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".jsonl", ".ndjson":
		return JSONL, nil
	case ".csv":
		return CSV, nil
	}
	return "", fmt.Errorf("ingest: %w of %q: the name must end in .jsonl, .ndjson or .csv (or be \"-\" for JSONL on stdin)", ErrUnknownFormat, path)
}

// ParseFormat reads a format's name: "jsonl" (or "ndjson") or "csv", in any case.
func ParseFormat(name string) (Format, error) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "jsonl", "ndjson":
		return JSONL, nil
	case "csv":
		return CSV, nil
	}
	return "", fmt.Errorf("ingest: unknown format %q: want jsonl or csv", name)
}
