// Package seal encrypts secret variables with AES-GCM under a keyring read from
// HERALD_SECRET_KEYS ("kid1:base64key,kid2:base64key"): the first key seals, every key opens, and
// each sealed value names its key id ("v1.<kid>.<base64 nonce+ciphertext>"). The associated data
// binds a value to where it belongs (dispatch id and variable name), so sealed values cannot be
// swapped between dispatches.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// ErrOpen is returned when a sealed value cannot be opened: unknown key id, tampering, or the
// wrong associated data. It never carries the value.
var ErrOpen = errors.New("cannot open sealed value")

// ErrUnknownKey is wrapped (with ErrOpen) when a value names a key id this keyring lacks: a
// configuration matter (another worker, or this one after HERALD_SECRET_KEYS is fixed, may open
// it), unlike a malformed or forged value, which no key ever opens.
var ErrUnknownKey = errors.New("unknown key id")

// Keyring seals with its first key and opens with any.
type Keyring struct {
	primary string
	aeads   map[string]cipher.AEAD
}

var kidPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// ParseKeys parses "kid1:base64key,kid2:base64key". Keys are 16, 24 or 32 bytes (32 advised),
// standard or URL base64. Errors name the key id, never the key.
func ParseKeys(spec string) (*Keyring, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, errors.New("no secret keys: set HERALD_SECRET_KEYS to kid:base64key (generate a key with: openssl rand -base64 32)")
	}
	k := &Keyring{aeads: map[string]cipher.AEAD{}}
	for i, part := range strings.Split(spec, ",") {
		kid, b64, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok || !kidPattern.MatchString(kid) {
			return nil, fmt.Errorf("secret key %d: want kid:base64key with a kid of letters, digits, _ or - (at most 32)", i+1)
		}
		raw, err := decodeKey(b64)
		if err != nil {
			return nil, fmt.Errorf("secret key %q: not base64", kid)
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, fmt.Errorf("secret key %q: %d bytes; want 16, 24 or 32", kid, len(raw))
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("secret key %q: %w", kid, err)
		}
		if _, dup := k.aeads[kid]; dup {
			return nil, fmt.Errorf("secret key %q appears twice", kid)
		}
		k.aeads[kid] = aead
		if i == 0 {
			k.primary = kid
		}
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

// GenerateKey returns a fresh "kid:base64key" entry with a 32-byte key.
func GenerateKey(kid string) (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return kid + ":" + base64.StdEncoding.EncodeToString(b), nil
}

// Seal encrypts plaintext bound to aad.
func (k *Keyring) Seal(plaintext, aad string) (string, error) {
	aead := k.aeads[k.primary]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("seal: %w", err)
	}
	ct := aead.Seal(nonce, nonce, []byte(plaintext), []byte(aad))
	return "v1." + k.primary + "." + base64.RawURLEncoding.EncodeToString(ct), nil
}

// Open decrypts a value made by Seal with the same aad.
func (k *Keyring) Open(sealed, aad string) (string, error) {
	parts := strings.SplitN(sealed, ".", 3)
	if len(parts) != 3 || parts[0] != "v1" {
		return "", fmt.Errorf("%w: malformed", ErrOpen)
	}
	aead, ok := k.aeads[parts[1]]
	if !ok {
		return "", fmt.Errorf("%w: %w: key id %q is not in HERALD_SECRET_KEYS", ErrOpen, ErrUnknownKey, parts[1])
	}
	ct, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(ct) < aead.NonceSize() {
		return "", fmt.Errorf("%w: malformed", ErrOpen)
	}
	pt, err := aead.Open(nil, ct[:aead.NonceSize()], ct[aead.NonceSize():], []byte(aad))
	if err != nil {
		return "", fmt.Errorf("%w: authentication failed (key id %q)", ErrOpen, parts[1])
	}
	return string(pt), nil
}

// AAD is the associated data for variable name of dispatch id.
func AAD(dispatchID, name string) string { return dispatchID + "\x00" + name }
