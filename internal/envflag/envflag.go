// Package envflag defines command-line flags that default to environment variables, so that every
// setting can be given either way: a flag wins over its variable, which wins over the default.
package envflag

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"
)

// Set is a flag set whose flags read their defaults from the environment.
type Set struct {
	fs     *flag.FlagSet
	lookup func(string) (string, bool)
	errs   []error
}

// New returns a Set named name that reads variables with lookup (os.LookupEnv in production).
func New(name string, lookup func(string) (string, bool), usageOut io.Writer) *Set {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(usageOut)
	return &Set{fs: fs, lookup: lookup}
}

// FlagSet is the underlying flag set, for positional arguments.
func (s *Set) FlagSet() *flag.FlagSet { return s.fs }

func (s *Set) env(name string) (string, bool) {
	if name == "" {
		return "", false
	}
	v, ok := s.lookup(name)
	return v, ok && v != ""
}

func usage(env, u string) string {
	if env == "" {
		return u
	}
	return u + " (env " + env + ")"
}

// String defines a string flag.
func (s *Set) String(p *string, name, env, def, u string) {
	if v, ok := s.env(env); ok {
		def = v
	}
	s.fs.StringVar(p, name, def, usage(env, u))
}

// Secret defines a string flag whose value is never shown in usage output.
func (s *Set) Secret(p *string, name, env, u string) {
	def, _ := s.env(env)
	s.fs.Func(name, usage(env, u), func(v string) error { *p = v; return nil })
	*p = def
}

// Int defines an int flag.
func (s *Set) Int(p *int, name, env string, def int, u string) {
	if v, ok := s.env(env); ok {
		n, err := strconv.Atoi(v)
		if err != nil {
			s.errs = append(s.errs, fmt.Errorf("%s=%q is not a whole number", env, v))
		} else {
			def = n
		}
	}
	s.fs.IntVar(p, name, def, usage(env, u))
}

// Float defines a float64 flag.
func (s *Set) Float(p *float64, name, env string, def float64, u string) {
	if v, ok := s.env(env); ok {
		n, err := strconv.ParseFloat(v, 64)
		if err != nil {
			s.errs = append(s.errs, fmt.Errorf("%s=%q is not a number", env, v))
		} else {
			def = n
		}
	}
	s.fs.Float64Var(p, name, def, usage(env, u))
}

// Duration defines a time.Duration flag.
func (s *Set) Duration(p *time.Duration, name, env string, def time.Duration, u string) {
	if v, ok := s.env(env); ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			s.errs = append(s.errs, fmt.Errorf("%s=%q is not a duration (like 30s or 5m)", env, v))
		} else {
			def = d
		}
	}
	s.fs.DurationVar(p, name, def, usage(env, u))
}

// Bool defines a bool flag.
func (s *Set) Bool(p *bool, name, env string, def bool, u string) {
	if v, ok := s.env(env); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			s.errs = append(s.errs, fmt.Errorf("%s=%q is not true or false", env, v))
		} else {
			def = b
		}
	}
	s.fs.BoolVar(p, name, def, usage(env, u))
}

// Parse parses args and returns the first problem with them or with the environment.
func (s *Set) Parse(args []string) error {
	if err := s.fs.Parse(args); err != nil {
		return err
	}
	return errors.Join(s.errs...)
}
