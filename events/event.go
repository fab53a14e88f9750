package events

import (
	"context"
	"errors"
	"fmt"
	"regexp"
)

// Event is a named thing that happened, such as "accounts.password_reset".
//
// Implementations must be safe for concurrent use: one value serves every dispatch.
type Event interface {
	// ID is the stable identifier producers dispatch by. It is lower case, dot separated
	// ([a-z0-9_] segments), and never changes once messages were sent under it.
	ID() string
	// Channels decides on which channels the dispatch is delivered. Keys must be unique.
	Channels(ctx context.Context, d *Dispatch) ([]Channel, error)
	// Recipients decides who receives on one channel.
	Recipients(ctx context.Context, d *Dispatch, ch Channel) ([]Recipient, error)
}

var idPattern = regexp.MustCompile(`^[a-z0-9_]+(\.[a-z0-9_]+)*$`)

// ValidateID reports whether id is a well-formed event id.
func ValidateID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("event id %q: want dot-separated lower-case segments such as accounts.password_reset", id)
	}
	return nil
}

// ErrUnknownEvent is returned when no registered event has the requested id.
var ErrUnknownEvent = errors.New("unknown event")

// ErrNotFound is returned by a Loader when the referenced row does not exist.
var ErrNotFound = errors.New("not found")
