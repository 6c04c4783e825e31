package tasks

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/versori/activator/internal/seal"
	"github.com/versori/activator/versori"
)

// EncryptionKeysVar is the setting that holds the keyring; errors about keys name it.
const EncryptionKeysVar = "ACTIVATOR_ENCRYPTION_KEYS"

// AllowPlaintextVar is the setting that lets requests with credentials be queued without a key.
const AllowPlaintextVar = "ALLOW_PLAINTEXT_CREDENTIALS"

// Withheld is what a connection's credentials read wherever they are not: in a queued payload or a
// dead letter whose secrets are sealed (Payload.Secrets holds them), and in every display (logs,
// `dlq list`, `dlq export`, the queue UI). It is a JSON object, so that a request holding it is
// still valid: `dlq requeue --file` takes a row with it to mean "the dead letter's own credentials".
const Withheld = `{"$activator":"withheld"}`

// ErrPlaintextCredentials is the error of a producer asked to queue a request with credentials
// while no key is configured and plaintext is not allowed.
var ErrPlaintextCredentials = errors.New("credentials would be stored in plain text: set " + EncryptionKeysVar +
	" (or " + AllowPlaintextVar + "=true to store them unencrypted)")

// ErrSecretUnreadable is the error of opening secrets sealed under a key the keyring lacks, or that
// do not authenticate (altered, or moved from another pair's task).
var ErrSecretUnreadable = errors.New("the job's sealed credentials cannot be opened")

// Keyring holds the AES-256 keys that seal and open the secret parts of payloads and dead letters.
// The first key seals; every key opens, so that keys rotate without losing queued jobs. A nil
// *Keyring has no keys. It is safe for concurrent use.
type Keyring struct {
	ids  []string
	keys []seal.Key
}

// ParseKeyring reads a keyring written as "id1:base64key1,id2:base64key2": ids of letters, digits,
// '-' and '_' (at most 16), keys of 32 bytes in standard or URL base64. "" is no keyring (nil, nil);
// blank is an error.
// Its errors name EncryptionKeysVar and the position of the bad entry, never key material.
func ParseKeyring(s string) (*Keyring, error) {
	if s == "" {
		return nil, nil
	}
	if strings.TrimSpace(s) == "" {
		// Not "no keys": a worker without keys dead-letters every sealed job it takes.
		return nil, fmt.Errorf("%s: set but blank: give it id:base64 keys, or unset it", EncryptionKeysVar)
	}
	k := &Keyring{}
	for i, entry := range strings.Split(s, ",") {
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%s: key %d %s (want id:base64 of 32 random bytes, e.g. from `openssl rand -base64 32`)",
				EncryptionKeysVar, i+1, fmt.Sprintf(format, args...))
		}
		id, b64, ok := strings.Cut(strings.TrimSpace(entry), ":")
		switch {
		case !ok:
			return nil, bad("has no ':' between its id and its key")
		case !validKeyID(id):
			return nil, bad("has an id that is not 1 to 16 of A-Z a-z 0-9 - _")
		case slices.Contains(k.ids, id):
			return nil, bad("repeats id %q", id)
		}
		raw, err := decodeKey(strings.TrimSpace(b64))
		if err != nil {
			return nil, bad("(id %q) is not base64", id)
		}
		key, err := seal.NewKey(raw)
		if err != nil {
			return nil, bad("(id %q) is %d bytes, not 32", id, len(raw))
		}
		k.ids, k.keys = append(k.ids, id), append(k.keys, key)
	}
	return k, nil
}

func decodeKey(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}

func validKeyID(id string) bool {
	if id == "" || len(id) > 16 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// Current is the id of the key that seals; "" for no keyring.
func (k *Keyring) Current() string {
	if k == nil || len(k.ids) == 0 {
		return ""
	}
	return k.ids[0]
}

// IDs lists the key ids, the current one first.
func (k *Keyring) IDs() []string {
	if k == nil {
		return nil
	}
	return slices.Clone(k.ids)
}

func (k *Keyring) key(id string) (seal.Key, bool) {
	if k == nil {
		return seal.Key{}, false
	}
	i := slices.Index(k.ids, id)
	if i < 0 {
		return seal.Key{}, false
	}
	return k.keys[i], true
}

// sealVersion is bound into every seal's associated data, so that a later format cannot be read as
// this one.
const sealVersion = "activator-secrets-v1"

// primaryLabel is bound into the associated data of a seal that holds the end user's primary
// connection credentials (EndUser.PrimaryConnection), as each connection's credentials are bound to
// its template: a seal made without them does not open as one with them, nor the other way round.
const primaryLabel = "primaryConnection"

// aad binds a seal to its key id and its pair's task id: ciphertext moved to another pair's task,
// or relabelled with another key id, does not open. withPrimary adds primaryLabel for a seal that
// holds the end user's primary connection credentials; seals without them read as they always did.
func aad(keyID, taskID string, withPrimary bool) []byte {
	a := sealVersion + "\x00" + keyID + "\x00" + taskID
	if withPrimary {
		a += "\x00" + primaryLabel
	}
	return []byte(a)
}

// secretParts are the parts of a request that Payload.Secrets holds. New kinds of secret get a field
// here; the worker refuses a seal with parts it does not know how to put back.
type secretParts struct {
	// Connections maps a connection's index in the request to its credentials.
	Connections map[string]json.RawMessage `json:"connections,omitempty"`
	// Templates maps the same indexes to their connection's template (canonical ULID): the
	// request around the seal is not authenticated, and credentials must not open into a connection
	// reordered or retemplated since, which would hand them to another third party. Seals made
	// before it was added have none, and open as they did.
	Templates map[string]string `json:"templates,omitempty"`
	// PrimaryConnection is the credentials of the end user's primary connection (Payload.EndUser),
	// which the payload withholds.
	PrimaryConnection json.RawMessage `json:"primaryConnection,omitempty"`
}

// SecretKeyID is the id of the key secrets were sealed with ("kid:base64(nonce||ciphertext)"); ""
// for none.
func SecretKeyID(secrets string) string {
	id, _, _ := strings.Cut(secrets, ":")
	return id
}

// HasCredentials reports whether req carries credentials in plain text (withheld ones do not count).
func HasCredentials(req versori.ActivationRequest) bool {
	for _, c := range req.Connections {
		if len(c.Credentials) > 0 && !IsWithheld(c.Credentials) {
			return true
		}
	}
	return false
}

// EndUserHasCredentials reports whether e's primary connection carries credentials in plain text
// (withheld ones do not count).
func EndUserHasCredentials(e *EndUser) bool {
	return e != nil && e.PrimaryConnection != nil && len(e.PrimaryConnection.Credentials) > 0 &&
		!IsWithheld(e.PrimaryConnection.Credentials)
}

// endUserWithholds reports whether e's primary connection credentials are Withheld.
func endUserWithholds(e *EndUser) bool {
	return e != nil && e.PrimaryConnection != nil && IsWithheld(e.PrimaryConnection.Credentials)
}

// HasSecrets reports whether p carries credentials in plain text: its request's connections', or
// its end user's primary connection's.
func (p *Payload) HasSecrets() bool {
	return HasCredentials(p.Request) || EndUserHasCredentials(p.EndUser)
}

// withPrimaryCredentials returns a copy of e whose primary connection has creds, leaving e as it
// is (payload copies share it).
func withPrimaryCredentials(e *EndUser, creds json.RawMessage) *EndUser {
	c := *e
	pc := *e.PrimaryConnection
	pc.Credentials = creds
	c.PrimaryConnection = &pc
	return &c
}

// RedactEndUser returns e with its primary connection's credentials replaced by Withheld: what
// displays show. e is left as it is.
func RedactEndUser(e *EndUser) *EndUser {
	if e == nil || e.PrimaryConnection == nil || len(e.PrimaryConnection.Credentials) == 0 {
		return e
	}
	return withPrimaryCredentials(e, json.RawMessage(Withheld))
}

// IsWithheld reports whether credentials are the Withheld placeholder.
func IsWithheld(creds json.RawMessage) bool {
	if len(creds) == 0 || !bytes.Contains(creds, []byte(`"$activator"`)) {
		return false
	}
	var v map[string]string
	return json.Unmarshal(creds, &v) == nil && len(v) == 1 && v["$activator"] == "withheld"
}

// Redact returns req with every connection's credentials replaced by Withheld: what displays show.
func Redact(req versori.ActivationRequest) versori.ActivationRequest {
	if len(req.Connections) == 0 {
		return req
	}
	req.Connections = slices.Clone(req.Connections)
	for i := range req.Connections {
		if len(req.Connections[i].Credentials) > 0 {
			req.Connections[i].Credentials = json.RawMessage(Withheld)
		}
	}
	return req
}

// Seal moves the plaintext credentials of p.Request, and of p.EndUser's primary connection, into
// p.Secrets, sealed with k's current key and bound to the request's pair; the payload keeps Withheld
// in their place. A payload without plaintext credentials is left as it is. With no keyring it
// returns ErrPlaintextCredentials.
func (p *Payload) Seal(k *Keyring) error {
	if !p.HasSecrets() {
		return nil
	}
	if k.Current() == "" {
		return ErrPlaintextCredentials
	}
	if p.Secrets != "" {
		return fmt.Errorf("tasks: payload has both sealed and plaintext credentials")
	}
	parts := secretParts{Connections: map[string]json.RawMessage{}, Templates: map[string]string{}}
	req := p.Request
	req.Connections = slices.Clone(req.Connections)
	for i := range req.Connections {
		c := &req.Connections[i]
		if len(c.Credentials) > 0 && !IsWithheld(c.Credentials) {
			parts.Connections[strconv.Itoa(i)] = c.Credentials
			parts.Templates[strconv.Itoa(i)] = versori.CanonicalULID(c.TemplateID)
			c.Credentials = json.RawMessage(Withheld)
		}
	}
	eu := p.EndUser
	if EndUserHasCredentials(eu) {
		parts.PrimaryConnection = eu.PrimaryConnection.Credentials
		eu = withPrimaryCredentials(eu, json.RawMessage(Withheld))
	}
	plain, err := json.Marshal(parts)
	if err != nil {
		return fmt.Errorf("tasks: encoding secrets: %w", err)
	}
	id := k.Current()
	key, _ := k.key(id)
	box := key.Seal(plain, aad(id, TaskID(req.Pair()), parts.PrimaryConnection != nil))
	p.Request, p.EndUser, p.Secrets = req, eu, id+":"+base64.StdEncoding.EncodeToString(box)
	return nil
}

// Open puts the credentials sealed in p.Secrets back into p.Request and clears p.Secrets; a payload
// without sealed secrets is left as it is (and refused if its request withholds credentials). Its errors wrap ErrSecretUnreadable and name the key id,
// never secret material. p is unchanged on error.
func (p *Payload) Open(k *Keyring) error {
	if p.Secrets == "" {
		for i, c := range p.Request.Connections {
			if IsWithheld(c.Credentials) {
				return fmt.Errorf("%w: connection %d's credentials are withheld and the job holds no sealed ones", ErrSecretUnreadable, i)
			}
		}
		if endUserWithholds(p.EndUser) {
			return fmt.Errorf("%w: the end user's primary connection credentials are withheld and the job holds no sealed ones", ErrSecretUnreadable)
		}
		return nil
	}
	withPrimary := endUserWithholds(p.EndUser)
	parts, err := openSecrets(k, p.Secrets, TaskID(p.Request.Pair()), withPrimary)
	if err != nil {
		return err
	}
	eu := p.EndUser
	if withPrimary {
		if len(parts.PrimaryConnection) == 0 {
			return fmt.Errorf("%w: they lack the end user's primary connection credentials", ErrSecretUnreadable)
		}
		eu = withPrimaryCredentials(eu, parts.PrimaryConnection)
	}
	req := p.Request
	req.Connections = slices.Clone(req.Connections)
	for is, creds := range parts.Connections {
		i, err := strconv.Atoi(is)
		if err != nil || i < 0 || i >= len(req.Connections) || !IsWithheld(req.Connections[i].Credentials) {
			return fmt.Errorf("%w: they name connection %s, which the request does not withhold", ErrSecretUnreadable, is)
		}
		if parts.Templates != nil && parts.Templates[is] != versori.CanonicalULID(req.Connections[i].TemplateID) {
			return fmt.Errorf("%w: they were sealed for connection %s of another template (connections reordered or changed)", ErrSecretUnreadable, is)
		}
		req.Connections[i].Credentials = creds
	}
	for i, c := range req.Connections {
		if IsWithheld(c.Credentials) {
			return fmt.Errorf("%w: they lack connection %d's credentials", ErrSecretUnreadable, i)
		}
	}
	p.Request, p.EndUser, p.Secrets = req, eu, ""
	return nil
}

func openSecrets(k *Keyring, secrets, taskID string, withPrimary bool) (secretParts, error) {
	id, b64, ok := strings.Cut(secrets, ":")
	if !ok {
		return secretParts{}, fmt.Errorf("%w: they are not of the form keyid:base64", ErrSecretUnreadable)
	}
	key, ok := k.key(id)
	if !ok {
		return secretParts{}, fmt.Errorf("%w: sealed with key %q, which %s does not hold", ErrSecretUnreadable, id, EncryptionKeysVar)
	}
	box, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return secretParts{}, fmt.Errorf("%w: they are not base64", ErrSecretUnreadable)
	}
	plain, err := key.Open(box, aad(id, taskID, withPrimary))
	if err != nil {
		return secretParts{}, fmt.Errorf("%w: key %q does not authenticate them for task %s (another key under that id, or sealed for another pair)",
			ErrSecretUnreadable, id, taskID)
	}
	var parts secretParts
	dec := json.NewDecoder(bytes.NewReader(plain))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&parts); err != nil {
		return secretParts{}, fmt.Errorf("%w: they hold parts this release does not know", ErrSecretUnreadable)
	}
	return parts, nil
}

// Reseal seals p's secrets with k's current key: plaintext credentials are sealed, and secrets
// sealed under another key are opened and sealed again. It reports whether p changed; a payload
// already sealed with the current key, or without credentials, is left.
func (p *Payload) Reseal(k *Keyring) (bool, error) {
	switch {
	case p.Secrets == "" && !p.HasSecrets():
		return false, nil
	case p.Secrets != "" && SecretKeyID(p.Secrets) == k.Current():
		return false, nil
	}
	q := *p
	if err := q.Open(k); err != nil {
		return false, err
	}
	if err := q.Seal(k); err != nil {
		return false, err
	}
	*p = q
	return true, nil
}

// RedactPayload returns a task payload as displays may show it: every connection's credentials, and
// the end user's primary connection's, replaced by Withheld, sealed or not, and the sealed secrets by their key id. A payload it cannot
// read as an activation job's JSON is not shown at all (ok false), since it cannot tell what in it
// is secret.
func RedactPayload(b []byte) (out []byte, ok bool) {
	var pl map[string]json.RawMessage
	if json.Unmarshal(b, &pl) != nil {
		return nil, false
	}
	withhold := func(json.RawMessage) (json.RawMessage, bool) { return json.RawMessage(Withheld), true }
	// Every connection's credentials, and the end user's primary connection's.
	connections := func(raw json.RawMessage) (json.RawMessage, bool) {
		var cs []map[string]json.RawMessage
		if json.Unmarshal(raw, &cs) != nil {
			return nil, false
		}
		for _, c := range cs {
			if !eachMember(c, "credentials", withhold) {
				return nil, false
			}
		}
		return marshal(cs)
	}
	object := func(name string, fn func(json.RawMessage) (json.RawMessage, bool)) func(json.RawMessage) (json.RawMessage, bool) {
		return func(raw json.RawMessage) (json.RawMessage, bool) {
			var m map[string]json.RawMessage
			if json.Unmarshal(raw, &m) != nil || !eachMember(m, name, fn) {
				return nil, false
			}
			return marshal(m)
		}
	}
	if !eachMember(pl, "request", object("connections", connections)) ||
		!eachMember(pl, "endUser", object("primaryConnection", object("credentials", withhold))) {
		return nil, false
	}
	if raw, has := pl["secrets"]; has {
		var s string
		_ = json.Unmarshal(raw, &s)
		pl["secrets"], _ = json.Marshal("sealed with key " + SecretKeyID(s))
	}
	return marshal(pl)
}

// eachMember replaces every non-null member of m named name, in any case (encoding/json reads names
// so, and a display must not show what a reader would take for credentials), by fn's result; false
// when fn fails for one.
func eachMember(m map[string]json.RawMessage, name string, fn func(json.RawMessage) (json.RawMessage, bool)) bool {
	for k, v := range m {
		if !strings.EqualFold(k, name) || string(v) == "null" {
			continue
		}
		out, ok := fn(v)
		if !ok {
			return false
		}
		m[k] = out
	}
	return true
}

func marshal(v any) (json.RawMessage, bool) {
	b, err := json.Marshal(v)
	return b, err == nil
}
