// Package configerr is the error the configuration structs' Validate methods return. It names the
// struct field, not the environment variable or flag that set it: the library does not know how it
// was configured, and a command turns the field back into its own variable (internal/cmd).
package configerr

import (
	"errors"
	"fmt"
)

// Error says what is wrong with one field of a configuration struct.
type Error struct {
	Pkg   string // the package whose Validate refused it: "worker"
	Field string // the field's path from the struct validated: "Concurrency", "Versori.Timeout"
	// Problem is what is wrong, after the field's name: "must be at least 1, got 0". It may name
	// other fields of the same struct, by their names, capitalised.
	Problem string
}

// New returns the Error of pkg about field.
func New(pkg, field, format string, args ...any) *Error {
	return &Error{Pkg: pkg, Field: field, Problem: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string { return e.Pkg + ": " + e.Field + " " + e.Problem }

// Within returns a sub-config's error as the enclosing struct's Validate reports it: by pkg, with
// the field path under parent. Other errors are returned as they are.
func Within(err error, pkg, parent string) error {
	var e *Error
	if !errors.As(err, &e) {
		return err
	}
	return &Error{Pkg: pkg, Field: parent + "." + e.Field, Problem: e.Problem}
}
