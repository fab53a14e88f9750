package engine

import (
	"context"
	"fmt"
	"time"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/ledger"
)

// planInput is everything the plan of one chunk decides from. Every answer event code gives
// (channels, recipients, ShouldSend) is already in it: the plan itself asks nothing, reads
// nothing and writes nothing, so a preview and an explain trace can call it as a send does.
type planInput struct {
	DispatchID string
	EventID    string
	// AcceptedAt is when the dispatch was accepted: channel delays count from it.
	AcceptedAt time.Time
	// Queue is the fleet that drives the deliveries (the dispatch's, else the worker's).
	Queue string
	// Channel is the channel of this chunk; Recipients its recipients in this chunk, and
	// Answers the event's ShouldSend answer for each, in the same order.
	Channel    events.Channel
	Recipients []events.Recipient
	Answers    []events.Decision
	// MaxAge is how long after its due time a delivery may still be sent (events.MaxAgeOf).
	MaxAge time.Duration
	// MaxAttempts is the worker's attempt ceiling, used unless the channel's policy sets one.
	MaxAttempts int
	// CanSend reports whether this worker has a sender for a transport.
	CanSend func(transport string) bool
	// Now and Horizon: deliveries due before Now+Horizon get their task at once; later ones wait
	// for the promoter.
	Now     time.Time
	Horizon time.Duration
	// Inline allows sending the chunk's single immediate delivery in this task (the chunk is the
	// whole fan-out and inline delivery is enabled); Lease is then its claim.
	Inline bool
	Lease  time.Duration
	// NewID makes receipt ids.
	NewID func() string
}

// chunkPlan is what the plan decided for one chunk.
type chunkPlan struct {
	// Receipts are the deliveries to insert: scheduled; sending (the inline one, claimed); or
	// skipped or failed with the reason.
	Receipts []ledger.NewReceipt
	// Inline is the index in Receipts of the delivery sent in this task, or -1.
	Inline int
	// Due are the deliveries whose task is enqueued now (due within the horizon), marked
	// enqueued in Receipts.
	Due []ledger.DueTask
}

// planChunk turns one chunk of a channel's recipients into deliveries: for each recipient its
// key, due and expiry times, attempt ceiling and state — scheduled, or skipped or failed with
// the reason when ShouldSend said no, the recipient has no key, or no transport serves the
// channel — then which one is sent inline and which are handed to asynq now.
func planChunk(in planInput) chunkPlan {
	due := in.Channel.Time.DueAt(in.AcceptedAt)
	maxAttempts := in.Channel.Policy.MaxAttempts
	if maxAttempts <= 0 {
		maxAttempts = in.MaxAttempts
	}
	p := chunkPlan{Receipts: make([]ledger.NewReceipt, 0, len(in.Recipients)), Inline: -1}
	for i, rc := range in.Recipients {
		nr := ledger.NewReceipt{ID: in.NewID(), DispatchID: in.DispatchID, EventID: in.EventID,
			ChannelKey: in.Channel.Key, Transport: in.Channel.Transport, Audience: in.Channel.Audience, RecipientID: rc.Key(),
			Recipient:   ledger.Recipient{Address: rc.Address, Name: rc.Name, Locale: rc.Locale},
			MaxAttempts: maxAttempts, DueAt: due, ExpiresAt: due.Add(in.MaxAge), Queue: in.Queue}
		switch dec := in.Answers[i]; {
		case rc.Key() == "":
			nr.RecipientID, nr.Status, nr.LastError = "invalid:"+nr.ID, ledger.ReceiptSkipped, "recipient has neither id nor address"
		case !dec.Send:
			nr.Status, nr.LastError = ledger.ReceiptSkipped, cmpOr(dec.Reason, "should_send said no")
		case !in.CanSend(in.Channel.Transport):
			nr.Status, nr.LastError = ledger.ReceiptFailed, fmt.Sprintf("no sender configured for transport %q on this worker", in.Channel.Transport)
		default:
			nr.Status = ledger.ReceiptScheduled
		}
		p.Receipts = append(p.Receipts, nr)
	}
	if in.Inline {
		p.Inline = inlineOf(p.Receipts, in.Now)
		if p.Inline >= 0 {
			p.Receipts[p.Inline].Status, p.Receipts[p.Inline].ClaimFor = ledger.ReceiptSending, in.Lease
		}
	}
	horizon := in.Now.Add(in.Horizon)
	for i := range p.Receipts {
		if r := &p.Receipts[i]; i != p.Inline && r.Status == ledger.ReceiptScheduled && !r.DueAt.After(horizon) {
			r.Enqueued = true
			p.Due = append(p.Due, ledger.DueTask{ID: r.ID, DueAt: r.DueAt})
		}
	}
	return p
}

// inlineOf picks the delivery to send in this task: the only scheduled one, when it is due by
// now. -1: none.
func inlineOf(rs []ledger.NewReceipt, now time.Time) int {
	inline := -1
	for i := range rs {
		if rs[i].Status != ledger.ReceiptScheduled {
			continue
		}
		if inline >= 0 {
			return -1
		}
		inline = i
	}
	if inline < 0 || rs[inline].DueAt.After(now) {
		return -1
	}
	return inline
}

// decide asks the event's ShouldSend for every recipient of a chunk: the one answer of the plan
// that event code gives per recipient. Asked once here, and again at send time.
func decide(ctx context.Context, ev events.Event, d *events.Dispatch, ch events.Channel, rcs []events.Recipient) ([]events.Decision, error) {
	out := make([]events.Decision, len(rcs))
	for i, rc := range rcs {
		dec, err := events.ShouldSendOf(ctx, ev, d, ch, rc)
		if err != nil {
			return nil, fmt.Errorf("should send (channel %q): %w", ch.Key, err)
		}
		out[i] = dec
	}
	return out, nil
}
