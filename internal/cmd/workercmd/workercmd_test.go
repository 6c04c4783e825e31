package workercmd

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/hibiken/asynq"

	"github.com/versori/activator/internal/cmd/envflag"
	"github.com/versori/activator/internal/testutil"
	"github.com/versori/activator/versori"
	"github.com/versori/activator/worker"
)

const (
	settingsAPIKey   = "sk_live_SETTINGS_SECRET_4f3e2d"
	settingsPassword = "s3cr3t"
	settingsRedisURL = "redis://:" + settingsPassword + "@127.0.0.1:6379/0"
	settingsHubID    = "01HZY8J5Q0HVB0000000000000"
)

var settingsKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// settingsKeyFiles writes the test key as PKCS#8 and as PKCS#1 PEM files.
func settingsKeyFiles(t *testing.T) (pkcs8, pkcs1 string) {
	t.Helper()
	dir := t.TempDir()
	der, err := x509.MarshalPKCS8PrivateKey(settingsKey())
	if err != nil {
		t.Fatal(err)
	}
	pkcs8 = filepath.Join(dir, "key.pem")
	if err := os.WriteFile(pkcs8, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	pkcs1 = filepath.Join(dir, "key-pkcs1.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(settingsKey())})
	if err := os.WriteFile(pkcs1, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return pkcs8, pkcs1
}

// settingsEnv is a complete API-key environment changed by mod: a value "" deletes the variable.
func settingsEnv(mod map[string]string) func(string) (string, bool) {
	env := map[string]string{
		"REDIS_URL":       settingsRedisURL,
		"VERSORI_API_KEY": settingsAPIKey,
		"VERSORI_HUB_ID":  settingsHubID,
	}
	for k, v := range mod {
		if v == "" {
			delete(env, k)
		} else {
			env[k] = v
		}
	}
	return func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	}
}

// secretFile writes content to a new file and returns its path, for a _FILE variable.
func secretFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseSettingsErrors(t *testing.T) {
	t.Parallel()
	keyFile, pkcs1File := settingsKeyFiles(t)
	pkcs1PEM, err := os.ReadFile(pkcs1File)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		wantErr string
	}{
		{"no credentials", map[string]string{"VERSORI_API_KEY": ""}, nil, "no Versori credentials"},
		{"api key and signing key id", map[string]string{"VERSORI_SIGNING_KEY_ID": "sk1"}, nil, "not both"},
		{"api key and signing key file", map[string]string{"VERSORI_SIGNING_KEY_FILE": keyFile}, nil, "not both"},
		{"api key flag, refused", map[string]string{"VERSORI_API_KEY": "", "VERSORI_SIGNING_KEY_ID": "sk1", "VERSORI_SIGNING_KEY_FILE": keyFile},
			[]string{"-versori-api-key=" + settingsAPIKey}, "-versori-api-key is not accepted: a secret on the command line shows in ps and /debug/pprof/cmdline; set VERSORI_API_KEY, or VERSORI_API_KEY_FILE to a file holding it, instead"},
		{"redis url flag, refused", nil, []string{"-concurrency=2", "--redis-url", settingsRedisURL}, "-redis-url is not accepted"},
		{"api key and its file", map[string]string{"VERSORI_API_KEY_FILE": keyFile}, nil, "VERSORI_API_KEY and VERSORI_API_KEY_FILE are both set: set one of them"},
		{"api key file missing", map[string]string{"VERSORI_API_KEY": "", "VERSORI_API_KEY_FILE": "/nonexistent/key"}, nil, "VERSORI_API_KEY_FILE: cannot read it: open /nonexistent/key"},
		{"pprof without ADMIN_ADDR", map[string]string{"PPROF": "true", "ADMIN_ADDR": ""}, []string{"-admin-addr="}, "PPROF needs ADMIN_ADDR"},
		{"queue UI without ADMIN_ADDR", map[string]string{"ADMIN_UI": "true"}, []string{"-admin-addr="}, "ADMIN_UI needs ADMIN_ADDR"},
		{"signing key id without file", map[string]string{"VERSORI_API_KEY": "", "VERSORI_SIGNING_KEY_ID": "sk1"}, nil, "needs both"},
		{"signing key file without id", map[string]string{"VERSORI_API_KEY": "", "VERSORI_SIGNING_KEY_FILE": keyFile}, nil, "needs both"},
		{"signing key file missing", map[string]string{"VERSORI_API_KEY": "", "VERSORI_SIGNING_KEY_ID": "sk1",
			"VERSORI_SIGNING_KEY_FILE": filepath.Join(t.TempDir(), "nope.pem")}, nil, "VERSORI_SIGNING_KEY_FILE"},
		{"signing key file PKCS#1", map[string]string{"VERSORI_API_KEY": "", "VERSORI_SIGNING_KEY_ID": "sk1",
			"VERSORI_SIGNING_KEY_FILE": pkcs1File}, nil, "PKCS#8"},
		{"missing hub id", map[string]string{"VERSORI_HUB_ID": ""}, nil, "VERSORI_HUB_ID"},
		{"concurrency 0", map[string]string{"WORKER_CONCURRENCY": "0"}, nil, "WORKER_CONCURRENCY"},
		{"concurrency negative flag", nil, []string{"-concurrency=-3"}, "WORKER_CONCURRENCY"},
		{"concurrency abc", map[string]string{"WORKER_CONCURRENCY": "abc"}, nil, "WORKER_CONCURRENCY"},
		{"servers 65", map[string]string{"WORKER_SERVERS": "65"}, nil, "WORKER_SERVERS"},
		{"servers negative", map[string]string{"WORKER_SERVERS": "-2"}, nil, "WORKER_SERVERS"},
		{"prefetch negative", map[string]string{"WORKER_PREFETCH": "-2"}, nil, "WORKER_PREFETCH"},
		{"log flush negative", map[string]string{"LOG_FLUSH_INTERVAL": "-1s"}, nil, "LOG_FLUSH_INTERVAL"},
		{"blank queue", map[string]string{"QUEUE": "  "}, nil, "QUEUE"},
		{"timeout negative", map[string]string{"VERSORI_TIMEOUT": "-1s"}, nil, "VERSORI_TIMEOUT"},
		{"timeout garbage", map[string]string{"VERSORI_TIMEOUT": "soon"}, nil, "VERSORI_TIMEOUT"},
		{"shutdown grace negative", map[string]string{"SHUTDOWN_GRACE": "-1s"}, nil, "SHUTDOWN_GRACE"},
		{"redis scheme", map[string]string{"REDIS_URL": "http://:" + settingsPassword + "@127.0.0.1:6379/0"}, nil, "scheme"},
		{"redis bad db", map[string]string{"REDIS_URL": "redis://:" + settingsPassword + "@127.0.0.1:6379/abc"}, nil, "REDIS_URL"},
		{"redis no host", map[string]string{"REDIS_URL": "redis://"}, nil, "no host"},
		{"redis not a URL", map[string]string{"REDIS_URL": "redis://:" + settingsPassword + "@[::1"}, nil, "REDIS_URL"},
		{"log level", map[string]string{"LOG_LEVEL": "loud"}, nil, "LOG_LEVEL"},
		{"settle time negative", map[string]string{"SETTLE_TIME": "-1s"}, nil, "SETTLE_TIME"},
		{"max retry-after negative", map[string]string{"MAX_RETRY_AFTER": "-1m"}, nil, "MAX_RETRY_AFTER"},
		{"restart guard not a bool", map[string]string{"REDIS_RESTART_GUARD": "sometimes"}, nil, "REDIS_RESTART_GUARD"},
		{"positional arg", nil, []string{"extra"}, "unexpected argument"},
		{"positional arg after flags", nil, []string{"-concurrency=2", "extra"}, "unexpected argument"},
		{"unknown flag", nil, []string{"-nope"}, "nope"},
		{"bad flag value", nil, []string{"-concurrency=lots"}, "concurrency"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var usage bytes.Buffer
			_, err := ParseSettings(tt.args, settingsEnv(tt.env), &usage)
			if err == nil {
				t.Fatalf("ParseSettings succeeded, want an error containing %q", tt.wantErr)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.wantErr) {
				t.Errorf("error %q does not contain %q", msg, tt.wantErr)
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("error %q is more than one line", msg)
			}
			for name, out := range map[string]string{"error": msg, "usage output": usage.String()} {
				if strings.Contains(out, settingsAPIKey) {
					t.Errorf("%s contains the API key: %s", name, out)
				}
				if strings.Contains(out, settingsPassword) {
					t.Errorf("%s contains the Redis password: %s", name, out)
				}
				if strings.Contains(out, "PRIVATE KEY") || strings.Contains(out, string(pkcs1PEM[40:80])) {
					t.Errorf("%s contains key material: %s", name, out)
				}
			}
		})
	}
}

func TestParseSettingsHelp(t *testing.T) {
	t.Parallel()
	var usage bytes.Buffer
	_, err := ParseSettings([]string{"-h"}, settingsEnv(map[string]string{"QUEUE": "q-from-env"}), &usage)
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("ParseSettings(-h) = %v, want flag.ErrHelp", err)
	}
	out := usage.String()
	for _, want := range []string{"REDIS_URL or REDIS_URL_FILE\n", "(default redis://127.0.0.1:6379/0)", "VERSORI_API_KEY or VERSORI_API_KEY_FILE\n", `(default "q-from-env")`,
		"-breaker-min-calls uint\n", "(env BREAKER_MIN_CALLS) (default 20)\n", "-admin-addr string", `(env ADMIN_ADDR) (default "127.0.0.1:9465")`} {
		if !strings.Contains(out, want) {
			t.Errorf("usage lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, settingsAPIKey) || strings.Contains(out, settingsPassword) {
		t.Errorf("usage shows a secret:\n%s", out)
	}
}

func TestParseSettings(t *testing.T) {
	t.Parallel()
	keyFile, _ := settingsKeyFiles(t)
	jwtEnv := map[string]string{"VERSORI_API_KEY": "", "VERSORI_SIGNING_KEY_ID": "sk1", "VERSORI_SIGNING_KEY_FILE": keyFile}
	tests := []struct {
		name  string
		env   map[string]string
		args  []string
		check func(t *testing.T, s Settings)
	}{
		{"api key defaults", nil, nil, func(t *testing.T, s Settings) {
			if s.PerUserAuth {
				t.Error("PerUserAuth with an API key")
			}
			if s.Versori.Auth != versori.APIKey(settingsAPIKey) {
				t.Errorf("Auth = %#v", s.Versori.Auth)
			}
			if s.RedisURL != settingsRedisURL || s.Versori.HubID != settingsHubID || s.Versori.BaseURL != versori.DefaultBaseURL {
				t.Errorf("RedisURL %q HubID %q BaseURL %q", s.RedisURL, s.Versori.HubID, s.Versori.BaseURL)
			}
			if s.Concurrency != 50 || s.Servers != 2 || s.Queue != "activations" || s.MetricsAddr != ":9464" {
				t.Errorf("Concurrency %d Servers %d Queue %q MetricsAddr %q", s.Concurrency, s.Servers, s.Queue, s.MetricsAddr)
			}
			if s.Versori.Timeout != 30*time.Second || s.ShutdownGrace != 10*time.Second || s.SweepInterval != 30*time.Second || s.PollInterval != 100*time.Millisecond {
				t.Errorf("Timeout %s ShutdownGrace %s SweepInterval %s PollInterval %s", s.Versori.Timeout, s.ShutdownGrace, s.SweepInterval, s.PollInterval)
			}
			if p := s.Policy; p.Base != time.Second || p.Cap != 10*time.Minute || p.RateLimitWait != 5*time.Second || p.QuickRetries != 2 {
				t.Errorf("Policy = %+v", p)
			}
			if p := s.Policy; p.SettleTime != 2*time.Minute || p.MaxRetryAfter != 15*time.Minute || s.NoRedisRestartGuard {
				t.Errorf("SettleTime %s MaxRetryAfter %s NoRedisRestartGuard %v", p.SettleTime, p.MaxRetryAfter, s.NoRedisRestartGuard)
			}
			if s.LogLevel != slog.LevelInfo || s.LogFlush != 100*time.Millisecond {
				t.Errorf("LogLevel = %v, LogFlush %s", s.LogLevel, s.LogFlush)
			}
			if s.Prefetch != 10 {
				t.Errorf("Prefetch = %d, want a fifth of the concurrency", s.Prefetch)
			}
		}},
		{"prefetch at least one", map[string]string{"WORKER_CONCURRENCY": "3"}, nil, func(t *testing.T, s Settings) {
			if s.Prefetch != 1 {
				t.Errorf("Prefetch = %d, want 1", s.Prefetch)
			}
		}},
		{"prefetch and log flush off", map[string]string{"WORKER_PREFETCH": "0", "LOG_FLUSH_INTERVAL": "0"}, nil, func(t *testing.T, s Settings) {
			if s.Prefetch != 0 || s.LogFlush != 0 {
				t.Errorf("Prefetch = %d, LogFlush %s; want both off", s.Prefetch, s.LogFlush)
			}
		}},
		{"default redis url", map[string]string{"REDIS_URL": ""}, nil, func(t *testing.T, s Settings) {
			if s.RedisURL != "redis://127.0.0.1:6379/0" {
				t.Errorf("RedisURL = %q", s.RedisURL)
			}
		}},
		{"api key and Redis URL from files", map[string]string{"VERSORI_API_KEY": "", "VERSORI_API_KEY_FILE": secretFile(t, "file-key\n"),
			"REDIS_URL": "", "REDIS_URL_FILE": secretFile(t, settingsRedisURL)}, nil, func(t *testing.T, s Settings) {
			if s.Versori.Auth != versori.APIKey("file-key") || s.PerUserAuth || s.RedisURL != settingsRedisURL {
				t.Errorf("Auth = %#v, PerUserAuth %v", s.Versori.Auth, s.PerUserAuth)
			}
		}},
		{"jwt", jwtEnv, nil, func(t *testing.T, s Settings) {
			if !s.PerUserAuth {
				t.Error("PerUserAuth false with a signing key")
			}
			auth, ok := s.Versori.Auth.(*versori.JWTAuth)
			if !ok {
				t.Fatalf("Auth = %T, want *versori.JWTAuth", s.Versori.Auth)
			}
			tok, err := auth.Token("user-1")
			if err != nil {
				t.Fatal(err)
			}
			var claims jwt.RegisteredClaims
			if _, err := jwt.ParseWithClaims(tok, &claims, func(*jwt.Token) (any, error) { return &settingsKey().PublicKey, nil }); err != nil {
				t.Fatalf("token does not verify with the key file's public key: %v", err)
			}
			if claims.Issuer != versori.JWTIssuerPrefix+"sk1" || claims.Subject != "user-1" {
				t.Errorf("claims = %+v", claims)
			}
		}},
		{"jwt by flags", map[string]string{"VERSORI_API_KEY": ""},
			[]string{"-versori-signing-key-id=sk2", "-versori-signing-key-file", keyFile}, func(t *testing.T, s Settings) {
				if _, ok := s.Versori.Auth.(*versori.JWTAuth); !ok || !s.PerUserAuth {
					t.Errorf("Auth = %T, PerUserAuth %v", s.Versori.Auth, s.PerUserAuth)
				}
			}},
		{"env values", map[string]string{
			"WORKER_CONCURRENCY": "8", "WORKER_SERVERS": "64", "QUEUE": "eu", "LOG_LEVEL": "debug", "VERSORI_TIMEOUT": "5s",
			"RETRY_BASE": "2s", "RETRY_CAP": "1m", "RATE_LIMIT_WAIT": "9s", "QUICK_RETRIES": "0", "METRICS_ADDR": "127.0.0.1:0",
			"VERSORI_BASE_URL": "http://127.0.0.1:1/api", "SHUTDOWN_GRACE": "1m", "DLQ_SWEEP_INTERVAL": "5s", "POLL_INTERVAL": "250ms",
			"SETTLE_TIME": "45s", "MAX_RETRY_AFTER": "3m", "REDIS_RESTART_GUARD": "false",
		}, nil, func(t *testing.T, s Settings) {
			if s.Policy.SettleTime != 45*time.Second || s.Policy.MaxRetryAfter != 3*time.Minute || !s.NoRedisRestartGuard {
				t.Errorf("SettleTime %s MaxRetryAfter %s NoRedisRestartGuard %v", s.Policy.SettleTime, s.Policy.MaxRetryAfter, s.NoRedisRestartGuard)
			}
			if s.Concurrency != 8 || s.Servers != 64 || s.Queue != "eu" || s.LogLevel != slog.LevelDebug || s.Versori.Timeout != 5*time.Second {
				t.Errorf("Concurrency %d Servers %d Queue %q LogLevel %v Timeout %s", s.Concurrency, s.Servers, s.Queue, s.LogLevel, s.Versori.Timeout)
			}
			if p := s.Policy; p.Base != 2*time.Second || p.Cap != time.Minute || p.RateLimitWait != 9*time.Second || p.QuickRetries != 0 {
				t.Errorf("Policy = %+v", p)
			}
			if s.MetricsAddr != "127.0.0.1:0" || s.Versori.BaseURL != "http://127.0.0.1:1/api" || s.ShutdownGrace != time.Minute ||
				s.SweepInterval != 5*time.Second || s.PollInterval != 250*time.Millisecond {
				t.Errorf("Settings = %+v", s)
			}
		}},
		{"flags beat env", map[string]string{"WORKER_CONCURRENCY": "8", "QUEUE": "eu", "LOG_LEVEL": "debug"},
			[]string{"-concurrency=3", "-queue=us", "-log-level=WARN"}, func(t *testing.T, s Settings) {
				if s.Concurrency != 3 || s.Queue != "us" || s.LogLevel != slog.LevelWarn || s.RedisURL != settingsRedisURL {
					t.Errorf("Concurrency %d Queue %q LogLevel %v RedisURL %q", s.Concurrency, s.Queue, s.LogLevel, s.RedisURL)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var usage bytes.Buffer
			s, err := ParseSettings(tt.args, settingsEnv(tt.env), &usage)
			if err != nil {
				t.Fatalf("ParseSettings: %v", err)
			}
			if usage.Len() != 0 {
				t.Errorf("usage printed on success:\n%s", usage.String())
			}
			tt.check(t, s)
		})
	}
}

func TestAdminUISettings(t *testing.T) {
	t.Parallel()
	env := func(mod map[string]string) func(string) (string, bool) {
		e := map[string]string{"REDIS_URL": "redis://127.0.0.1:6379/3", "VERSORI_API_KEY": "k", "VERSORI_HUB_ID": settingsHubID}
		for k, v := range mod {
			e[k] = v
		}
		return func(k string) (string, bool) { v, ok := e[k]; return v, ok }
	}
	var out bytes.Buffer
	s, err := ParseSettings(nil, env(nil), &out)
	if err != nil || s.AdminUI.Enabled || s.AdminUI.Write || s.AdminUI.Redis != nil {
		t.Errorf("defaults: AdminUI %+v, %v; want off", s.AdminUI, err)
	}
	s, err = ParseSettings(nil, env(map[string]string{"ADMIN_UI": "true"}), &out)
	if err != nil || !s.AdminUI.Enabled || s.AdminUI.Write || s.AdminUI.Redis == nil {
		t.Errorf("ADMIN_UI=true: AdminUI %+v, %v; want on, read-only, with a Redis option", s.AdminUI, err)
	}
	if o, ok := s.AdminUI.Redis.(asynq.RedisClientOpt); !ok || o.Addr != "127.0.0.1:6379" || o.DB != 3 {
		t.Errorf("ADMIN_UI Redis option = %#v, want REDIS_URL's", s.AdminUI.Redis)
	}
	s, err = ParseSettings([]string{"-admin-ui", "-admin-ui-write", "-admin-ui-prometheus-url=http://127.0.0.1:9090"}, env(nil), &out)
	if err != nil || !s.AdminUI.Enabled || !s.AdminUI.Write || s.AdminUI.PrometheusURL != "http://127.0.0.1:9090" {
		t.Errorf("flags: AdminUI %+v, %v", s.AdminUI, err)
	}
	for _, c := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"write without ui", nil, map[string]string{"ADMIN_UI_WRITE": "true"}, "need ADMIN_UI=true"},
		{"no listener", []string{"-admin-addr="}, map[string]string{"ADMIN_UI": "true"}, "ADMIN_UI needs ADMIN_ADDR"},
		{"bad prometheus", nil, map[string]string{"ADMIN_UI": "1", "ADMIN_UI_PROMETHEUS_URL": "prometheus:9090"}, "ADMIN_UI_PROMETHEUS_URL"},
		{"not a bool", nil, map[string]string{"ADMIN_UI": "yes"}, "ADMIN_UI="},
	} {
		if _, err := ParseSettings(c.args, env(c.env), &out); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one containing %q", c.name, err, c.want)
		}
	}
	out.Reset()
	if _, err := ParseSettings([]string{"-h"}, env(nil), &out); err == nil {
		t.Fatal("-h succeeded")
	}
	for _, f := range []string{"-admin-ui", "ADMIN_UI)", "-admin-ui-write", "ADMIN_UI_WRITE)", "no auth of its own", "-admin-addr", "ADMIN_ADDR)"} {
		if !strings.Contains(out.String(), f) {
			t.Errorf("usage does not mention %q", f)
		}
	}
}

// TestPprofNeedsAdminAddr checks that PPROF without the admin listener is refused in one line, and
// that it no longer needs METRICS_ADDR, which serves no profiles.
func TestPprofNeedsAdminAddr(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	env := map[string]string{"VERSORI_API_KEY": "k", "VERSORI_HUB_ID": settingsHubID, "PPROF": "true"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	if _, err := ParseSettings([]string{"-admin-addr="}, lookup, &out); err == nil || !strings.Contains(err.Error(), "PPROF needs ADMIN_ADDR") {
		t.Errorf("PPROF without ADMIN_ADDR: %v, want a one-line refusal", err)
	}
	s, err := ParseSettings([]string{"-metrics-addr="}, lookup, &out)
	if err != nil || !s.Pprof || s.AdminAddr != "127.0.0.1:9465" {
		t.Errorf("PPROF without METRICS_ADDR: %v, Pprof %v, AdminAddr %q; want accepted, on the default ADMIN_ADDR", err, s.Pprof, s.AdminAddr)
	}
}

// TestParseSettingsNamesVariables checks that a value worker.Config.Validate refuses, which it names
// by its field, reaches the user naming the variable to set, and the other variables its message
// mentions.
func TestParseSettingsNamesVariables(t *testing.T) {
	t.Parallel()
	tests := []struct {
		env  map[string]string
		args []string
		want string
	}{
		{map[string]string{"REDIS_URL": "http://127.0.0.1:6379/0"}, nil, `REDIS_URL has scheme "http": want redis, rediss, redis-sentinel, rediss-sentinel, redis-cluster or rediss-cluster`},
		{map[string]string{"REDIS_URL": "redis://127.0.0.1:6379/abc"}, nil, "REDIS_URL (redis://127.0.0.1:6379/abc) is not usable: check the database number and options"},
		{map[string]string{"REDIS_URL": "redis://h:6379/%zz"}, nil, "REDIS_URL cannot be parsed: want redis://[:password@]host:port/db, rediss://…, redis-sentinel://host:port[,host:port…]?master=NAME, redis-cluster://host:port[,host:port…], or rediss-sentinel:// or rediss-cluster:// for TLS"},
		{map[string]string{"REDIS_URL": "redis-sentinel://127.0.0.1:26379"}, nil, "REDIS_URL (redis-sentinel://127.0.0.1:26379) names no master: add ?master=NAME, the name the Sentinels monitor"},
		{map[string]string{"WORKER_CONCURRENCY": "0"}, nil, "WORKER_CONCURRENCY must be at least 1, got 0"},
		{nil, []string{"-concurrency=-3"}, "WORKER_CONCURRENCY must be at least 1, got -3"},
		{map[string]string{"WORKER_PREFETCH": "-2"}, nil, "WORKER_PREFETCH must be 0 or more (-1: a fifth of WORKER_CONCURRENCY), got -2"},
		{map[string]string{"WORKER_SERVERS": "65"}, nil, "WORKER_SERVERS must be 1 to 64 (-1: one per 25 of WORKER_CONCURRENCY), got 65"},
		{map[string]string{"QUEUE": " "}, nil, "QUEUE must not be empty"},
		{map[string]string{"VERSORI_TIMEOUT": "-1s"}, nil, "VERSORI_TIMEOUT must be positive, got -1s"},
		{map[string]string{"VERSORI_BASE_URL": "ftp://x"}, nil, `VERSORI_BASE_URL "ftp://x" is not an http(s) URL`},
		{map[string]string{"VERSORI_HUB_ID": ""}, nil, "VERSORI_HUB_ID is required: the worker looks up a user's activations before retrying a call whose outcome is unknown"},
		{map[string]string{"VERSORI_HUB_ID": "hub1"}, nil, `VERSORI_HUB_ID "hub1" is not a ULID (26 Crockford base32 characters)`},
		{nil, []string{"-versori-hub-id=hub1"}, `VERSORI_HUB_ID "hub1" is not a ULID (26 Crockford base32 characters)`},
		{map[string]string{"RETRY_CAP": "500ms"}, nil, "RETRY_CAP must be at least RETRY_BASE (1s), got 500ms"},
		{map[string]string{"RETRY_BASE": "-1s"}, nil, "RETRY_BASE must be positive, got -1s"},
		{map[string]string{"QUICK_RETRIES": "-1"}, nil, "QUICK_RETRIES must not be negative, got -1"},
		{map[string]string{"RATE_LIMIT_WAIT": "-1s"}, nil, "RATE_LIMIT_WAIT must be positive, got -1s"},
		{map[string]string{"DLQ_MAX_AGE": "-1h"}, nil, "DLQ_MAX_AGE must not be negative, got -1h0m0s"},
		{map[string]string{"DLQ_MAX_ENTRIES": "-1"}, nil, "DLQ_MAX_ENTRIES must not be negative, got -1"},
		{map[string]string{"DLQ_SWEEP_INTERVAL": "-1s"}, nil, "DLQ_SWEEP_INTERVAL must be positive, got -1s"},
		{map[string]string{"POLL_INTERVAL": "-1s"}, nil, "POLL_INTERVAL must be positive, got -1s"},
		{map[string]string{"PROBE_INTERVAL": "-1s"}, nil, "PROBE_INTERVAL must be positive, got -1s"},
		{map[string]string{"VERSORI_RATE_LIMIT": "-1"}, nil, "VERSORI_RATE_LIMIT must not be negative, got -1"},
		{map[string]string{"VERSORI_RATE_BURST": "-1"}, nil, "VERSORI_RATE_BURST must be at least 1, got -1"},
		{map[string]string{"MAX_JOB_AGE": "-1h"}, nil, "MAX_JOB_AGE must not be negative, got -1h0m0s"},
		{map[string]string{"BREAKER_MIN_CALLS": "-1"}, nil, `BREAKER_MIN_CALLS="-1" is not a whole number of 0 or more`},
		{map[string]string{"BREAKER_FAILURE_RATIO": "2"}, nil, "BREAKER_FAILURE_RATIO must be in (0, 1], got 2"},
		{map[string]string{"BREAKER_WINDOW": "-1s"}, nil, "BREAKER_WINDOW must be positive, got -1s"},
		{map[string]string{"BREAKER_COOLDOWN": "-1s"}, nil, "BREAKER_COOLDOWN must be positive, got -1s"},
		{map[string]string{"ADMIN_UI_WRITE": "true"}, nil, "ADMIN_UI_WRITE and ADMIN_UI_PROMETHEUS_URL need ADMIN_UI=true"},
		{map[string]string{"ADMIN_UI_PROMETHEUS_URL": "http://p:9090"}, nil, "ADMIN_UI_PROMETHEUS_URL and ADMIN_UI_WRITE need ADMIN_UI=true"},
		{map[string]string{"ADMIN_UI": "true"}, []string{"-admin-addr="}, "ADMIN_UI needs ADMIN_ADDR: the queue UI is served only on the admin listener"},
		{map[string]string{"PPROF": "true"}, []string{"-admin-addr="}, "PPROF needs ADMIN_ADDR: profiles are served only on the admin listener"},
	}
	for _, tt := range tests {
		_, err := ParseSettings(tt.args, settingsEnv(tt.env), io.Discard)
		if err == nil || err.Error() != tt.want {
			t.Errorf("env %v args %v: err = %v, want %q", tt.env, tt.args, err, tt.want)
		}
	}
}

// TestMetricsAddrEmpty checks that METRICS_ADDR set but empty turns the listener off, as
// docs/configuration.md says, where another empty variable counts as unset; unset, it is the default.
func TestMetricsAddrEmpty(t *testing.T) {
	t.Parallel()
	base := settingsEnv(nil)
	withEnv := func(env map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) {
			if v, ok := env[k]; ok {
				return v, true
			}
			return base(k)
		}
	}
	for _, tt := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"unset", nil, nil, ":9464"},
		{"set", map[string]string{"METRICS_ADDR": "127.0.0.1:9999"}, nil, "127.0.0.1:9999"},
		{"set but empty", map[string]string{"METRICS_ADDR": ""}, nil, ""},
		{"empty flag", nil, []string{"-metrics-addr="}, ""},
		{"flag beats empty variable", map[string]string{"METRICS_ADDR": ""}, []string{"-metrics-addr=:9465"}, ":9465"},
		// Other empty variables still count as unset.
		{"empty QUEUE", map[string]string{"METRICS_ADDR": "", "QUEUE": ""}, nil, ""},
	} {
		s, err := ParseSettings(tt.args, withEnv(tt.env), io.Discard)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if s.MetricsAddr != tt.want || s.Queue != "activations" {
			t.Errorf("%s: MetricsAddr %q Queue %q, want %q and the default queue", tt.name, s.MetricsAddr, s.Queue, tt.want)
		}
	}
	_, err := ParseSettings(nil, withEnv(map[string]string{"ADMIN_ADDR": "", "PPROF": "true"}), io.Discard)
	if err == nil || err.Error() != "PPROF needs ADMIN_ADDR: profiles are served only on the admin listener" {
		t.Errorf("PPROF with ADMIN_ADDR= : %v", err)
	}
}

// TestZeroMeansDefault checks that 0, by variable or by flag, for a setting whose zero means "not
// set" in a worker.Config (worker.New gives it its default) gives the default here too, and that a
// negative value is still refused in one line naming the variable.
func TestZeroMeansDefault(t *testing.T) {
	t.Parallel()
	d := worker.DefaultConfig()
	tests := []struct {
		env, flag string
		negative  string
		got       func(Settings) any
		want      any
		wantErr   string
	}{
		// -1 is ServersAuto, worked out for the default WORKER_CONCURRENCY.
		{"WORKER_SERVERS", "servers", "-2", func(s Settings) any { return s.Servers }, d.WithDefaults().Servers,
			"WORKER_SERVERS must be 1 to 64 (-1: one per 25 of WORKER_CONCURRENCY), got -2"},
		{"SHUTDOWN_GRACE", "shutdown-grace", "-1s", func(s Settings) any { return s.ShutdownGrace }, d.ShutdownGrace,
			"SHUTDOWN_GRACE must be positive, got -1s"},
		{"DLQ_SWEEP_INTERVAL", "dlq-sweep-interval", "-1s", func(s Settings) any { return s.SweepInterval }, d.SweepInterval,
			"DLQ_SWEEP_INTERVAL must be positive, got -1s"},
		{"POLL_INTERVAL", "poll-interval", "-1s", func(s Settings) any { return s.PollInterval }, d.PollInterval,
			"POLL_INTERVAL must be positive, got -1s"},
		{"PROBE_INTERVAL", "probe-interval", "-1s", func(s Settings) any { return s.ProbeInterval }, d.ProbeInterval,
			"PROBE_INTERVAL must be positive, got -1s"},
		{"VERSORI_RATE_BURST", "rate-burst", "-1", func(s Settings) any { return s.RateBurst }, d.RateBurst,
			"VERSORI_RATE_BURST must be at least 1, got -1"},
		{"VERSORI_TIMEOUT", "versori-timeout", "-1s", func(s Settings) any { return s.Versori.Timeout }, d.Versori.Timeout,
			"VERSORI_TIMEOUT must be positive, got -1s"},
		{"RETRY_BASE", "retry-base", "-1s", func(s Settings) any { return s.Policy.Base }, d.Policy.Base,
			"RETRY_BASE must be positive, got -1s"},
		{"RETRY_CAP", "retry-cap", "-1s", func(s Settings) any { return s.Policy.Cap }, d.Policy.Cap,
			"RETRY_CAP must be at least RETRY_BASE (1s), got -1s"},
		{"RATE_LIMIT_WAIT", "rate-limit-wait", "-1s", func(s Settings) any { return s.Policy.RateLimitWait }, d.Policy.RateLimitWait,
			"RATE_LIMIT_WAIT must be positive, got -1s"},
		{"SETTLE_TIME", "settle-time", "-1s", func(s Settings) any { return s.Policy.SettleTime }, d.Policy.SettleTime,
			"SETTLE_TIME must be positive, got -1s"},
		{"MAX_RETRY_AFTER", "max-retry-after", "-1s", func(s Settings) any { return s.Policy.MaxRetryAfter }, d.Policy.MaxRetryAfter,
			"MAX_RETRY_AFTER must be positive, got -1s"},
		{"BREAKER_WINDOW", "breaker-window", "-1s", func(s Settings) any { return s.Breaker.Window }, d.Breaker.Window,
			"BREAKER_WINDOW must be positive, got -1s"},
		{"BREAKER_MIN_CALLS", "breaker-min-calls", "-1", func(s Settings) any { return s.Breaker.MinCalls }, d.Breaker.MinCalls,
			`BREAKER_MIN_CALLS="-1" is not a whole number of 0 or more`},
		{"BREAKER_FAILURE_RATIO", "breaker-failure-ratio", "-0.5", func(s Settings) any { return s.Breaker.FailureRatio }, d.Breaker.FailureRatio,
			"BREAKER_FAILURE_RATIO must be in (0, 1], got -0.5"},
		{"BREAKER_COOLDOWN", "breaker-cooldown", "-1s", func(s Settings) any { return s.Breaker.Cooldown }, d.Breaker.Cooldown,
			"BREAKER_COOLDOWN must be positive, got -1s"},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			t.Parallel()
			for _, in := range []struct {
				name string
				env  map[string]string
				args []string
			}{
				{tt.env + "=0", map[string]string{tt.env: "0"}, nil},
				{"-" + tt.flag + "=0", nil, []string{"-" + tt.flag + "=0"}},
			} {
				s, err := ParseSettings(in.args, settingsEnv(in.env), io.Discard)
				if err != nil {
					t.Errorf("%s: %v, want the default", in.name, err)
				} else if got := tt.got(s); got != tt.want {
					t.Errorf("%s: got %v, want the default %v", in.name, got, tt.want)
				}
			}
			_, err := ParseSettings(nil, settingsEnv(map[string]string{tt.env: tt.negative}), io.Discard)
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("%s=%s: err = %v, want %q", tt.env, tt.negative, err, tt.wantErr)
			}
		})
	}
}

// TestConfigurationDoc checks docs/configuration.md's worker table against the flags: every
// variable with its flag and default, and nothing else.
func TestConfigurationDoc(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range envflag.CheckDoc(string(doc), "worker", Vars()) {
		t.Error("docs/configuration.md: " + p)
	}
}

// TestMainMetricsAddrInUse checks that a METRICS_ADDR the worker cannot listen on stops it with one
// line naming the variable, and exit 2.
func TestMainMetricsAddrInUse(t *testing.T) {
	t.Parallel()
	db := testutil.Redis(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	env := settingsEnv(map[string]string{"REDIS_URL": db.URL(), "METRICS_ADDR": ln.Addr().String()})
	var stderr bytes.Buffer
	if code := Main(context.Background(), nil, env, io.Discard, &stderr); code != 2 {
		t.Fatalf("Main = %d, want 2; stderr:\n%s", code, stderr.String())
	}
	want := "worker: METRICS_ADDR " + ln.Addr().String() + " cannot be listened on: "
	if out := stderr.String(); !strings.HasPrefix(out, want) || strings.Count(out, "\n") != 1 {
		t.Errorf("stderr = %q, want one line starting %q", out, want)
	}
}

// TestMainAdminAddrRefused checks that an ADMIN_ADDR the worker cannot listen on, taken or not an
// address, stops it with one line naming the variable, and exit 2, when the profiler or the queue
// UI is on; with both off, ADMIN_ADDR is not even opened.
func TestMainAdminAddrRefused(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() }) // after the parallel subtests
	tests := []struct {
		name string
		env  map[string]string
		want string // the start of the one line; "" for a worker that starts
	}{
		{"taken, pprof", map[string]string{"ADMIN_ADDR": ln.Addr().String(), "PPROF": "true"}, "worker: ADMIN_ADDR " + ln.Addr().String() + " cannot be listened on: "},
		{"taken, queue UI", map[string]string{"ADMIN_ADDR": ln.Addr().String(), "ADMIN_UI": "true"}, "worker: ADMIN_ADDR " + ln.Addr().String() + " cannot be listened on: "},
		{"not an address", map[string]string{"ADMIN_ADDR": "no-port", "PPROF": "true"}, "worker: ADMIN_ADDR no-port cannot be listened on: "},
		{"taken, both off", map[string]string{"ADMIN_ADDR": ln.Addr().String()}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			db := testutil.Redis(t)
			tt.env["REDIS_URL"], tt.env["METRICS_ADDR"] = db.URL(), "127.0.0.1:0"
			var stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			code := Main(ctx, nil, settingsEnv(tt.env), io.Discard, &stderr)
			out := stderr.String()
			if tt.want == "" {
				if code != 0 || strings.Contains(out, "ADMIN_ADDR") {
					t.Errorf("Main = %d, want 0 (stopped by its context); stderr:\n%s", code, out)
				}
				return
			}
			if code != 2 || !strings.HasPrefix(out, tt.want) || strings.Count(out, "\n") != 1 {
				t.Errorf("Main = %d, stderr = %q; want 2 and one line starting %q", code, out, tt.want)
			}
		})
	}
}
