package engine

import (
	"context"
	"errors"
	"fmt"
	"html"
	"time"

	"github.com/hibiken/asynq"

	"github.com/heraldhq/herald/channels"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/tasks"
	"github.com/heraldhq/herald/templates"
)

// Deliver is the herald:deliver handler: claim the receipt, render, send, record.
func (w *Worker) Deliver(ctx context.Context, _ *asynq.Task, p tasks.DeliverPayload) error {
	return w.deliver(ctx, p.ReceiptID, nil)
}

// hydrated is a dispatch the fan-out already loaded, handed to its inline delivery so it is not
// read, unsealed and hydrated a second time.
type hydrated struct {
	ev       events.Event
	d        *events.Dispatch
	red      redactor
	channels []events.Channel
}

// deliver runs one delivery attempt through the claim and the fenced final update. It is
// shared by the deliver task and the fan-out's inline delivery.
func (w *Worker) deliver(ctx context.Context, id string, pre *hydrated) error {
	c, out, err := w.store.ClaimReceipt(ctx, id, w.cfg.Lease)
	if err != nil {
		return err
	}
	switch out {
	case ledger.ClaimMissing:
		return w.rejectID(ctx, tasks.TypeDeliver, tasks.DeliverTaskID(id, 0), "receipt "+id+" does not exist")
	case ledger.ClaimNotDue:
		r, err := w.store.GetReceipt(ctx, id)
		if err != nil {
			return err
		}
		return &notDueError{due: r.DueAt}
	case ledger.ClaimBusy:
		return nil
	}
	return w.deliverClaimed(ctx, c, pre)
}

// deliverClaimed runs the attempt of a claimed delivery and records its outcome, fenced.
func (w *Worker) deliverClaimed(ctx context.Context, c *ledger.Claim, pre *hydrated) error {
	r := c.Receipt
	log := w.log.With().Str("receipt_id", r.ID).Str("dispatch_id", r.DispatchID).Str("event_id", r.EventID).
		Str("channel", r.ChannelKey).Int("attempt", r.Attempt).Logger()
	var o ledger.Outcome
	var red redactor
	switch {
	case r.Attempt > r.MaxAttempts:
		// Only a reclaim gets here (ordinary failures stop at MaxAttempts): the last attempts ended
		// without an outcome — a crash, a kill, a panic that took the process.
		o = ledger.Outcome{Status: ledger.ReceiptFailed, InDoubt: c.Reclaimed,
			LastError: fmt.Sprintf("gave up after %d attempts: the last one ended without recording an outcome (worker stopped or crashed)", r.MaxAttempts)}
	default:
		if c.Reclaimed {
			w.metrics.inDoubtReclaims.Inc()
			w.metrics.inDoubt.WithLabelValues(inDoubtReclaim).Inc()
			log.Warn().Msg("reclaimed a delivery whose earlier attempt may have sent (in doubt); sending again with the same Message-ID")
		}
		o, red = w.attempt(ctx, r, pre, c.Reclaimed)
	}
	if o.Status == "" {
		log.Info().Msg("the delivery changed hands before this reclaim sent it (an earlier attempt's outcome landed); not sending")
		return nil
	}
	o.LastError = red.apply(o.LastError)
	o.Subject = red.apply(o.Subject)
	return w.recordDelivery(ctx, r, o, log)
}

// attempt decides and performs one delivery, as steps: check its age, hydrate (unless the
// fan-out handed the dispatch over), check ShouldSend, render, check the transport and (after a
// reclaim) that the delivery is still ours, send, and map the answer to an outcome
// (sendOutcome). It writes nothing: deliverClaimed records the outcome. A panic in event,
// loader, template or transport code is recovered into a temporary failure with a redacted
// reason.
func (w *Worker) attempt(ctx context.Context, r *ledger.ReceiptRow, pre *hydrated, reclaimed bool) (o ledger.Outcome, red redactor) {
	inSend := false
	defer func() {
		if p := recover(); p != nil {
			if row, err := w.store.GetDispatch(context.WithoutCancel(ctx), r.DispatchID); err == nil {
				red = append(red, w.redactorOf(row)...)
			}
			o = w.retryDelivery(r, red.apply(fmt.Sprintf("panic: %v", p)))
			o.InDoubt = inSend // the transport may have taken the message before it panicked
			w.log.Error().Str("receipt_id", r.ID).Str("event_id", r.EventID).Str("panic", o.LastError).
				Msg("recovered a panic in event or transport code; the delivery will be retried (fix the code)")
		}
	}()
	if time.Now().After(r.ExpiresAt) {
		return ledger.Outcome{Status: ledger.ReceiptExpired,
			LastError: fmt.Sprintf("past the event's max age: due %s, expired %s", r.DueAt.UTC().Format(time.RFC3339), r.ExpiresAt.UTC().Format(time.RFC3339))}, nil
	}
	if pre == nil {
		var po *ledger.Outcome
		pre, po = w.hydrate(ctx, r)
		if pre != nil {
			red = pre.red
		}
		if po != nil {
			return *po, red
		}
	}
	ev, d := pre.ev, pre.d
	red = pre.red
	ch := channelOf(pre.channels, r)
	rc := events.Recipient{ID: r.RecipientID, Address: r.Recipient.Address, Name: r.Recipient.Name, Locale: r.Recipient.Locale}
	if dec, err := events.ShouldSendOf(ctx, ev, d, ch, rc); err != nil {
		return w.retryDelivery(r, "should send: "+err.Error()), red
	} else if !dec.Send {
		return ledger.Outcome{Status: ledger.ReceiptSkipped, LastError: cmpOr(dec.Reason, "should_send said no")}, red
	}
	msg, err := w.render(ctx, ev, d, ch, rc, r)
	if err != nil {
		return ledger.Outcome{Status: ledger.ReceiptFailed, LastError: err.Error()}, red
	}
	sender := w.cfg.Senders[r.Transport]
	if sender == nil {
		return ledger.Outcome{Status: ledger.ReceiptFailed, LastError: fmt.Sprintf("no sender configured for transport %q", r.Transport)}, red
	}
	if reclaimed {
		// The attempt this one took over may have recorded its confirmed send meanwhile (it was
		// waiting for PostgreSQL): re-read the row just before sending.
		if still, err := w.store.StillClaimed(ctx, r.ID, r.Attempt); err != nil {
			return w.retryDelivery(r, err.Error()), red
		} else if !still {
			return ledger.Outcome{}, red // no status: nothing to record
		}
	}
	res, err := w.send(ctx, sender, r.Transport, msg, &inSend)
	reason := ""
	if err != nil {
		reason = red.apply(err.Error())
		w.alertOnConfig(err, r, reason)
	}
	return sendOutcome(r.Attempt, r.MaxAttempts, msg, res, err, reason, time.Now(), w.backoff), red
}

// send hands msg to the transport, bounded by SendTimeout. *inSend is true while the transport
// has it (a panic then may have sent).
func (w *Worker) send(ctx context.Context, sender channels.Sender, transport string, msg channels.Message, inSend *bool) (channels.Result, error) {
	sctx, cancel := context.WithTimeout(ctx, w.cfg.SendTimeout)
	defer cancel()
	started := time.Now()
	*inSend = true
	res, err := sender.Send(sctx, msg)
	*inSend = false
	w.metrics.sendSeconds.WithLabelValues(transport).Observe(time.Since(started).Seconds())
	return res, err
}

// alertOnConfig raises the configuration alert once per transport when the transport refused
// our session, credentials or TLS settings (cleared by the next send that goes through).
func (w *Worker) alertOnConfig(err error, r *ledger.ReceiptRow, reason string) {
	var ce *channels.Error
	if errors.As(err, &ce) && ce.ConfigAlert && w.alerts.raise(r.Transport) {
		w.log.Error().Str("alert", "transport_configuration").Str("transport", r.Transport).Str("receipt_id", r.ID).
			Str("reason", reason).Msg("the transport refused our session, credentials or TLS settings: deliveries on it are retried until the configuration is fixed")
	}
}

// retryDelivery is a temporary failure of this attempt: retried after the backoff, or failed once
// the attempts are spent.
func (w *Worker) retryDelivery(r *ledger.ReceiptRow, reason string) ledger.Outcome {
	return retryOutcome(r.Attempt, r.MaxAttempts, reason, time.Now(), w.backoff)
}

// channelOf finds the receipt's channel among the event's channels, falling back to what the
// receipt recorded.
func channelOf(chs []events.Channel, r *ledger.ReceiptRow) events.Channel {
	for _, ch := range chs {
		if ch.Key == r.ChannelKey {
			return ch
		}
	}
	return events.Channel{Key: r.ChannelKey, Transport: r.Transport, Audience: r.Audience}
}

// errSampleLeak is the sample-leak guard's refusal.
var errSampleLeak = errors.New("refusing to send: the content carries the sample-data marker (preview data reached the send path)")

func (w *Worker) render(ctx context.Context, ev events.Event, d *events.Dispatch, ch events.Channel, rc events.Recipient, r *ledger.ReceiptRow) (channels.Message, error) {
	c, err := w.compose(ctx, ev, d, ch, rc)
	if err != nil {
		return channels.Message{}, err
	}
	if events.ContainsSample(c.Subject) || events.ContainsSample(c.Text) || events.ContainsSample(html.UnescapeString(c.HTML)) ||
		events.ContainsSample(rc.Address) || events.ContainsSample(c.From.Address) {
		return channels.Message{}, errSampleLeak
	}
	return channels.Message{
		ReceiptID: r.ID, MessageID: "<" + r.ID + "@" + w.domain + ">",
		FromName: c.From.Name, From: c.From.Address, ToName: rc.Name, To: rc.Address,
		Subject: c.Subject, HTML: c.HTML, Text: c.Text,
	}, nil
}

// composed is one delivery's rendered content.
type composed struct {
	Subject    string
	From       events.Address
	HTML, Text string
}

// compose renders one delivery: subject, sender, HTML and text. It is shared by the send path
// (render, which then refuses sample data) and the previews (which show it, marked).
func (w *Worker) compose(ctx context.Context, ev events.Event, d *events.Dispatch, ch events.Channel, rc events.Recipient) (composed, error) {
	subject, err := events.SubjectOf(ctx, ev, d, ch, rc)
	if err != nil {
		return composed{}, fmt.Errorf("subject: %w", err)
	}
	assigns, err := templates.Assigns(ctx, ev, d, ch, rc, subject)
	if err != nil {
		return composed{}, err
	}
	out, err := w.renderer.Render(ev.ID(), ch.Transport, events.VariantOf(ctx, ev, d, ch), subject, assigns)
	if err != nil {
		return composed{}, err
	}
	from := w.from
	if f, ok := ev.(events.Fromer); ok {
		if from, err = f.From(ctx, d, ch); err != nil {
			return composed{}, fmt.Errorf("from: %w", err)
		}
	}
	return composed{Subject: subject, From: from, HTML: out.HTML, Text: out.Text}, nil
}
