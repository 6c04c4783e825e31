package intake

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// The Standard Webhooks headers.
const (
	HeaderWebhookID        = standardwebhooks.HeaderWebhookID
	HeaderWebhookTimestamp = standardwebhooks.HeaderWebhookTimestamp
	HeaderWebhookSignature = standardwebhooks.HeaderWebhookSignature
)

const secretPrefix = "whsec_"

// Credential ids name the credential that let a request in, so that a webhook id is scoped to its
// sender: "whsec:" and the hex SHA-256 of a secret's decoded key, "bearer:" and the hex SHA-256 of a
// token, or credentialOpen without authentication. They are hashes, so that neither Redis nor a log
// ever holds a secret.
const (
	credentialSecretPrefix = "whsec:"
	credentialTokenPrefix  = "bearer:"
	credentialOpen         = "open"
)

// authenticator checks a request's credentials: a Standard Webhooks signature made with any of the
// secrets, or any of the bearer tokens.
type authenticator struct {
	hooks    []*standardwebhooks.Webhook
	hookIDs  []string            // credential id of hooks[i]
	tokens   [][sha256.Size]byte // hashes, so that every comparison is of equal length
	tokenIDs []string            // credential id of tokens[i]
}

func newAuthenticator(secrets, tokens []string) (*authenticator, error) {
	a := &authenticator{}
	for i, s := range secrets {
		// Errors name the secret by position only: never by value, not even a part of it.
		if !strings.HasPrefix(s, secretPrefix) {
			return nil, fmt.Errorf("intake: webhook secret #%d is not in the form whsec_<base64 key>", i+1)
		}
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, secretPrefix))
		if err != nil {
			return nil, fmt.Errorf("intake: webhook secret #%d is not in the form whsec_<base64 key>: the key is not standard base64", i+1)
		}
		if len(key) < MinSecretBytes {
			return nil, fmt.Errorf("intake: webhook secret #%d has a %d-byte key; at least %d bytes are needed", i+1, len(key), MinSecretBytes)
		}
		wh, err := standardwebhooks.NewWebhookRaw(key)
		if err != nil {
			return nil, fmt.Errorf("intake: webhook secret #%d is not usable", i+1)
		}
		a.hooks = append(a.hooks, wh)
		sum := sha256.Sum256(key)
		a.hookIDs = append(a.hookIDs, credentialSecretPrefix+hex.EncodeToString(sum[:]))
	}
	for _, t := range tokens {
		sum := sha256.Sum256([]byte(t))
		a.tokens = append(a.tokens, sum)
		a.tokenIDs = append(a.tokenIDs, credentialTokenPrefix+hex.EncodeToString(sum[:]))
	}
	return a, nil
}

// open reports whether no credentials are configured: every request is let in.
func (a *authenticator) open() bool { return len(a.hooks) == 0 && len(a.tokens) == 0 }

// errUnauthorized is a refused credential; its message is safe to send back.
type errUnauthorized string

func (e errUnauthorized) Error() string { return string(e) }

const (
	errNoCredentials  errUnauthorized = "missing credentials: sign the request (webhook-id, webhook-timestamp and webhook-signature headers) or send Authorization: Bearer <token>"
	errNoBearer       errUnauthorized = "missing bearer token: send Authorization: Bearer <token>"
	errBadToken       errUnauthorized = "bearer token is not valid"
	errMissingHeaders errUnauthorized = "missing webhook-id, webhook-timestamp or webhook-signature header"
	errBadHeaders     errUnauthorized = "webhook-timestamp is not a Unix time in seconds"
	errStale          errUnauthorized = "webhook-timestamp is more than 5 minutes from the server's clock"
	errForged         errUnauthorized = "webhook-signature does not match the body"
	// A signature signs a body, and a GET has none: a signed GET could be replayed for any task.
	errReadNoBearer    errUnauthorized = "missing bearer token: reading a task's status needs Authorization: Bearer <token>; a webhook signature is not accepted for reads"
	errReadsNeedTokens errUnauthorized = "reading a task's status needs a bearer token, and this intake has none: configure INTAKE_TOKENS and send Authorization: Bearer <token>; a webhook signature is not accepted for reads"
)

// bearer returns the token of an "Authorization: Bearer" header, and whether there is one.
func bearer(h http.Header) (string, bool) {
	v := h.Get("Authorization")
	scheme, tok, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

// checkToken returns the credential id of tok, and whether tok is one of the tokens. It compares
// against every token in constant time, whichever matches.
func (a *authenticator) checkToken(tok string) (string, bool) {
	sum := sha256.Sum256([]byte(tok))
	match, index := 0, 0
	for i := range a.tokens {
		eq := subtle.ConstantTimeCompare(sum[:], a.tokens[i][:])
		match |= eq
		index = subtle.ConstantTimeSelect(eq, i, index)
	}
	if match != 1 {
		return "", false
	}
	return a.tokenIDs[index], true
}

// verify checks a Standard Webhooks signature of body against every secret: it passes if any
// verifies, and returns the credential id of the first secret that does. The library checks the
// 5-minute timestamp tolerance, both ways, and accepts a signature header with several
// space-separated signatures if one matches.
func (a *authenticator) verify(body []byte, h http.Header) (string, error) {
	var last error
	for i, wh := range a.hooks {
		err := wh.Verify(body, h)
		if err == nil {
			return a.hookIDs[i], nil
		}
		last = err
	}
	switch {
	case last == nil:
		return "", errForged // no secrets: the caller does not ask
	case errors.Is(last, standardwebhooks.ErrRequiredHeaders):
		return "", errMissingHeaders
	case errors.Is(last, standardwebhooks.ErrInvalidHeaders):
		return "", errBadHeaders
	case errors.Is(last, standardwebhooks.ErrMessageTooOld), errors.Is(last, standardwebhooks.ErrMessageTooNew):
		return "", errStale
	}
	return "", errForged
}
