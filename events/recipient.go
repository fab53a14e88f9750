package events

import "strings"

// Recipient is who receives on one channel.
type Recipient struct {
	ID      string // stable id; when empty, the normalised address stands in
	Address string // email address, webhook URL, …
	Name    string // display name
	Locale  string
}

// Key is the recipient's part of the delivery key: the ID, else the lower-cased address.
func (r Recipient) Key() string {
	if r.ID != "" {
		return r.ID
	}
	return strings.ToLower(strings.TrimSpace(r.Address))
}
