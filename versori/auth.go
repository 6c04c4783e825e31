package versori

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Authenticator sets the Authorization header of a request made on behalf of an end user.
type Authenticator interface {
	// Authorize sets req's credentials. userID is the end user the call is for; it is empty for
	// calls that are not about one user.
	Authorize(req *http.Request, userID string) error
}

// APIKey authenticates every call with the organisation-wide API key, as "Authorization: Bearer".
type APIKey string

// Authorize implements Authenticator.
func (k APIKey) Authorize(req *http.Request, _ string) error {
	req.Header.Set("Authorization", "Bearer "+string(k))
	return nil
}

// String keeps the key out of logs and error messages.
func (k APIKey) String() string { return "[redacted]" }

// GoString keeps the key out of %#v output.
func (k APIKey) GoString() string { return "versori.APIKey([redacted])" }

// Format keeps the key out of every fmt verb, %d and %x included.
func (k APIKey) Format(f fmt.State, verb rune) {
	if verb == 'v' && f.Flag('#') {
		io.WriteString(f, k.GoString())
		return
	}
	io.WriteString(f, k.String())
}

// MarshalText keeps the key out of JSON and structured logs.
func (k APIKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// JWTIssuerPrefix is the issuer of per-end-user tokens, followed by the signing key's id.
const JWTIssuerPrefix = "https://versori.com/sk/"

// defaultJWTLifetime is how long a per-end-user token is valid after it is signed. It is short, so
// that a leaked token is soon useless; an API whose clock is ahead of ours by more than a fifth of
// it (the margin a cached token is renewed at) refuses reused tokens.
const defaultJWTLifetime = 5 * time.Minute

// jwtBackdate is how far in the past a token's iat and nbf are set: the clock skew behind ours an
// API may have and still accept it.
const jwtBackdate = time.Minute

// ClockSkewTolerance is the difference between the API's clock (its Date header) and ours beyond
// which per-user tokens may be refused: a token is valid from jwtBackdate before it is signed and
// reused until a fifth of its lifetime is left.
const ClockSkewTolerance = defaultJWTLifetime / 5

// JWTAuth authenticates each call as its end user with an RS256 token signed by an organisation
// signing key, as "Authorization: JWT <token>". Tokens are cached per user and reused until shortly
// before they expire.
type JWTAuth struct {
	keyID    string
	key      *rsa.PrivateKey
	lifetime time.Duration
	now      func() time.Time
	maxCache int

	mu    sync.Mutex
	cache map[string]cachedToken
}

type cachedToken struct {
	token   string
	renewAt time.Time
}

// JWTOption configures a JWTAuth.
type JWTOption func(*JWTAuth)

// withJWTLifetime sets the tokens' lifetime (default defaultJWTLifetime).
func withJWTLifetime(d time.Duration) JWTOption { return func(a *JWTAuth) { a.lifetime = d } }

// WithJWTClock sets the clock tokens are issued by; for tests.
func WithJWTClock(now func() time.Time) JWTOption { return func(a *JWTAuth) { a.now = now } }

// withJWTCacheSize bounds how many users' tokens are cached (default 10,000).
func withJWTCacheSize(n int) JWTOption { return func(a *JWTAuth) { a.maxCache = n } }

// NewJWTAuth returns an Authenticator that signs per-end-user tokens with key.
func NewJWTAuth(keyID string, key *rsa.PrivateKey, opts ...JWTOption) (*JWTAuth, error) {
	if keyID == "" {
		return nil, errors.New("versori: JWT auth needs the signing key id")
	}
	if key == nil {
		return nil, errors.New("versori: JWT auth needs a signing key")
	}
	a := &JWTAuth{keyID: keyID, key: key, lifetime: defaultJWTLifetime, now: time.Now, maxCache: 10_000,
		cache: make(map[string]cachedToken)}
	for _, o := range opts {
		o(a)
	}
	if a.lifetime < 10*time.Second {
		return nil, fmt.Errorf("versori: JWT lifetime %s is too short", a.lifetime)
	}
	return a, nil
}

// Authorize implements Authenticator.
func (a *JWTAuth) Authorize(req *http.Request, userID string) error {
	if userID == "" {
		return errors.New("versori: JWT auth needs an end user for this call")
	}
	tok, err := a.Token(userID)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "JWT "+tok)
	return nil
}

// Token returns a valid token for userID, signing a new one when the cached one is near expiry.
func (a *JWTAuth) Token(userID string) (string, error) {
	now := a.now()
	a.mu.Lock()
	c, ok := a.cache[userID]
	a.mu.Unlock()
	if ok && now.Before(c.renewAt) {
		return c.token, nil
	}
	exp := now.Add(a.lifetime)
	// Issued and valid from jwtBackdate ago: an API whose clock is behind ours by less than that
	// would otherwise refuse a token issued in its future, as strict ones do with iat and nbf.
	issued := jwt.NewNumericDate(now.Add(-jwtBackdate))
	claims := jwt.RegisteredClaims{
		Issuer:    JWTIssuerPrefix + a.keyID,
		Subject:   userID,
		IssuedAt:  issued,
		NotBefore: issued,
		ExpiresAt: jwt.NewNumericDate(exp),
	}
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	t.Header["kid"] = a.keyID
	signed, err := t.SignedString(a.key)
	if err != nil {
		return "", fmt.Errorf("versori: signing token: %w", err)
	}
	// Renew with a fifth of the lifetime left, so a token never expires in flight.
	renewAt := exp.Add(-a.lifetime / 5)
	a.mu.Lock()
	if len(a.cache) >= a.maxCache {
		a.evictLocked(now)
	}
	a.cache[userID] = cachedToken{token: signed, renewAt: renewAt}
	a.mu.Unlock()
	return signed, nil
}

// evictLocked drops expired tokens, or arbitrary ones when none has expired: each user is usually
// activated once, so the cache only has to help retries.
func (a *JWTAuth) evictLocked(now time.Time) {
	for u, c := range a.cache {
		if !now.Before(c.renewAt) {
			delete(a.cache, u)
		}
	}
	for u := range a.cache {
		if len(a.cache) < a.maxCache {
			break
		}
		delete(a.cache, u)
	}
}

// LoadSigningKey reads an organisation signing key: a PKCS#8 PEM RSA private key.
func LoadSigningKey(path string) (*rsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("versori: reading signing key: %w", err)
	}
	return parseSigningKey(b)
}

// parseSigningKey parses a PKCS#8 PEM RSA private key. Its errors never include the key material.
func parseSigningKey(pemBytes []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("versori: signing key is not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.New("versori: signing key is not a PKCS#8 private key")
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("versori: signing key is not an RSA key (RS256 needs one)")
	}
	return rk, nil
}

type endUserKey struct{}

// WithEndUser records on ctx the end user that calls made with it are for. JWT auth needs it for
// calls whose arguments do not name the user (GetActivation, DeleteActivation).
func WithEndUser(ctx context.Context, userID string) context.Context {
	return context.WithValue(ctx, endUserKey{}, userID)
}

func endUser(ctx context.Context) string {
	u, _ := ctx.Value(endUserKey{}).(string)
	return u
}
