package cluster

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
)

// sealVersion is the first byte of a sealed secret, so the key or algorithm can change
// later (key rotation) while old ciphertexts stay readable.
const sealVersion = 1

// sealer encrypts camera passwords with AES-256-GCM. The nonce is random (12 bytes) and
// the camera id is the additional data, so a sealed password copied onto another camera
// does not decrypt. Sealing happens on the caller's side, before raft.Apply, so neither
// the raft log nor the Pebble store ever hold a password in clear.
type sealer struct{ aead cipher.AEAD }

func newSealer(key []byte) (*sealer, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("secret key must be 32 bytes (AES-256), got %d", len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

func (s *sealer) seal(plaintext, id string) ([]byte, error) {
	if plaintext == "" {
		return nil, nil
	}
	out := make([]byte, 1+s.aead.NonceSize(), 1+s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	out[0] = sealVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("seal password: %w", err)
	}
	return s.aead.Seal(out, out[1:], []byte(plaintext), []byte(id)), nil
}

var errUnseal = errors.New("cannot decrypt password (wrong secret key, or the ciphertext was altered)")

func (s *sealer) open(sealed []byte, id string) (string, error) {
	if len(sealed) == 0 {
		return "", nil
	}
	ns := s.aead.NonceSize()
	if sealed[0] != sealVersion || len(sealed) < 1+ns+s.aead.Overhead() {
		return "", errUnseal
	}
	p, err := s.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], []byte(id))
	if err != nil {
		return "", errUnseal
	}
	return string(p), nil
}
