package events

import (
	"fmt"
	"log/slog"
)

const redacted = "[REDACTED]"

// Secret is a variable that must never be logged or stored in clear: a reset token, an invite
// code. Herald seals secrets wherever it stores them. Every printed, logged or JSON form of a
// Secret is "[REDACTED]"; only Reveal gives the value.
type Secret struct{ v string }

// NewSecret wraps v.
func NewSecret(v string) Secret { return Secret{v: v} }

// Reveal returns the value. Call it only where the value is used (a template, a signature).
func (s Secret) Reveal() string { return s.v }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.v == "" }

func (s Secret) String() string   { return redacted }
func (s Secret) GoString() string { return redacted }

// Format redacts every verb, %#v and %q included.
func (s Secret) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte(redacted)) }

// MarshalJSON redacts.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText redacts.
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// LogValue redacts in log/slog.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }
