package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/canon"
	"github.com/heraldhq/herald/internal/ledger"
)

// The manual actions of AshDispatch's guide: list the events, preview one with sample data or
// for a real record, and trigger a real send. Previews and sends share one path: the same
// resolution of channels and recipients, the same ShouldSend answers and the same plan
// (planChunk); only a send mints and writes.

// EventInfo describes one registered event for an admin listing.
type EventInfo struct {
	ID          string
	Domain      string
	Category    string
	Description string
	// UserConfigurable: recipients may opt out (preferences).
	UserConfigurable bool
	// Previewable: the event gives sample data (events.SampleDataer).
	Previewable bool
	// Mints: the event makes variables at send time (events.SendVariabler), such as a token.
	Mints bool
	// Channels are those of the sample dispatch (an event's channels may depend on its data);
	// empty when the event is not previewable or its channels need real data.
	Channels []events.Channel
}

// Events lists the registered events, by id.
func (w *Worker) Events(ctx context.Context) []EventInfo {
	var out []EventInfo
	for _, ev := range w.reg.Events() {
		m := events.MetadataOf(ev)
		info := EventInfo{ID: ev.ID(), Domain: m.Domain, Category: m.Category, Description: m.Description,
			UserConfigurable: m.UserConfigurable}
		_, info.Mints = ev.(events.SendVariabler)
		if sd, ok := ev.(events.SampleDataer); ok {
			info.Previewable = true
			if s, err := sd.SampleData(ctx); err == nil {
				if chs, err := ev.Channels(ctx, sampleDispatch(ev, s)); err == nil {
					info.Channels = chs
				}
			}
		}
		out = append(out, info)
	}
	return out // Registry.Events is sorted by id
}

// Rendered is one planned delivery as a preview shows it: the plan's decision (scheduled, or
// skipped or failed with the reason), when it would be due, and, when it would be sent, its
// rendered content. Sample values in it carry events.SampleMarker.
type Rendered struct {
	Channel   events.Channel
	Recipient events.Recipient
	Status    ledger.Status
	Reason    string
	DueAt     time.Time
	Subject   string
	From      events.Address
	HTML      string
	Text      string
}

// ErrNotPreviewable is returned by Preview for an event without sample data.
var ErrNotPreviewable = errors.New("the event gives no sample data (events.SampleDataer): it cannot be previewed")

// ErrUnknownEvent is returned for an event id no registered event has.
var ErrUnknownEvent = errors.New("no such event on this worker")

// previewRecipients bounds the recipients a preview renders per channel.
const previewRecipients = 100

// Preview renders eventID with its sample data. It reads no application row, writes nothing,
// and never calls SendVariables (the sample's variables stand in for what a send mints).
func (w *Worker) Preview(ctx context.Context, eventID string) ([]Rendered, error) {
	ev, err := w.lookup(eventID)
	if err != nil {
		return nil, err
	}
	sd, ok := ev.(events.SampleDataer)
	if !ok {
		return nil, fmt.Errorf("preview %s: %w", eventID, ErrNotPreviewable)
	}
	s, err := sd.SampleData(ctx)
	if err != nil {
		return nil, fmt.Errorf("preview %s: sample data: %w", eventID, err)
	}
	return w.previewOf(ctx, ev, sampleDispatch(ev, s))
}

// PreviewFor renders eventID for real records: refs are hydrated through the loaders and the
// real recipients resolved, with the plan a send would make, so its recipients are exactly those
// of a trigger with the same arguments. It mints nothing and writes nothing: what a send would
// mint, and any secret passed in vars, shows as a marked placeholder.
func (w *Worker) PreviewFor(ctx context.Context, eventID string, refs []events.Ref, vars map[string]any) ([]Rendered, error) {
	ev, err := w.lookup(eventID)
	if err != nil {
		return nil, err
	}
	p, err := prepare(w.keys, eventID, refs, vars, nil)
	if err != nil {
		return nil, err
	}
	row := &ledger.DispatchRow{ID: p.id, EventID: eventID, Refs: refs, Vars: p.vars, AcceptedAt: time.Now()}
	d, _, err := w.buildDispatch(ctx, row)
	if err != nil {
		return nil, fmt.Errorf("preview %s: %w", eventID, err)
	}
	d.Mode = events.ModePreview
	for name := range p.secrets {
		d.Vars[name] = events.NewSecret(events.SampleString(name))
	}
	if sd, ok := ev.(events.SampleDataer); ok {
		if s, err := sd.SampleData(ctx); err == nil {
			for k, v := range s.Vars {
				if _, given := d.Vars[k]; !given {
					d.Vars[k] = v // what a send would mint, as the sample shows it
				}
			}
		}
	}
	return w.previewOf(ctx, ev, d)
}

// sampleDispatch is the preview dispatch of an event's sample data.
func sampleDispatch(ev events.Event, s events.Sample) *events.Dispatch {
	d := &events.Dispatch{ID: events.SampleID(), EventID: ev.ID(), Mode: events.ModePreview, Actor: "preview",
		AcceptedAt: time.Now(), Data: map[string]any{}, Vars: map[string]any{}}
	for k, v := range s.Data {
		d.Data[k] = v
	}
	for k, v := range s.Vars {
		d.Vars[k] = v
	}
	return d
}

func (w *Worker) lookup(eventID string) (events.Event, error) {
	ev, err := w.reg.Lookup(eventID)
	if err != nil {
		return nil, fmt.Errorf("event %q: %w", eventID, ErrUnknownEvent)
	}
	return ev, nil
}

// previewOf resolves, plans and renders d as a send would, writing nothing.
func (w *Worker) previewOf(ctx context.Context, ev events.Event, d *events.Dispatch) ([]Rendered, error) {
	chs, err := ev.Channels(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("channels: %w", err)
	}
	if err := events.ValidateChannels(chs); err != nil {
		return nil, err
	}
	row := &ledger.DispatchRow{ID: d.ID, EventID: ev.ID(), AcceptedAt: d.AcceptedAt, Queue: w.cfg.Queue}
	var out []Rendered
	for _, ch := range chs {
		rcs, err := previewRecipientsOf(ctx, ev, d, ch)
		if err != nil {
			return nil, err
		}
		answers, err := decide(ctx, ev, d, ch, rcs)
		if err != nil {
			return nil, err
		}
		in := w.planInput(row, ev, ch, rcs, answers, false)
		in.NewID = func() string { return uuid.Must(uuid.NewV7()).String() }
		p := planChunk(in)
		for i, r := range p.Receipts {
			out = append(out, Rendered{Channel: ch, Recipient: rcs[i], Status: r.Status, Reason: r.LastError, DueAt: r.DueAt})
			if r.Status != ledger.ReceiptScheduled {
				continue
			}
			c, err := w.compose(ctx, ev, d, ch, rcs[i])
			if err != nil {
				last := &out[len(out)-1]
				last.Status, last.Reason = ledger.ReceiptFailed, err.Error()
				continue
			}
			last := &out[len(out)-1]
			last.Subject, last.From, last.HTML, last.Text = c.Subject, c.From, c.HTML, c.Text
		}
	}
	return out, nil
}

// previewRecipientsOf is the first recipients of a channel, as many as a preview shows.
func previewRecipientsOf(ctx context.Context, ev events.Event, d *events.Dispatch, ch events.Channel) ([]events.Recipient, error) {
	if pager, ok := ev.(events.RecipientPager); ok {
		page, _, err := pager.RecipientsPage(ctx, d, ch, "", previewRecipients)
		if err != nil {
			return nil, fmt.Errorf("recipients of channel %q: %w", ch.Key, err)
		}
		return page, nil
	}
	rcs, err := ev.Recipients(ctx, d, ch)
	if err != nil {
		return nil, fmt.Errorf("recipients of channel %q: %w", ch.Key, err)
	}
	return rcs[:min(len(rcs), previewRecipients)], nil
}

// Triggered is the answer of a manual trigger: the dispatch and each of its deliveries.
type Triggered struct {
	DispatchID string
	// Duplicate: the idempotency key had been used with the same arguments; DispatchID and
	// Receipts are the first dispatch's.
	Duplicate bool
	Receipts  []*ledger.ReceiptRow
}

// ErrDispatchFailed wraps the reason a triggered dispatch failed in its fan-out (a
// SendVariables error, a missing record, …).
var ErrDispatchFailed = errors.New("the dispatch failed")

// Trigger dispatches eventID now and runs its fan-out in this call, through the worker's own
// code: first sight, mint, plan, commit, hand off (a single immediate delivery is sent inline).
// It returns the dispatch and its receipts. A fan-out that fails (SendVariables refused, a
// record missing) is returned as an error wrapping ErrDispatchFailed, with the reason; the
// dispatch is then recorded failed and nothing is sent. So is a dispatch whose every delivery
// failed (a template error, the sample-data guard, a transport refusing the inline send); the
// receipts are returned with it.
func (w *Worker) Trigger(ctx context.Context, eventID string, refs []events.Ref, vars map[string]any, opts ...Option) (Triggered, error) {
	if _, err := w.lookup(eventID); err != nil {
		return Triggered{}, err
	}
	p, err := prepare(w.keys, eventID, refs, vars, opts)
	if err != nil {
		return Triggered{}, err
	}
	fp, err := canon.Fingerprint(eventID, refs, p.vars)
	if err != nil {
		return Triggered{}, err
	}
	res, err := w.store.InsertDispatch(ctx, ledger.NewDispatch{ID: p.id, EventID: eventID, Refs: refs, Vars: p.vars,
		Sealed: p.secrets, Actor: p.opts.actor, IdempotencyKey: p.opts.key, Fingerprint: fp, Queue: w.cfg.Queue,
		ClaimFor: w.cfg.Lease}, w.cfg.IdempotencyWindow)
	if err != nil {
		return Triggered{}, fmt.Errorf("trigger %s: %w", eventID, err)
	}
	switch res.Outcome {
	case ledger.Duplicate:
		return w.triggered(ctx, res.Of, true)
	case ledger.Conflict:
		return Triggered{}, fmt.Errorf("trigger %s with key %q (first used by %s): %w", eventID, p.opts.key, res.Of, ErrIdempotencyConflict)
	}
	if res.Row == nil || res.Row.Status != ledger.DispatchFanningOut {
		return Triggered{}, fmt.Errorf("trigger %s: the dispatch was not claimed for its fan-out", eventID)
	}
	if err := w.fanOutClaimed(ctx, res.Row); err != nil && !errors.Is(err, asynq.RevokeTask) {
		return Triggered{DispatchID: p.id}, fmt.Errorf("trigger %s: %w", eventID, err)
	}
	row, err := w.store.GetDispatch(ctx, p.id)
	if err != nil {
		return Triggered{DispatchID: p.id}, err
	}
	if row.Status == ledger.DispatchFailed || row.Status == ledger.DispatchRetrying {
		return Triggered{DispatchID: p.id}, fmt.Errorf("trigger %s: %w (%s): %s", eventID, ErrDispatchFailed, row.Status, row.LastError)
	}
	t, err := w.triggered(ctx, p.id, false)
	if err != nil {
		return t, err
	}
	if reason, none := nothingGoesOut(t.Receipts); none {
		return t, fmt.Errorf("trigger %s: %w: no delivery is sent or pending: %s", eventID, ErrDispatchFailed, reason)
	}
	return t, nil
}

// nothingGoesOut reports whether every delivery ended without sending and one failed, with the
// first failure's reason. Deliveries a policy skipped alone are an answer, not a failure.
func nothingGoesOut(rs []*ledger.ReceiptRow) (reason string, none bool) {
	for _, r := range rs {
		switch r.Status {
		case ledger.ReceiptFailed, ledger.ReceiptExpired:
			if reason == "" {
				reason = r.LastError
			}
		case ledger.ReceiptSkipped, ledger.ReceiptCanceled:
		default:
			return "", false // sent, or still to be sent
		}
	}
	return reason, reason != ""
}

func (w *Worker) triggered(ctx context.Context, id string, duplicate bool) (Triggered, error) {
	rs, err := w.store.ListReceipts(ctx, id)
	if err != nil {
		return Triggered{DispatchID: id}, err
	}
	return Triggered{DispatchID: id, Duplicate: duplicate, Receipts: rs}, nil
}
