package envflag

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
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
			[]string{"-name=flag-name", "-count=13", "-wait=2h", "-verbose", "-ratio=1.5"},
			values{"flag-name", 13, 2 * time.Hour, true, 1.5, ""}},
		{"flag beats env", env,
			[]string{"-name", "flag-name", "-count", "-1", "-wait", "0s", "-verbose=false", "-ratio", "2"},
			values{"flag-name", -1, 0, false, 2, "env-token"}},
		{"flags and env mixed", env, []string{"-count=1"},
			values{"env-name", 1, time.Minute, true, 0.25, "env-token"}},
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

// TestSecret checks that a Secret is read from its variable or from the file VAR_FILE names, never
// from a flag: the old flag is refused in one line that does not show the value, and so are both
// variables set and a file that cannot be read.
func TestSecret(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-T0KEN-value"
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	withNewline, bare, crlf := write("nl", secret+"\n"), write("bare", secret), write("crlf", secret+"\r\n")
	twoLines, empty := write("two", secret+"\n\n"), write("empty", "\n")
	big := write("big", strings.Repeat("x", 65<<10))
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    string
		wantErr []string // each in the one-line error
	}{
		{"default", nil, nil, "def", nil},
		{"variable", map[string]string{"EF_TOKEN": secret}, nil, secret, nil},
		{"file, one newline trimmed", map[string]string{"EF_TOKEN_FILE": withNewline}, nil, secret, nil},
		{"file without a newline", map[string]string{"EF_TOKEN_FILE": bare}, nil, secret, nil},
		{"file with CRLF", map[string]string{"EF_TOKEN_FILE": crlf}, nil, secret, nil},
		{"file: only one newline trimmed", map[string]string{"EF_TOKEN_FILE": twoLines}, nil, secret + "\n", nil},
		{"empty variables are unset", map[string]string{"EF_TOKEN": "", "EF_TOKEN_FILE": ""}, nil, "def", nil},
		{"both set", map[string]string{"EF_TOKEN": secret, "EF_TOKEN_FILE": bare}, nil, "",
			[]string{"EF_TOKEN and EF_TOKEN_FILE are both set"}},
		{"missing file", map[string]string{"EF_TOKEN_FILE": filepath.Join(dir, "nope")}, nil, "",
			[]string{"EF_TOKEN_FILE: cannot read it", "no such file"}},
		{"a directory", map[string]string{"EF_TOKEN_FILE": dir}, nil, "", []string{"EF_TOKEN_FILE: cannot read"}},
		{"empty file", map[string]string{"EF_TOKEN_FILE": empty}, nil, "", []string{"EF_TOKEN_FILE: " + empty + " is empty"}},
		{"huge file", map[string]string{"EF_TOKEN_FILE": big}, nil, "", []string{"EF_TOKEN_FILE: " + big + " is larger than 64 KiB"}},
		{"old flag with =", nil, []string{"-count=2", "-token=" + secret}, "", []string{"-token is not accepted", "set EF_TOKEN, or EF_TOKEN_FILE"}},
		{"old flag, value apart", nil, []string{"--token", secret}, "", []string{"-token is not accepted", "EF_TOKEN_FILE"}},
		{"old flag beside the variable", map[string]string{"EF_TOKEN": secret}, []string{"-token", secret}, "", []string{"-token is not accepted"}},
		{"after --, an argument", nil, []string{"--", "-token=x"}, "def", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			set := New("test", mapLookup(tt.env), io.Discard)
			var got, other string
			set.Secret(&got, "token", "EF_TOKEN", "def", "a token")
			set.String(&other, "name", "EF_NAME", "", "a name")
			var n int
			set.Int(&n, "count", "", 0, "a count")
			err := set.Parse(tt.args)
			if tt.wantErr == nil {
				if err != nil || got != tt.want {
					t.Fatalf("Parse = %v, value %q; want %q", err, got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse succeeded with %q, want an error", got)
			}
			msg := err.Error()
			for _, w := range tt.wantErr {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q lacks %q", msg, w)
				}
			}
			if strings.Contains(msg, secret) || strings.Contains(msg, "\n") {
				t.Errorf("error %q is not one line without the secret", msg)
			}
		})
	}

	set := New("test", mapLookup(nil), io.Discard)
	var v string
	set.Secret(&v, "token", "EF_TOKEN", "", "a token")
	if set.FlagSet().Lookup("token") != nil {
		t.Error("a Secret defines a flag")
	}
	if got, ok := set.Lookup("EF_TOKEN"); !ok || !got.Secret || got.Flag != "" || got.Refused != "token" {
		t.Errorf("Lookup(EF_TOKEN) = %+v, %v", got, ok)
	}
}

func TestUsage(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-T0KEN-value"
	var out bytes.Buffer
	env := map[string]string{"EF_TOKEN": secret}
	set := New("test", mapLookup(env), &out)
	var v values
	define(set, &v)
	if err := set.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if v.sec != secret {
		t.Fatalf("secret = %q", v.sec)
	}
	set.PrintDefaults()
	// A parse error prints the usage too.
	set2 := New("test", mapLookup(env), &out)
	define(set2, &values{})
	_ = set2.Parse([]string{"-nope"})
	usage := out.String()
	if strings.Contains(usage, secret) {
		t.Errorf("usage shows the secret:\n%s", usage)
	}
	for _, want := range []string{"EF_TOKEN or EF_TOKEN_FILE\n", "a token", "(env EF_NAME)", "(env EF_COUNT)", "from the environment only"} {
		if !strings.Contains(usage, want) {
			t.Errorf("usage lacks %q:\n%s", want, usage)
		}
	}
	if strings.Contains(usage, "-token") {
		t.Errorf("usage shows a flag for the secret:\n%s", usage)
	}

	// Ordinary flags show the default they took from the environment.
	out.Reset()
	set = New("test", mapLookup(map[string]string{"EF_NAME": "from-env", "EF_COUNT": "42"}), &out)
	define(set, &values{})
	set.FlagSet().PrintDefaults()
	for _, want := range []string{`(default "from-env")`, "(default 42)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("usage lacks %q:\n%s", want, out.String())
		}
	}

	// A flag without a variable has plain usage.
	var out2 bytes.Buffer
	set2 = New("test", mapLookup(map[string]string{"": "ignored"}), &out2)
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

// TestCheckDocSecret checks that a Secret's row must name VAR_FILE and no flag.
func TestCheckDocSecret(t *testing.T) {
	t.Parallel()
	set := New("t", mapLookup(nil), io.Discard)
	var tok, name string
	set.Secret(&tok, "token", "EF_TOKEN", "", "a token")
	set.String(&name, "name", "EF_NAME", "n", "a name")
	const head = "## s\n\n| variable | flag | default | meaning |\n|---|---|---|---|\n| `EF_NAME` | `-name` | `n` | a name |\n"
	tests := []struct {
		row  string
		want string
	}{
		{"| `EF_TOKEN` or `EF_TOKEN_FILE` | none | | a token |", ""},
		{"| `EF_TOKEN` | none | | a token |", "does not name `EF_TOKEN_FILE`"},
		{"| `EF_TOKEN` or `EF_TOKEN_FILE` | `-token` | | a token |", "the doc gives it the flag `-token`"},
		{"", "the secret EF_TOKEN"},
	}
	for _, tt := range tests {
		got := strings.Join(CheckDoc(head+tt.row+"\n", "s", set.Vars()), "; ")
		if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
			t.Errorf("row %q: problems %q, want %q", tt.row, got, tt.want)
		}
	}
}
