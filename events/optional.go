package events

import (
	"context"
	"io/fs"
	"strings"
	"time"
)

// Subjecter sets the subject of a message.
// Default: the event id.
type Subjecter interface {
	Subject(ctx context.Context, d *Dispatch, ch Channel, r Recipient) (string, error)
}

// Address is a mailbox: an address and an optional display name.
type Address struct {
	Name    string
	Address string
}

// Fromer sets the sender of a message.
// Default: the worker's configured sender (HERALD_MAIL_FROM).
type Fromer interface {
	From(ctx context.Context, d *Dispatch, ch Channel) (Address, error)
}

// TemplateAssigner prepares the values templates see, merged over the defaults (the hydrated
// data by reference name, the variables, "recipient" and "subject"; its own keys win).
// Default: the defaults alone.
type TemplateAssigner interface {
	TemplateAssigns(ctx context.Context, d *Dispatch, ch Channel, r Recipient) (map[string]any, error)
}

// TemplateVarianter picks a template variant ("email.<variant>.html.tmpl").
// Default: the channel's Variant, else none. A channel's Variant wins over this method.
type TemplateVarianter interface {
	TemplateVariant(ctx context.Context, d *Dispatch, ch Channel) string
}

// Sample is the data a preview renders with: hydrated data by reference name and variables.
// Values should come from the sample helpers (SampleString, SampleEmail, …) so that the send
// path can recognise and refuse them.
type Sample struct {
	Data map[string]any
	Vars map[string]any
}

// SampleDataer provides sample data for previews.
// Default: no sample; the event cannot be previewed without real references.
type SampleDataer interface {
	SampleData(ctx context.Context) (Sample, error)
}

// SendVariabler mints the values a real send needs and a preview must never have, such as a
// password-reset token. It runs once per dispatch, in the fan-out, before any receipt exists;
// values it returns are merged into the dispatch's variables, and those of type Secret are sealed
// and stored so that retries reuse them. It should keep a value the producer already passed.
// An error fails the dispatch: sample values are never a fallback.
// Default: no extra variables.
type SendVariabler interface {
	SendVariables(ctx context.Context, d *Dispatch) (map[string]any, error)
}

// Decision is a ShouldSend answer.
type Decision struct {
	Send   bool
	Reason string // why not, recorded on the skipped receipt
}

// ShouldSender decides, per recipient, whether a delivery goes ahead. It is asked when the
// receipt is created and again just before sending; a "no" makes the receipt skipped.
// Default: always send.
type ShouldSender interface {
	ShouldSend(ctx context.Context, d *Dispatch, ch Channel, r Recipient) (Decision, error)
}

// DefaultMaxAge is how long after its due time a delivery may still be sent.
const DefaultMaxAge = 24 * time.Hour

// MaxAger bounds how late a delivery may be sent, counted from its due time; later it is
// expired (a reset email after its token expired is worse than none). A channel's
// Policy.MaxAge wins over this method.
// Default: DefaultMaxAge.
type MaxAger interface {
	MaxAge() time.Duration
}

// Metadata describes an event for admin listings and preference screens.
type Metadata struct {
	Domain           string // default: the id up to its first dot
	Category         string // default: the id
	UserConfigurable bool   // whether recipients may opt out; default true
	Description      string
}

// Metadataer describes the event.
// Default: see Metadata's field comments.
type Metadataer interface {
	Metadata() Metadata
}

// Templater gives the event's co-located templates: "email.html.tmpl" and "email.text.tmpl",
// optionally per variant ("email.<variant>.html.tmpl"). Usually an embed.FS (or fs.Sub of one).
// Default: no templates; the email channel then cannot render the event.
type Templater interface {
	Templates() fs.FS
}

// MetadataOf returns ev's metadata with defaults filled in.
func MetadataOf(ev Event) Metadata {
	var m Metadata
	custom := false
	if md, ok := ev.(Metadataer); ok {
		m = md.Metadata()
		custom = true
	}
	if m.Domain == "" {
		m.Domain, _, _ = strings.Cut(ev.ID(), ".")
	}
	if m.Category == "" {
		m.Category = ev.ID()
	}
	if !custom {
		m.UserConfigurable = true
	}
	return m
}

// MaxAgeOf returns how late a delivery on ch may be sent.
func MaxAgeOf(ev Event, ch Channel) time.Duration {
	if ch.Policy.MaxAge > 0 {
		return ch.Policy.MaxAge
	}
	if ma, ok := ev.(MaxAger); ok && ma.MaxAge() > 0 {
		return ma.MaxAge()
	}
	return DefaultMaxAge
}

// SubjectOf returns the subject for one delivery.
func SubjectOf(ctx context.Context, ev Event, d *Dispatch, ch Channel, r Recipient) (string, error) {
	if s, ok := ev.(Subjecter); ok {
		return s.Subject(ctx, d, ch, r)
	}
	return ev.ID(), nil
}

// VariantOf returns the template variant for ch.
func VariantOf(ctx context.Context, ev Event, d *Dispatch, ch Channel) string {
	if ch.Variant != "" {
		return ch.Variant
	}
	if v, ok := ev.(TemplateVarianter); ok {
		return v.TemplateVariant(ctx, d, ch)
	}
	return ""
}

// ShouldSendOf asks ev whether to deliver to r on ch.
func ShouldSendOf(ctx context.Context, ev Event, d *Dispatch, ch Channel, r Recipient) (Decision, error) {
	if s, ok := ev.(ShouldSender); ok {
		return s.ShouldSend(ctx, d, ch, r)
	}
	return Decision{Send: true}, nil
}

// RecipientPager is implemented by events with many recipients on a channel (a newsletter, every
// member of an organisation): the fan-out asks for one page at a time and commits each page
// before the next, so memory stays bounded and a fan-out interrupted by a crash resumes where it
// stopped. cursor is "" for the first page; next is "" after the last. A page may hold fewer
// than limit recipients. Pages must be stable across calls with the same cursor (order by a key).
//
// Default: Recipients is called once per channel (per run) and its result committed in chunks.
// A fan-out that resumes checks that the list did not change before where it stopped (the key
// of the last recipient committed); if it did, the channel starts over, and the receipts already
// written are kept once.
type RecipientPager interface {
	RecipientsPage(ctx context.Context, d *Dispatch, ch Channel, cursor string, limit int) (rs []Recipient, next string, err error)
}
