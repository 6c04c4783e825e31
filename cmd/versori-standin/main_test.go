package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

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
		{name: "rate above 1", args: []string{"-error-rate", "2"}, wantErr: "not within [0, 1]"},
		{name: "rates add above 1", args: []string{"-error-rate", "0.6", "-drop-rate", "0.6"}, wantErr: "more than 1"},
		{name: "new rates add above 1", args: []string{"-late-commit-rate", "0.5", "-hang-commit-rate", "0.3", "-redirect-rate", "0.3"}, wantErr: "more than 1"},
		{name: "bad list rate above 1", args: []string{"-bad-list-rate", "1.5"}, wantErr: "badListRate"},
		{name: "late commit status not a gateway's", args: []string{"-late-commit-status", "404"}, wantErr: "lateCommitStatus"},
		{name: "negative hang", args: []string{"-hang-for", "-1s"}, wantErr: "hangFor"},
		{name: "negative late commit delay", args: []string{"-late-commit-delay", "-1ms"}, wantErr: "lateCommitDelay"},
		{name: "bad require", args: []string{"-require", "I1"}, wantErr: "INTEGRATION=TEMPLATE"},
		{name: "bad retry-after", args: []string{"-retry-after", "soon"}, wantErr: "retryAfter"},
		{name: "key id alone", args: []string{"-signing-key-id", "K"}, wantErr: "go together"},
		{name: "key file not PEM", args: []string{"-signing-key-id", "K", "-public-key-file", notPEM}, wantErr: "not PEM"},
		{name: "unknown flag", args: []string{"-nope"}, wantErr: "not defined"},
		{name: "extra argument", args: []string{"serve"}, wantErr: "unexpected argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseFlags(tt.args)
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
