// Package seal is the AES-256-GCM underneath tasks.Keyring: one key, sealing with a random 96-bit
// nonce that travels in front of the ciphertext.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
)

// KeySize is the length of an AES-256 key.
const KeySize = 32

// ErrOpen is Open's error for a box that does not authenticate: another key, other associated data,
// or altered bytes. GCM cannot tell these apart, and saying more would help an attacker.
var ErrOpen = errors.New("seal: message authentication failed")

// Key is one AES-256-GCM key.
type Key struct {
	aead cipher.AEAD
}

// NewKey returns the key of the 32 bytes raw.
func NewKey(raw []byte) (Key, error) {
	if len(raw) != KeySize {
		return Key{}, fmt.Errorf("seal: a key is %d bytes, got %d", KeySize, len(raw))
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return Key{}, fmt.Errorf("seal: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return Key{}, fmt.Errorf("seal: %w", err)
	}
	return Key{aead: aead}, nil
}

// Seal returns nonce||ciphertext of plain, bound to aad. A random nonce per message is safe for
// far more messages than a key will ever seal (2^32 at a collision risk of 2^-32).
func (k Key) Seal(plain, aad []byte) []byte {
	ns := k.aead.NonceSize()
	out := make([]byte, ns, ns+len(plain)+k.aead.Overhead())
	if _, err := rand.Read(out); err != nil {
		// crypto/rand does not fail on the platforms Go supports (it panics itself since Go 1.24).
		panic(err)
	}
	return k.aead.Seal(out, out, plain, aad)
}

// Open returns the plaintext of box (nonce||ciphertext) if it was sealed by k with aad.
func (k Key) Open(box, aad []byte) ([]byte, error) {
	ns := k.aead.NonceSize()
	if len(box) < ns+k.aead.Overhead() {
		return nil, ErrOpen
	}
	plain, err := k.aead.Open(nil, box[:ns], box[ns:], aad)
	if err != nil {
		return nil, ErrOpen
	}
	return plain, nil
}
