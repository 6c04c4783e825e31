package versori

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// testKey is one RSA key shared by the tests of this file; generating one takes a while.
var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// testClock is a settable clock for WithJWTClock.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// parseToken verifies tok with the public half of key, as of now.
func parseToken(t *testing.T, tok string, key *rsa.PrivateKey, now time.Time) (*jwt.Token, *jwt.RegisteredClaims) {
	t.Helper()
	var claims jwt.RegisteredClaims
	parsed, err := jwt.ParseWithClaims(tok, &claims, func(tk *jwt.Token) (any, error) {
		return &key.PublicKey, nil
	}, jwt.WithValidMethods([]string{"RS256"}), jwt.WithTimeFunc(func() time.Time { return now }),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt())
	if err != nil {
		t.Fatalf("parsing token: %v", err)
	}
	return parsed, &claims
}

func TestJWTToken(t *testing.T) {
	t.Parallel()
	key := testKey()
	start := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for _, lifetime := range []time.Duration{0, time.Minute, time.Hour} {
		t.Run(fmt.Sprint(lifetime), func(t *testing.T) {
			t.Parallel()
			opts := []JWTOption{WithJWTClock(func() time.Time { return start })}
			want := defaultJWTLifetime
			if lifetime > 0 {
				opts = append(opts, withJWTLifetime(lifetime))
				want = lifetime
			}
			a, err := NewJWTAuth("sk1", key, opts...)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := a.Token("user-1")
			if err != nil {
				t.Fatal(err)
			}
			parsed, claims := parseToken(t, tok, key, start)
			if alg := parsed.Method.Alg(); alg != "RS256" {
				t.Errorf("alg = %q, want RS256", alg)
			}
			if parsed.Header["alg"] != "RS256" {
				t.Errorf("header alg = %v", parsed.Header["alg"])
			}
			if parsed.Header["kid"] != "sk1" {
				t.Errorf("header kid = %v, want sk1", parsed.Header["kid"])
			}
			if claims.Issuer != JWTIssuerPrefix+"sk1" {
				t.Errorf("iss = %q, want %q", claims.Issuer, JWTIssuerPrefix+"sk1")
			}
			if claims.Subject != "user-1" {
				t.Errorf("sub = %q, want user-1", claims.Subject)
			}
			// Backdated, so that an API whose clock is a little behind ours does not find it issued in
			// its future.
			if claims.IssuedAt == nil || !claims.IssuedAt.Equal(start.Add(-jwtBackdate)) {
				t.Errorf("iat = %v, want %v", claims.IssuedAt, start.Add(-jwtBackdate))
			}
			if claims.ExpiresAt == nil || !claims.ExpiresAt.Equal(start.Add(want)) {
				t.Errorf("exp = %v, want %v", claims.ExpiresAt, start.Add(want))
			}
			if claims.NotBefore == nil || !claims.NotBefore.Equal(start.Add(-jwtBackdate)) {
				t.Errorf("nbf = %v, want %v", claims.NotBefore, start.Add(-jwtBackdate))
			}
			// Another key does not verify it.
			other, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return &other.PublicKey, nil },
				jwt.WithTimeFunc(func() time.Time { return start })); err == nil {
				t.Error("token verifies with another key")
			}
			// It has expired once the lifetime has passed.
			if _, err := jwt.Parse(tok, func(*jwt.Token) (any, error) { return &key.PublicKey, nil },
				jwt.WithTimeFunc(func() time.Time { return start.Add(want + time.Second) })); err == nil {
				t.Error("token still valid after its lifetime")
			}
		})
	}
}

func TestJWTTokenCacheAndRenewal(t *testing.T) {
	t.Parallel()
	key := testKey()
	start := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	clock := &testClock{now: start}
	lifetime := 5 * time.Minute
	a, err := NewJWTAuth("sk1", key, WithJWTClock(clock.Now), withJWTLifetime(lifetime))
	if err != nil {
		t.Fatal(err)
	}
	first, err := a.Token("user-1")
	if err != nil {
		t.Fatal(err)
	}
	renewAt := start.Add(lifetime * 4 / 5)
	steps := []struct {
		at      time.Time
		renewed bool
	}{
		{start, false},
		{start.Add(time.Minute), false},
		{renewAt.Add(-time.Second), false},
		{renewAt, true},
	}
	for _, s := range steps {
		clock.Set(s.at)
		tok, err := a.Token("user-1")
		if err != nil {
			t.Fatal(err)
		}
		if renewed := tok != first; renewed != s.renewed {
			t.Errorf("at +%s: renewed = %v, want %v", s.at.Sub(start), renewed, s.renewed)
		}
		if s.renewed {
			_, claims := parseToken(t, tok, key, s.at)
			if !claims.IssuedAt.Equal(s.at.Add(-jwtBackdate)) || !claims.ExpiresAt.Equal(s.at.Add(lifetime)) {
				t.Errorf("renewed token: iat %v exp %v, want %v and %v", claims.IssuedAt, claims.ExpiresAt, s.at.Add(-jwtBackdate), s.at.Add(lifetime))
			}
		}
	}
	// Another user gets their own token.
	other, err := a.Token("user-2")
	if err != nil {
		t.Fatal(err)
	}
	if _, claims := parseToken(t, other, key, renewAt); claims.Subject != "user-2" {
		t.Errorf("sub = %q, want user-2", claims.Subject)
	}
}

func TestJWTCacheBounded(t *testing.T) {
	t.Parallel()
	start := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	clock := &testClock{now: start}
	a, err := NewJWTAuth("sk1", testKey(), WithJWTClock(clock.Now), withJWTCacheSize(2))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		user := fmt.Sprintf("user-%d", i)
		tok, err := a.Token(user)
		if err != nil {
			t.Fatal(err)
		}
		if _, claims := parseToken(t, tok, testKey(), start); claims.Subject != user {
			t.Errorf("sub = %q, want %q", claims.Subject, user)
		}
		a.mu.Lock()
		n := len(a.cache)
		_, cached := a.cache[user]
		a.mu.Unlock()
		if n > 2 {
			t.Errorf("after %d users the cache holds %d tokens, want at most 2", i+1, n)
		}
		if !cached {
			t.Errorf("the token just minted for %s is not cached", user)
		}
		// The newest token is reused.
		again, err := a.Token(user)
		if err != nil {
			t.Fatal(err)
		}
		if again != tok {
			t.Errorf("token for %s not reused", user)
		}
	}
}

func TestNewJWTAuthErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		keyID string
		key   *rsa.PrivateKey
		opts  []JWTOption
	}{
		{"no key id", "", testKey(), nil},
		{"no key", "sk1", nil, nil},
		{"lifetime too short", "sk1", testKey(), []JWTOption{withJWTLifetime(5 * time.Second)}},
		{"negative lifetime", "sk1", testKey(), []JWTOption{withJWTLifetime(-time.Minute)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if a, err := NewJWTAuth(tt.keyID, tt.key, tt.opts...); err == nil {
				t.Errorf("NewJWTAuth = %v, nil; want an error", a)
			}
		})
	}
}

func TestJWTAuthorize(t *testing.T) {
	t.Parallel()
	key := testKey()
	a, err := NewJWTAuth("sk1", key)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, "http://example.com/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Authorize(req, "user-1"); err != nil {
		t.Fatal(err)
	}
	h := req.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "JWT ")
	if !ok {
		t.Fatalf("Authorization = %q, want JWT <token>", h)
	}
	if _, claims := parseToken(t, tok, key, time.Now()); claims.Subject != "user-1" {
		t.Errorf("sub = %q", claims.Subject)
	}
	cached, err := a.Token("user-1")
	if err != nil {
		t.Fatal(err)
	}
	if cached != tok {
		t.Error("Authorize did not use the cached token")
	}

	req2, _ := http.NewRequest(http.MethodGet, "http://example.com/", nil)
	if err := a.Authorize(req2, ""); err == nil {
		t.Error("Authorize with no end user succeeded")
	}
	if h := req2.Header.Get("Authorization"); h != "" {
		t.Errorf("Authorization set to %q on a refused call", h)
	}
}

func TestAPIKeyAuthorize(t *testing.T) {
	t.Parallel()
	req, _ := http.NewRequest(http.MethodGet, "http://example.com/", nil)
	if err := APIKey("k-123").Authorize(req, ""); err != nil {
		t.Fatal(err)
	}
	if got := req.Header.Get("Authorization"); got != "Bearer k-123" {
		t.Errorf("Authorization = %q, want Bearer k-123", got)
	}
}

func TestAPIKeyNeverPrinted(t *testing.T) {
	t.Parallel()
	const secret = "sk_live_DO_NOT_PRINT_9f8e7d"
	k := APIKey(secret)
	cfg := Config{BaseURL: "http://x", Auth: k}
	outputs := map[string]string{
		"String":         k.String(),
		"GoString":       k.GoString(),
		"Sprint":         fmt.Sprint(k),
		"%v":             fmt.Sprintf("%v", k),
		"%+v":            fmt.Sprintf("%+v", k),
		"%#v":            fmt.Sprintf("%#v", k),
		"%s":             fmt.Sprintf("key=%s", k),
		"%q":             fmt.Sprintf("%q", k),
		"%x":             fmt.Sprintf("%x", k),
		"config %v":      fmt.Sprintf("%v", cfg),
		"config %+v":     fmt.Sprintf("%+v", cfg),
		"config %#v":     fmt.Sprintf("%#v", cfg),
		"pointer %+v":    fmt.Sprintf("%+v", &cfg),
		"slice %v":       fmt.Sprintf("%v", []APIKey{k}),
		"map %#v":        fmt.Sprintf("%#v", map[string]Authenticator{"a": k}),
		"error wrapping": fmt.Errorf("auth %v failed", k).Error(),
	}
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("msg", "key", k, "cfg", cfg)
	outputs["slog text"] = buf.String()
	for name, out := range outputs {
		if strings.Contains(out, secret) || strings.Contains(out, fmt.Sprintf("%x", secret)) {
			t.Errorf("%s prints the key: %s", name, out)
		}
		if !strings.Contains(out, "redacted") && !strings.Contains(out, fmt.Sprintf("%x", "redacted")) {
			t.Errorf("%s = %q, want it to say the key is redacted", name, out)
		}
	}
}

// pkcs8PEM encodes key as a PKCS#8 PEM block.
func pkcs8PEM(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func TestParseSigningKey(t *testing.T) {
	t.Parallel()
	key := testKey()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	good := pkcs8PEM(t, key)
	withNoise := append([]byte("# the signing key\n"), good...)
	tests := []struct {
		name    string
		in      []byte
		wantErr bool
	}{
		{"PKCS#8", good, false},
		{"PKCS#8 after a comment", withNoise, false},
		{"PKCS#1", pkcs1, true},
		{"EC PKCS#8", pkcs8PEM(t, ec), true},
		{"public key", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: mustMarshalPKIX(t, &key.PublicKey)}), true},
		{"DER without PEM", mustMarshalPKCS8(t, key), true},
		{"garbage", []byte("not a key at all"), true},
		{"PEM of garbage", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("garbage-bytes-SECRETISH")}), true},
		{"empty", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseSigningKey(tt.in)
			if !tt.wantErr {
				if err != nil {
					t.Fatalf("parseSigningKey: %v", err)
				}
				if !got.Equal(key) {
					t.Error("parsed key differs")
				}
				return
			}
			if err == nil {
				t.Fatal("parseSigningKey succeeded, want an error")
			}
			assertNoKeyMaterial(t, err.Error(), tt.in)
		})
	}
}

func mustMarshalPKIX(t *testing.T, pub any) []byte {
	t.Helper()
	b, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustMarshalPKCS8(t *testing.T, key any) []byte {
	t.Helper()
	b, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// assertNoKeyMaterial fails t if msg repeats any 12-byte run of in.
func assertNoKeyMaterial(t *testing.T, msg string, in []byte) {
	t.Helper()
	if len(msg) > 200 {
		t.Errorf("error is %d bytes long: %.200q", len(msg), msg)
	}
	chunks := [][]byte{in, []byte(strings.ReplaceAll(string(in), "\n", ""))}
	if block, _ := pem.Decode(in); block != nil {
		chunks = append(chunks, block.Bytes)
	}
	for _, chunk := range chunks {
		for i := 0; i+12 <= len(chunk); i++ {
			if s := string(chunk[i : i+12]); strings.Contains(msg, s) {
				t.Errorf("error %q repeats key material %q", msg, s)
				return
			}
		}
	}
}

func TestLoadSigningKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "key.pem")
	if err := os.WriteFile(good, pkcs8PEM(t, testKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := LoadSigningKey(good)
	if err != nil {
		t.Fatal(err)
	}
	if !k.Equal(testKey()) {
		t.Error("loaded key differs")
	}
	if _, err := LoadSigningKey(filepath.Join(dir, "missing.pem")); err == nil {
		t.Error("LoadSigningKey of a missing file succeeded")
	}
	bad := filepath.Join(dir, "bad.pem")
	pkcs1 := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(testKey())})
	if err := os.WriteFile(bad, pkcs1, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSigningKey(bad); err == nil {
		t.Error("LoadSigningKey of a PKCS#1 key succeeded")
	} else {
		assertNoKeyMaterial(t, err.Error(), pkcs1)
	}
}
