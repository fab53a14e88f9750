package herald

import (
	"context"
	"time"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/engine"
	"github.com/heraldhq/herald/receipts"
)

// Admin holds the manual actions of AshDispatch's guide, shared by the admin API, the CLI and
// tests: list the events, preview one with sample data or for a real record, and trigger a
// real send that returns its receipts. Previews and sends take one path — the same channels,
// recipients, ShouldSend answers and plan — and only a send mints secrets and writes.
type Admin struct {
	b *built
}

// NewAdmin builds the manual actions on cfg and reg, as Run builds a worker (the pool opened and
// migrated, Redis checked, the transports configured), without serving tasks. Close it.
func NewAdmin(ctx context.Context, cfg Config, reg *events.Registry) (*Admin, error) {
	b, err := build(ctx, cfg, reg, nil)
	if err != nil {
		return nil, err
	}
	return &Admin{b: b}, nil
}

// Close releases what NewAdmin opened.
func (a *Admin) Close() { a.b.close() }

// EventInfo describes one registered event.
type EventInfo struct {
	ID          string
	Domain      string
	Category    string
	Description string
	// UserConfigurable: recipients may opt out.
	UserConfigurable bool
	// Previewable: the event gives sample data (events.SampleDataer).
	Previewable bool
	// Mints: the event makes variables at send time (events.SendVariabler), such as a token.
	Mints bool
	// Channels are those of the sample dispatch; empty when the event is not previewable.
	Channels []events.Channel
}

// Events lists the registered events, by id.
func (a *Admin) Events(ctx context.Context) []EventInfo {
	var out []EventInfo
	for _, e := range a.b.worker.Events(ctx) {
		out = append(out, EventInfo(e))
	}
	return out
}

// Rendered is one delivery as a preview shows it: the plan's decision (scheduled, or skipped or
// failed with the reason), its due time, and, when it would be sent, its rendered content. Sample
// values carry events.SampleMarker, visibly.
type Rendered struct {
	Channel   events.Channel
	Recipient events.Recipient
	Status    receipts.Status
	Reason    string
	DueAt     time.Time
	Subject   string
	From      events.Address
	HTML      string
	Text      string
}

// Errors of the manual actions.
var (
	ErrUnknownEvent   = engine.ErrUnknownEvent
	ErrNotPreviewable = engine.ErrNotPreviewable
	ErrDispatchFailed = engine.ErrDispatchFailed
)

// Preview renders eventID with its sample data: it reads no application row, writes nothing and
// never calls SendVariables.
func (a *Admin) Preview(ctx context.Context, eventID string) ([]Rendered, error) {
	rs, err := a.b.worker.Preview(ctx, eventID)
	return rendered(rs), err
}

// PreviewFor renders eventID for real records (refs hydrated, real recipients), with the plan a
// send would make: its recipients are those a Trigger with the same arguments gets. It mints
// nothing and writes nothing; what a send would mint, and secrets in vars, show as marked
// placeholders.
func (a *Admin) PreviewFor(ctx context.Context, eventID string, refs []events.Ref, vars map[string]any) ([]Rendered, error) {
	rs, err := a.b.worker.PreviewFor(ctx, eventID, refs, vars)
	return rendered(rs), err
}

func rendered(rs []engine.Rendered) []Rendered {
	out := make([]Rendered, 0, len(rs))
	for _, r := range rs {
		out = append(out, Rendered(r))
	}
	return out
}

// TriggerResult is the answer of Trigger.
type TriggerResult struct {
	DispatchID string
	// Duplicate: the idempotency key had been used with the same arguments; DispatchID and
	// Receipts are the first dispatch's.
	Duplicate bool
	// Receipts are the dispatch's deliveries, with their state and due time.
	Receipts []*receipts.ReceiptRow
}

// Trigger dispatches eventID now and runs its fan-out in the call, through the worker's own code
// (a single immediate delivery is sent in the call too; others are handed to the queue). It
// returns the dispatch id and every receipt. A fan-out that fails — SendVariables refused, a
// record missing — returns an error wrapping ErrDispatchFailed with the reason, and nothing is
// sent; so does a dispatch whose every delivery failed (its receipts are returned with it).
func (a *Admin) Trigger(ctx context.Context, eventID string, refs []events.Ref, vars map[string]any, opts ...DispatchOption) (TriggerResult, error) {
	t, err := a.b.worker.Trigger(ctx, eventID, refs, vars, engineOptions(opts)...)
	return TriggerResult(t), err
}
