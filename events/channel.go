package events

import (
	"errors"
	"fmt"
	"time"
)

// Well-known transports. Others may be registered by name.
const (
	TransportEmail   = "email"
	TransportInApp   = "in_app"
	TransportWebhook = "webhook"
)

// Channel is one named entry of an event: key × transport × audience × time × policy.
// Two channels of one event may share a transport ("email now", "reminder in 3 days");
// their keys must differ.
type Channel struct {
	Key       string // unique within the event, stable (part of the receipt key)
	Transport string // "email", …
	Audience  string // "user", "admin", …
	Time      Time   // when to deliver; the zero Time is immediate
	Policy    Policy
	Variant   string // template variant; wins over TemplateVarianter
}

// Time is when a channel delivers: immediately, after a delay from the dispatch's acceptance,
// or at an absolute time.
type Time struct {
	delay time.Duration
	at    time.Time
}

// Immediately delivers as soon as possible.
func Immediately() Time { return Time{} }

// In delivers d after the dispatch was accepted.
func In(d time.Duration) Time { return Time{delay: d} }

// At delivers at t (or immediately if t has passed).
func At(t time.Time) Time { return Time{at: t} }

// DueAt returns when a delivery is due for a dispatch accepted at accepted.
func (t Time) DueAt(accepted time.Time) time.Time {
	if !t.at.IsZero() {
		if t.at.Before(accepted) {
			return accepted
		}
		return t.at
	}
	return accepted.Add(max(t.delay, 0))
}

func (t Time) String() string {
	switch {
	case !t.at.IsZero():
		return "at " + t.at.UTC().Format(time.RFC3339)
	case t.delay > 0:
		return "in " + t.delay.String()
	default:
		return "immediately"
	}
}

// Policy tunes delivery of one channel. Zero values take the worker's defaults.
type Policy struct {
	MaxAttempts int           // delivery attempts before failing; default the worker's (10)
	MaxAge      time.Duration // how late after due time a send may happen; default the event's
}

// ErrInvalidChannels is wrapped by ValidateChannels' errors.
var ErrInvalidChannels = errors.New("invalid channels")

// ValidateChannels checks keys are present and unique and transports named.
func ValidateChannels(chs []Channel) error {
	seen := make(map[string]bool, len(chs))
	for i, ch := range chs {
		if ch.Key == "" {
			return fmt.Errorf("%w: channel %d (%s) has no key", ErrInvalidChannels, i, ch.Transport)
		}
		if ch.Transport == "" {
			return fmt.Errorf("%w: channel %q has no transport", ErrInvalidChannels, ch.Key)
		}
		if seen[ch.Key] {
			return fmt.Errorf("%w: duplicate channel key %q", ErrInvalidChannels, ch.Key)
		}
		seen[ch.Key] = true
	}
	return nil
}
