package envflag

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/versori/activator/internal/configerr"
)

func mapLookup(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

// values are one flag of each kind, defined on a Set.
type values struct {
	s   string
	i   int
	d   time.Duration
	b   bool
	f   float64
	sec string
}

func define(set *Set, v *values) {
	set.String(&v.s, "name", "EF_NAME", "default-name", "a name")
	set.Int(&v.i, "count", "EF_COUNT", 7, "a count")
	set.Duration(&v.d, "wait", "EF_WAIT", 3*time.Second, "a wait")
	set.Bool(&v.b, "verbose", "EF_VERBOSE", false, "be verbose")
	set.Float(&v.f, "ratio", "EF_RATIO", 0.5, "a ratio")
	set.Secret(&v.sec, "token", "EF_TOKEN", "", "a token")
}

func TestPrecedence(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"EF_NAME": "env-name", "EF_COUNT": "11", "EF_WAIT": "1m", "EF_VERBOSE": "true", "EF_RATIO": "0.25", "EF_TOKEN": "env-token",
	}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want values
	}{
		{"defaults", nil, nil, values{"default-name", 7, 3 * time.Second, false, 0.5, ""}},
		{"empty variables count as unset", map[string]string{"EF_NAME": "", "EF_COUNT": "", "EF_WAIT": "", "EF_VERBOSE": "", "EF_RATIO": "", "EF_TOKEN": ""},
			nil, values{"default-name", 7, 3 * time.Second, false, 0.5, ""}},
		{"env beats default", env, nil, values{"env-name", 11, time.Minute, true, 0.25, "env-token"}},
		{"flag beats default", nil,
			[]string{"-name=flag-name", "-count=13", "-wait=2h", "-verbose", "-ratio=1.5", "-token=flag-token"},
			values{"flag-name", 13, 2 * time.Hour, true, 1.5, "flag-token"}},
		{"flag beats env", env,
			[]string{"-name", "flag-name", "-count", "-1", "-wait", "0s", "-verbose=false", "-ratio", "2", "-token", "flag-token"},
			values{"flag-name", -1, 0, false, 2, "flag-token"}},
		{"flags and env mixed", env, []string{"-count=1", "--token=t"},
			values{"env-name", 1, time.Minute, true, 0.25, "t"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			set := New("test", mapLookup(tt.env), io.Discard)
			var got values
			define(set, &got)
			if err := set.Parse(tt.args); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// TestStringEmpty checks that a StringEmpty flag's variable set to "" is the value "", not unset,
// and that the flag still beats it.
func TestStringEmpty(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"unset", nil, nil, "def"},
		{"set", map[string]string{"EF_ADDR": "x"}, nil, "x"},
		{"set but empty", map[string]string{"EF_ADDR": ""}, nil, ""},
		{"flag beats empty variable", map[string]string{"EF_ADDR": ""}, []string{"-addr=y"}, "y"},
		{"empty flag", map[string]string{"EF_ADDR": "x"}, []string{"-addr="}, ""},
	}
	for _, tt := range tests {
		set := New("test", mapLookup(tt.env), io.Discard)
		var got string
		set.StringEmpty(&got, "addr", "EF_ADDR", "def", "an address")
		if err := set.Parse(tt.args); err != nil {
			t.Fatalf("%s: Parse: %v", tt.name, err)
		}
		if got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
		if v, ok := set.Lookup("addr"); !ok || v.Default != "def" || v.Env != "EF_ADDR" {
			t.Errorf("%s: Lookup = %+v, %v", tt.name, v, ok)
		}
	}
}

// TestUint32 checks a Uint32 flag's precedence and limits, and that usage shows it as the flag
// package shows its own numbers: "-calls uint", with its default.
func TestUint32(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    uint32
		wantErr string
	}{
		{"default", nil, nil, 20, ""},
		{"env", map[string]string{"EF_CALLS": "7"}, nil, 7, ""},
		{"flag beats env", map[string]string{"EF_CALLS": "7"}, []string{"-calls=9"}, 9, ""},
		{"largest", nil, []string{"-calls=4294967295"}, 4294967295, ""},
		{"flag too large", nil, []string{"-calls=4294967296"}, 0, "-calls=4294967296 is more than 4294967295"},
		{"flag negative", nil, []string{"-calls=-1"}, 0, `invalid value "-1" for flag -calls`},
		{"env negative", map[string]string{"EF_CALLS": "-1"}, nil, 0, `EF_CALLS="-1" is not a whole number of 0 or more`},
		{"env too large", map[string]string{"EF_CALLS": "4294967296"}, nil, 0, `EF_CALLS="4294967296" is not a whole number of 0 or more`},
	}
	for _, tt := range tests {
		set := New("test", mapLookup(tt.env), io.Discard)
		var got uint32
		set.Uint32(&got, "calls", "EF_CALLS", 20, "calls before it opens")
		err := set.Parse(tt.args)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: Parse: %v", tt.name, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: Parse = %v, want an error containing %q", tt.name, err, tt.wantErr)
		case tt.wantErr == "" && got != tt.want:
			t.Errorf("%s: got %d, want %d", tt.name, got, tt.want)
		}
	}

	var out bytes.Buffer
	set := New("test", mapLookup(map[string]string{"EF_CALLS": "42"}), &out)
	var n uint32
	set.Uint32(&n, "calls", "EF_CALLS", 20, "calls before it opens")
	set.FlagSet().PrintDefaults()
	want := "  -calls uint\n    \tcalls before it opens (env EF_CALLS) (default 42)\n"
	if out.String() != want {
		t.Errorf("usage = %q, want %q", out.String(), want)
	}
}

func TestBadEnvironment(t *testing.T) {
	t.Parallel()
	tests := []struct {
		variable, value string
	}{
		{"EF_COUNT", "abc"},
		{"EF_COUNT", "1.5"},
		{"EF_WAIT", "10"},
		{"EF_WAIT", "soon"},
		{"EF_VERBOSE", "yes please"},
		{"EF_RATIO", "half"},
	}
	for _, tt := range tests {
		t.Run(tt.variable+"="+tt.value, func(t *testing.T) {
			t.Parallel()
			set := New("test", mapLookup(map[string]string{tt.variable: tt.value}), io.Discard)
			var v values
			define(set, &v)
			err := set.Parse(nil)
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			if !strings.Contains(err.Error(), tt.variable) || !strings.Contains(err.Error(), tt.value) {
				t.Errorf("error %q does not name %s and its value", err, tt.variable)
			}
		})
	}

	// Every bad variable is reported.
	set := New("test", mapLookup(map[string]string{"EF_COUNT": "x", "EF_RATIO": "y"}), io.Discard)
	var v values
	define(set, &v)
	err := set.Parse(nil)
	if err == nil || !strings.Contains(err.Error(), "EF_COUNT") || !strings.Contains(err.Error(), "EF_RATIO") {
		t.Errorf("Parse = %v, want both variables named", err)
	}
}

func TestBadFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-count=abc"}, {"-nope"}, {"-wait=forever"}} {
		var usage bytes.Buffer
		set := New("test", mapLookup(nil), &usage)
		var v values
		define(set, &v)
		if err := set.Parse(args); err == nil {
			t.Errorf("Parse(%q) succeeded", args)
		}
	}
	set := New("test", mapLookup(nil), io.Discard)
	var v values
	define(set, &v)
	if err := set.Parse([]string{"-h"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("Parse(-h) = %v, want flag.ErrHelp", err)
	}
}

func TestPositionalArgs(t *testing.T) {
	t.Parallel()
	set := New("test", mapLookup(nil), io.Discard)
	var v values
	define(set, &v)
	if err := set.Parse([]string{"-count=2", "a", "b"}); err != nil {
		t.Fatal(err)
	}
	if got := set.FlagSet().Args(); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Errorf("Args = %q", got)
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-T0KEN-value"
	tests := []struct {
		name string
		env  map[string]string
		args []string
	}{
		{"secret from env", map[string]string{"EF_TOKEN": secret}, nil},
		{"secret from flag", nil, []string{"-token=" + secret}},
		{"secret from both", map[string]string{"EF_TOKEN": secret}, []string{"-token", secret}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			set := New("test", mapLookup(tt.env), &out)
			var v values
			define(set, &v)
			if err := set.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if v.sec != secret {
				t.Fatalf("secret = %q", v.sec)
			}
			set.FlagSet().PrintDefaults()
			// A parse error prints the usage too.
			set2 := New("test", mapLookup(tt.env), &out)
			define(set2, &values{})
			_ = set2.Parse(append(append([]string(nil), tt.args...), "-nope"))
			usage := out.String()
			if strings.Contains(usage, secret) {
				t.Errorf("usage shows the secret:\n%s", usage)
			}
			for _, want := range []string{"-token", "a token (env EF_TOKEN)", "(env EF_NAME)", "(env EF_COUNT)"} {
				if !strings.Contains(usage, want) {
					t.Errorf("usage lacks %q:\n%s", want, usage)
				}
			}
		})
	}

	// Ordinary flags show the default they took from the environment.
	var out bytes.Buffer
	set := New("test", mapLookup(map[string]string{"EF_NAME": "from-env", "EF_COUNT": "42"}), &out)
	define(set, &values{})
	set.FlagSet().PrintDefaults()
	for _, want := range []string{`(default "from-env")`, "(default 42)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}

	// A flag without a variable has plain usage.
	var out2 bytes.Buffer
	set2 := New("test", mapLookup(map[string]string{"": "ignored"}), &out2)
	var s string
	set2.String(&s, "plain", "", "def", "plain flag")
	if err := set2.Parse(nil); err != nil || s != "def" {
		t.Errorf("Parse = %v, s = %q", err, s)
	}
	set2.FlagSet().PrintDefaults()
	if strings.Contains(out2.String(), "(env") {
		t.Errorf("usage of a flag without a variable mentions env:\n%s", out2.String())
	}
}

// TestExplain checks that a field-named configerr.Error comes back naming the variables, the
// field's own and its siblings', and that Fields sees nested fields and tells a struct from its
// first field.
func TestExplain(t *testing.T) {
	t.Parallel()
	var cfg struct {
		Name  string
		Inner struct {
			Base, Cap time.Duration
		}
		Other int
	}
	set := New("t", mapLookup(nil), io.Discard)
	set.String(&cfg.Name, "name", "EF_NAME", "n", "a name")
	set.Duration(&cfg.Inner.Base, "base", "EF_BASE", time.Second, "base")
	set.Duration(&cfg.Inner.Cap, "cap", "", time.Minute, "cap")
	fields := set.Fields(&cfg)
	if len(fields) != 3 || fields["Inner.Base"].Env != "EF_BASE" || fields["Inner.Cap"].Flag != "cap" || fields["Name"].Env != "EF_NAME" {
		t.Fatalf("Fields = %+v", fields)
	}
	tests := []struct {
		err  error
		want string
	}{
		{configerr.New("p", "Inner.Cap", "must be at least Base (1s), got 1ms."), "-cap must be at least EF_BASE (1s), got 1ms."},
		{configerr.New("p", "Name", "and Inner.Base are wrong"), "EF_NAME and EF_BASE are wrong"},
		{configerr.New("p", "Other", "is wrong"), "p: Other is wrong"},
		{errors.New("plain"), "plain"},
	}
	for _, tt := range tests {
		if got := Explain(tt.err, fields).Error(); got != tt.want {
			t.Errorf("Explain(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
