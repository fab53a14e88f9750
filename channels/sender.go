package channels

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Message is one rendered delivery.
type Message struct {
	ReceiptID string // stable across attempts
	MessageID string // "<receipt-id@domain>", stable across attempts
	FromName  string
	From      string
	ToName    string
	To        string
	Subject   string
	HTML      string
	Text      string
	Headers   map[string]string // extra headers; values must be single-line
}

// Result is what the transport confirmed.
type Result struct {
	ProviderResponse string // e.g. the SMTP server's reply to DATA, stored on the receipt
}

// Sender delivers messages on one transport.
//
// Send returns a nil error only when the transport confirmed the message. Any error should be
// an *Error saying whether a retry may help; unclassified errors are treated as temporary.
// Send must honour ctx and be safe for concurrent use by as many goroutines as the worker's
// concurrency.
type Sender interface {
	Send(ctx context.Context, m Message) (Result, error)
}

// Class says whether retrying may help.
type Class int

const (
	// Temporary failures may succeed later (4xx, network errors, dropped connections).
	Temporary Class = iota
	// Permanent failures will not (most 5xx).
	Permanent
	// RateLimited failures should be retried after Error.RetryAfter.
	RateLimited
)

func (c Class) String() string {
	return [...]string{"temporary", "permanent", "rate-limited"}[c]
}

// Error is a classified transport failure.
type Error struct {
	Class       Class
	Code        int           // protocol status (SMTP reply code, HTTP status), 0 if none
	Enhanced    string        // SMTP enhanced status code ("5.1.1"), if the server gave one
	ConfigAlert bool          // the failure points at our configuration (credentials, TLS): alert an operator
	RetryAfter  time.Duration // RateLimited: how long to wait
	// InDoubt: the transport may have accepted the message although it did not confirm it — the
	// reply to the end of data was lost (a timeout or a dropped connection after the final ".").
	// The class stays Temporary; the engine retries with the same Message-ID, flags the receipt
	// in doubt and counts it.
	InDoubt bool
	Err     error
}

func (e *Error) Error() string {
	s := e.Class.String()
	if e.Code != 0 {
		s += fmt.Sprintf(" %d", e.Code)
	}
	if e.Enhanced != "" {
		s += " " + e.Enhanced
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// ClassOf classifies err; an error that is not an *Error is temporary.
func ClassOf(err error) Class {
	var e *Error
	if errors.As(err, &e) {
		return e.Class
	}
	return Temporary
}

// Permanentf returns a permanent error.
func Permanentf(format string, args ...any) error {
	return &Error{Class: Permanent, Err: fmt.Errorf(format, args...)}
}
