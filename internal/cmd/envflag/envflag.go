// Package envflag defines command-line flags that default to environment variables, so that every
// setting can be given either way: a flag wins over its variable, which wins over the default. It is
// the one place a command names its variables: a Set remembers every setting it defined (Vars), so
// that the commands can check their documentation against it and name the variable behind a struct
// field a Validate method refused (Fields).
//
// Secrets are the exception: they have no flag, since a command line shows in ps and in
// /debug/pprof/cmdline. A Secret is read from its variable VAR or from the file VAR_FILE names, and a
// command line that still passes its old flag is refused.
package envflag

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// Set is a flag set whose flags read their defaults from the environment.
type Set struct {
	fs     *flag.FlagSet
	lookup func(string) (string, bool)
	errs   []error
	vars   []Var
	after  []func() error // run by Parse once the flags are parsed
	usage  []string       // a line for each Secret, which -h shows after the flags
}

// Var is one setting of a Set as the documentation shows it.
type Var struct {
	Flag    string // the flag's name, without dashes; "" for a Secret, which has none
	Env     string // the environment variable, "" for a flag only
	Default string // the default as written in the docs (durations as 30s, 10m, 24h); "" for none
	// Secret: the value is never shown, and is read only from Env or from the file Env+"_FILE" names.
	Secret bool
	// Refused is the flag a Secret once had, or would have, which Parse refuses with a pointer to Env.
	Refused string
	ptr     reflect.Value
}

// Name is how an error names the setting: its variable, or its flag when it has none.
func (v Var) Name() string {
	if v.Env != "" {
		return v.Env
	}
	return "-" + v.Flag
}

// New returns a Set named name that reads variables with lookup (os.LookupEnv in production).
func New(name string, lookup func(string) (string, bool), usageOut io.Writer) *Set {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(usageOut)
	return &Set{fs: fs, lookup: lookup}
}

// FlagSet is the underlying flag set, for positional arguments.
func (s *Set) FlagSet() *flag.FlagSet { return s.fs }

// Vars returns the flags defined so far, in order.
func (s *Set) Vars() []Var { return append([]Var(nil), s.vars...) }

// Lookup returns the setting whose flag is name, or the Secret whose variable is name.
func (s *Set) Lookup(name string) (Var, bool) {
	for _, v := range s.vars {
		if v.Flag == name || v.Secret && v.Env == name {
			return v, true
		}
	}
	return Var{}, false
}

func (s *Set) add(p any, name, env, def string, secret bool) {
	s.vars = append(s.vars, Var{Flag: name, Env: env, Default: def, Secret: secret, ptr: reflect.ValueOf(p)})
}

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
	s.add(p, name, env, def, false)
	if v, ok := s.env(env); ok {
		def = v
	}
	s.fs.StringVar(p, name, def, usage(env, u))
}

// StringEmpty defines a string flag like String, except that its variable set to "" is the value ""
// rather than unset: for a setting whose empty value means "none" (METRICS_ADDR= serves no metrics).
func (s *Set) StringEmpty(p *string, name, env, def, u string) {
	s.add(p, name, env, def, false)
	if env != "" {
		if v, ok := s.lookup(env); ok {
			def = v
		}
	}
	s.fs.StringVar(p, name, def, usage(env, u))
}

// Secret defines a setting that has no flag: its value comes from the variable env or, for a value
// kept in a mounted file, from the file that env+"_FILE" names (its content, one trailing newline
// trimmed). Both set is an error, and so is a file that cannot be read; errors name the variable,
// never the value. def, which is no secret, applies when neither is set. name is the flag the
// setting had or would have had: a command line that passes it is refused, pointing at env, so that
// nobody puts the secret where ps and /debug/pprof/cmdline show it. -h lists the secret through
// PrintDefaults, without a value.
func (s *Set) Secret(p *string, name, env, def, u string) {
	s.vars = append(s.vars, Var{Env: env, Default: def, Secret: true, Refused: name, ptr: reflect.ValueOf(p)})
	line := fmt.Sprintf("  %s or %s_FILE\n    \t%s", env, env, u)
	if def != "" {
		line += " (default " + def + ")"
	}
	s.usage = append(s.usage, line)
	*p = def
	v, set := s.env(env)
	path, fromFile := s.env(env + "_FILE")
	switch {
	case set && fromFile:
		s.errs = append(s.errs, fmt.Errorf("%s and %s_FILE are both set: set one of them", env, env))
	case set:
		*p = v
	case fromFile:
		v, err := readSecret(path)
		if err != nil {
			s.errs = append(s.errs, fmt.Errorf("%s_FILE: %w", env, err))
			break
		}
		*p = v
	}
}

// maxSecretFile bounds what readSecret reads, so that a _FILE pointing at a device or a log cannot
// stall the start or fill the memory.
const maxSecretFile = 64 << 10

// readSecret returns the content of the file at path with one trailing newline trimmed. Its errors
// say what is wrong with the file, never what it holds.
func readSecret(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("cannot read it: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	switch {
	case err != nil:
		return "", fmt.Errorf("cannot read it: %w", err)
	case len(b) > maxSecretFile:
		return "", fmt.Errorf("%s is larger than %d KiB: not a secret", path, maxSecretFile>>10)
	}
	v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if v == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return v, nil
}

// refused returns the error for the first argument that passes a Secret's refused flag (-name,
// --name, -name=value), or nil. It stops at "--", as the flag package does, and never shows what
// follows the flag's name.
func (s *Set) refused(args []string) error {
	for _, a := range args {
		if a == "--" {
			return nil
		}
		if len(a) < 2 || a[0] != '-' {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		for _, v := range s.vars {
			if v.Secret && v.Refused != "" && v.Refused == name {
				return fmt.Errorf("-%s is not accepted: a secret on the command line shows in ps and /debug/pprof/cmdline; set %s, or %s_FILE to a file holding it, instead", name, v.Env, v.Env)
			}
		}
	}
	return nil
}

// PrintDefaults writes the flags' usage, as flag.FlagSet.PrintDefaults does, then the secrets the
// Set reads from the environment only, without their values.
func (s *Set) PrintDefaults() {
	s.fs.PrintDefaults()
	if len(s.usage) == 0 {
		return
	}
	out := s.fs.Output()
	fmt.Fprintln(out, "secrets, from the environment only (VAR, or VAR_FILE naming a file that holds it):")
	for _, l := range s.usage {
		fmt.Fprintln(out, l)
	}
}

// Int defines an int flag.
func (s *Set) Int(p *int, name, env string, def int, u string) {
	s.add(p, name, env, strconv.Itoa(def), false)
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

// Int64 defines an int64 flag.
func (s *Set) Int64(p *int64, name, env string, def int64, u string) {
	s.add(p, name, env, strconv.FormatInt(def, 10), false)
	if v, ok := s.env(env); ok {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			s.errs = append(s.errs, fmt.Errorf("%s=%q is not a whole number", env, v))
		} else {
			def = n
		}
	}
	s.fs.Int64Var(p, name, def, usage(env, u))
}

// Uint32 defines a uint32 flag. Underneath it is a uint64 flag, so that usage shows it as the flag
// package shows its own numbers ("-name uint ... (default 20)"); Parse refuses a value that does not
// fit in 32 bits.
func (s *Set) Uint32(p *uint32, name, env string, def uint32, u string) {
	s.add(p, name, env, strconv.FormatUint(uint64(def), 10), false)
	*p = def
	if v, ok := s.env(env); ok {
		n, err := parseUint32(v)
		if err != nil {
			s.errs = append(s.errs, fmt.Errorf("%s=%q %v", env, v, err))
		} else {
			*p = n
		}
	}
	wide := uint64(*p)
	s.fs.Uint64Var(&wide, name, wide, usage(env, u))
	s.after = append(s.after, func() error {
		if wide > math.MaxUint32 {
			return fmt.Errorf("-%s=%d is more than %d", name, wide, uint32(math.MaxUint32))
		}
		*p = uint32(wide)
		return nil
	})
}

func parseUint32(v string) (uint32, error) {
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return 0, errors.New("is not a whole number of 0 or more")
	}
	return uint32(n), nil
}

// Float defines a float64 flag.
func (s *Set) Float(p *float64, name, env string, def float64, u string) {
	s.add(p, name, env, strconv.FormatFloat(def, 'g', -1, 64), false)
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
	s.add(p, name, env, FormatDuration(def), false)
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
	s.add(p, name, env, strconv.FormatBool(def), false)
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
	// Before the flag package sees them: its errors quote the value.
	if err := s.refused(args); err != nil {
		return err
	}
	if err := s.fs.Parse(args); err != nil {
		return err
	}
	errs := s.errs
	for _, f := range s.after {
		if err := f(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// FormatDuration writes d as people do: 10m, not 10m0s; 24h, not 24h0m0s.
func FormatDuration(d time.Duration) string {
	out := d.String()
	if strings.HasSuffix(out, "m0s") {
		out = out[:len(out)-2]
	}
	if strings.HasSuffix(out, "h0m") {
		out = out[:len(out)-2]
	}
	return out
}

// Fields maps the path of every field of the struct root points to ("Concurrency",
// "Policy.Base") that a flag of s sets to that flag. Fields set through a variable of another type
// are not in it; a command adds them by hand.
func (s *Set) Fields(root any) map[string]Var {
	out := map[string]Var{}
	rv := reflect.ValueOf(root)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		panic("envflag: Fields needs a pointer to a struct")
	}
	var walk func(v reflect.Value, prefix string)
	walk = func(v reflect.Value, prefix string) {
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			fv := v.Field(i)
			path := prefix + f.Name
			for _, sv := range s.vars {
				// A struct's first field shares its address: the type tells them apart.
				if sv.ptr.Type().Elem() == f.Type && sv.ptr.UnsafePointer() == fv.Addr().UnsafePointer() {
					out[path] = sv
				}
			}
			if f.Type.Kind() == reflect.Struct {
				walk(fv, path+".")
			}
		}
	}
	walk(rv.Elem(), "")
	return out
}
