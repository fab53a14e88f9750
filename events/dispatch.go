package events

import (
	"fmt"
	"time"
)

// Mode says whether a dispatch is a preview or a real send.
type Mode int

const (
	// ModeSend delivers with real data and minted secrets.
	ModeSend Mode = iota
	// ModePreview renders with sample data; it writes nothing, mints nothing, sends nothing.
	ModePreview
)

func (m Mode) String() string {
	if m == ModePreview {
		return "preview"
	}
	return "send"
}

// Dispatch is one occurrence of an event.
type Dispatch struct {
	ID         string
	EventID    string
	Refs       []Ref
	Data       map[string]any // hydrated references, by Ref.Name
	Vars       map[string]any // variables; secret ones are of type Secret
	Mode       Mode
	Actor      string
	AcceptedAt time.Time
}

// Var returns the variable name as stored: secrets stay wrapped in Secret.
func (d *Dispatch) Var(name string) (any, bool) {
	v, ok := d.Vars[name]
	return v, ok
}

// String returns the variable name as a string ("" when absent); a Secret is revealed.
func (d *Dispatch) String(name string) string {
	switch v := d.Vars[name].(type) {
	case nil:
		return ""
	case string:
		return v
	case Secret:
		return v.Reveal()
	default:
		return fmt.Sprint(v)
	}
}

// SetVar sets a variable, allocating the map when needed.
func (d *Dispatch) SetVar(name string, v any) {
	if d.Vars == nil {
		d.Vars = map[string]any{}
	}
	d.Vars[name] = v
}
