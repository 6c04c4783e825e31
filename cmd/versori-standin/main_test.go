package main

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/versori/versoritest"
)

func TestParseFlags(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pubFile := filepath.Join(dir, "pub.pem")
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name    string
		args    []string
		wantErr string
		check   func(t *testing.T, c config)
	}{
		{name: "defaults", check: func(t *testing.T, c config) {
			if c.addr != "127.0.0.1:8950" || c.opts.APIKey != versoritest.DefaultAPIKey || c.opts.HubID != versoritest.DefaultHubID ||
				c.opts.Faults.RetryAfter != "1" || c.opts.PublicKey != nil {
				t.Errorf("config = %+v", c)
			}
			want := versoritest.Faults{RetryAfter: "1", LateCommitStatus: 504, LateCommitDelay: 300 * time.Millisecond, HangFor: 30 * time.Second}
			if c.opts.Faults != want {
				t.Errorf("faults = %+v, want %+v", c.opts.Faults, want)
			}
		}},
		{name: "faults and requires", args: []string{
			"-latency", "5ms", "-latency-after-commit", "1s", "-error-rate", "0.1", "-rate-limit-rate", "0.2",
			"-drop-rate", "0.05", "-retry-after", "3", "-seed", "9", "-require", "I1=T1", "-require", "I2=T2",
		}, check: func(t *testing.T, c config) {
			want := versoritest.Faults{Latency: 5 * time.Millisecond, LatencyAfterCommit: time.Second,
				ServerErrorRate: 0.1, RateLimitRate: 0.2, DropAfterCommitRate: 0.05, RetryAfter: "3",
				LateCommitStatus: 504, LateCommitDelay: 300 * time.Millisecond, HangFor: 30 * time.Second}
			if c.opts.Faults != want || c.opts.Seed != 9 {
				t.Errorf("faults = %+v, seed %d", c.opts.Faults, c.opts.Seed)
			}
			if !slices.Equal(c.requires, [][2]string{{"I1", "T1"}, {"I2", "T2"}}) {
				t.Errorf("requires = %v", c.requires)
			}
		}},
		{name: "gateway faults", args: []string{
			"-late-commit-rate", "0.1", "-late-commit-status", "502", "-late-commit-delay", "2s",
			"-hang-commit-rate", "0.05", "-hang-for", "1m", "-forbidden-rate", "0.01", "-conflict-rate", "0.02",
			"-too-early-rate", "0.03", "-redirect-rate", "0.04", "-bad-list-rate", "0.5", "-retry-after", "86400",
		}, check: func(t *testing.T, c config) {
			want := versoritest.Faults{RetryAfter: "86400", LateCommitRate: 0.1, LateCommitStatus: 502,
				LateCommitDelay: 2 * time.Second, HangCommitRate: 0.05, HangFor: time.Minute, ForbiddenRate: 0.01,
				ConflictRate: 0.02, TooEarlyRate: 0.03, RedirectRate: 0.04, BadListRate: 0.5}
			if c.opts.Faults != want {
				t.Errorf("faults = %+v, want %+v", c.opts.Faults, want)
			}
		}},
		{name: "jwt", args: []string{"-signing-key-id", "K", "-public-key-file", pubFile}, check: func(t *testing.T, c config) {
			if c.opts.SigningKeyID != "K" || c.opts.PublicKey == nil || !c.opts.PublicKey.Equal(&key.PublicKey) {
				t.Errorf("jwt config = %q %v", c.opts.SigningKeyID, c.opts.PublicKey)
			}
		}},
		{name: "lifecycle", args: []string{"-require-known-users", "-write-fault-ops", "create_end_user,delete_activation"}, check: func(t *testing.T, c config) {
			if !c.opts.RequireKnownUsers || c.opts.Faults.WriteOps != (versoritest.WriteOps{CreateEndUser: true, DeleteActivation: true}) {
				t.Errorf("RequireKnownUsers = %v, WriteOps = %+v", c.opts.RequireKnownUsers, c.opts.Faults.WriteOps)
			}
		}},
		{name: "all write ops", args: []string{"-write-fault-ops", "all"}, check: func(t *testing.T, c config) {
			if c.opts.RequireKnownUsers || c.opts.Faults.WriteOps != versoritest.AllWriteOps {
				t.Errorf("RequireKnownUsers = %v, WriteOps = %+v", c.opts.RequireKnownUsers, c.opts.Faults.WriteOps)
			}
		}},
		{name: "bad write op", args: []string{"-write-fault-ops", "activate"}, wantErr: `-write-fault-ops: "activate" is not a write operation`},
		{name: "rate above 1", args: []string{"-error-rate", "2"}, wantErr: "-error-rate 2 is not within [0, 1]"},
		{name: "rates add above 1", args: []string{"-error-rate", "0.6", "-drop-rate", "0.6"}, wantErr: "the POST fault rates (-error-rate, -rate-limit-rate, -drop-rate,"},
		{name: "new rates add above 1", args: []string{"-late-commit-rate", "0.5", "-hang-commit-rate", "0.3", "-redirect-rate", "0.3"}, wantErr: "more than 1"},
		{name: "bad list rate above 1", args: []string{"-bad-list-rate", "1.5"}, wantErr: "-bad-list-rate 1.5 is not within [0, 1]"},
		{name: "late commit status not a gateway's", args: []string{"-late-commit-status", "404"}, wantErr: "-late-commit-status 404 is not 500, 502, 503 or 504"},
		{name: "negative hang", args: []string{"-hang-for", "-1s"}, wantErr: "-hang-for -1s must not be negative"},
		{name: "negative late commit delay", args: []string{"-late-commit-delay", "-1ms"}, wantErr: "-late-commit-delay -1ms must not be negative"},
		{name: "bad require", args: []string{"-require", "I1"}, wantErr: "INTEGRATION=TEMPLATE"},
		{name: "bad retry-after", args: []string{"-retry-after", "soon"}, wantErr: `-retry-after "soon" is neither seconds nor an HTTP-date`},
		{name: "key id alone", args: []string{"-signing-key-id", "K"}, wantErr: "go together"},
		{name: "key file not PEM", args: []string{"-signing-key-id", "K", "-public-key-file", notPEM}, wantErr: "not PEM"},
		{name: "unknown flag", args: []string{"-nope"}, wantErr: "not defined: -nope (-h lists the flags)"},
		{name: "log format", args: []string{"-log-format", "logfmt"}, wantErr: `-log-format "logfmt": want json or text`},
		{name: "extra argument", args: []string{"serve"}, wantErr: "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseFlags(tt.args, func(string) (string, bool) { return "", false }, io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("err = %v, want one line containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

// TestProcess runs the stand-in as a person does: -h starts with a usage line, a bad flag is one line
// naming the flag with exit 2, and its log is JSON lines (LOG_FORMAT=text for a terminal).
func TestProcess(t *testing.T) {
	t.Parallel()
	bin := testutil.GoBuild(t, "github.com/versori/activator/cmd/versori-standin")
	run := func(env []string, args ...string) (int, string) {
		cmd := exec.Command(bin, args...)
		var out bytes.Buffer
		cmd.Env, cmd.Stdout, cmd.Stderr = env, &out, &out
		_ = cmd.Run()
		return cmd.ProcessState.ExitCode(), out.String()
	}
	if code, out := run(nil, "--help"); code != 0 || !strings.HasPrefix(out, "usage: versori-standin [flags]\n") || !strings.Contains(out, "-error-rate") {
		t.Errorf("--help: exit %d, output:\n%s\nwant exit 0 and a usage line first", code, out)
	}
	if code, out := run(nil, "-error-rate", "2"); code != 2 || out != "versori-standin: -error-rate 2 is not within [0, 1]\n" {
		t.Errorf("-error-rate 2: exit %d, output %q", code, out)
	}
	for _, format := range []string{"", "text"} {
		cmd := exec.Command(bin, "-addr", "127.0.0.1:0")
		var out testutil.SyncBuffer
		cmd.Env, cmd.Stderr = []string{"LOG_FORMAT=" + format}, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		testutil.WaitFor(t, 30*time.Second, "the stand-in listening", func() bool { return strings.Contains(out.String(), "versori stand-in listening") })
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("LOG_FORMAT=%q: after SIGTERM: %v", format, err)
		}
		for _, l := range strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n") {
			if format == "" && !json.Valid([]byte(l)) || format == "text" && !strings.HasPrefix(l, "time=") {
				t.Errorf("LOG_FORMAT=%q: line %q is not in that format", format, l)
			}
		}
	}
}
