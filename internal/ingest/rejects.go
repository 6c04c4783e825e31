package ingest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sync"
)

// RejectsWriter writes rejects as JSONL to a file next to the input, created on the first reject,
// so that a clean run leaves no empty file behind. A rejects file left by an earlier run is
// replaced on the first reject, and left alone when there is none (enqueue file then removes it, so
// that it does not pass for the new run's). It is safe for concurrent use.
type RejectsWriter struct {
	path string

	mu     sync.Mutex
	f      *os.File
	bw     *bufio.Writer
	enc    *json.Encoder
	count  int
	closed bool
}

// NewRejectsWriter returns a RejectsWriter of the rejects file at path. It touches no file until the first Write.
func NewRejectsWriter(path string) *RejectsWriter {
	return &RejectsWriter{path: path}
}

// RejectsPath returns the rejects file for an input path: "<input>.rejects.jsonl", or
// "stdin.rejects.jsonl" (in the working directory) for "-".
func RejectsPath(input string) string {
	if input == "-" {
		return "stdin.rejects.jsonl"
	}
	return input + ".rejects.jsonl"
}

// Write appends r to the rejects file as one JSON line, creating the file on the first call.
func (w *RejectsWriter) Write(r Reject) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return fmt.Errorf("ingest: write to closed rejects file %s", w.path)
	}
	if w.f == nil {
		// Owner only: a reject quotes its row whole, and a row may hold an end user's credentials
		// in plain text. Chmod too, since O_TRUNC keeps the mode of a file an earlier run left.
		f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("ingest: creating rejects file: %w", err)
		}
		if err := f.Chmod(0o600); err != nil {
			f.Close()
			return fmt.Errorf("ingest: creating rejects file: %w", err)
		}
		w.f = f
		w.bw = bufio.NewWriter(f)
		w.enc = json.NewEncoder(w.bw)
		// Raw is for people to read and fix: keep <, > and & as they were.
		w.enc.SetEscapeHTML(false)
	}
	if err := w.enc.Encode(r); err != nil {
		return fmt.Errorf("ingest: writing rejects file %s: %w", w.path, err)
	}
	w.count++
	return nil
}

// Count returns the number of rejects written so far.
func (w *RejectsWriter) Count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.count
}

// Path returns the path of the rejects file, whether or not it has been created.
func (w *RejectsWriter) Path() string { return w.path }

// Close flushes and closes the rejects file; no file is created when there were no rejects.
// Closing twice is harmless.
func (w *RejectsWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	if w.f == nil {
		return nil
	}
	err := w.bw.Flush()
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("ingest: closing rejects file %s: %w", w.path, err)
	}
	return nil
}
