package examples

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Tokens mints and verifies signed, expiring password-reset tokens:
// base64url("<user id>|<unix expiry>") + "." + base64url(HMAC-SHA256).
type Tokens struct {
	Key []byte        // signing key; at least 32 bytes
	TTL time.Duration // lifetime; defaults to 24h
	Now func() time.Time
}

// ErrInvalidToken is returned for a token that is malformed, forged or expired.
var ErrInvalidToken = errors.New("invalid or expired token")

func (t *Tokens) ttl() time.Duration {
	if t == nil || t.TTL <= 0 {
		return 24 * time.Hour
	}
	return t.TTL
}

func (t *Tokens) now() time.Time {
	if t.Now != nil {
		return t.Now()
	}
	return time.Now()
}

// Mint returns a token for userID.
func (t *Tokens) Mint(userID string) (string, error) {
	if t == nil || len(t.Key) < 32 {
		return "", errors.New("password reset signing key is not configured (HERALD_EXAMPLE_RESET_KEY, 32+ bytes)")
	}
	if userID == "" || strings.Contains(userID, "|") {
		return "", fmt.Errorf("user id %q cannot be put in a token", userID)
	}
	body := userID + "|" + strconv.FormatInt(t.now().Add(t.ttl()).Unix(), 10)
	return base64.RawURLEncoding.EncodeToString([]byte(body)) + "." + t.sign(body), nil
}

func (t *Tokens) sign(body string) string {
	m := hmac.New(sha256.New, t.Key)
	m.Write([]byte("password_reset\x00" + body))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Verify returns the user id a valid token was minted for.
func (t *Tokens) Verify(token string) (string, error) {
	b64, sig, ok := strings.Cut(token, ".")
	if !ok {
		return "", ErrInvalidToken
	}
	raw, err := base64.RawURLEncoding.DecodeString(b64)
	if err != nil {
		return "", ErrInvalidToken
	}
	body := string(raw)
	if !hmac.Equal([]byte(sig), []byte(t.sign(body))) {
		return "", ErrInvalidToken
	}
	uid, exp, ok := strings.Cut(body, "|")
	n, err := strconv.ParseInt(exp, 10, 64)
	if !ok || err != nil || t.now().Unix() > n {
		return "", ErrInvalidToken
	}
	return uid, nil
}
