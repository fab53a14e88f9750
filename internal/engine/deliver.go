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
	var fin ledger.Finished
	err := w.record(ctx, func(ctx context.Context) error {
		var err error
		fin, err = w.store.FinishReceipt(ctx, r.ID, r.Attempt, o)
		return err
	})
	if errors.Is(err, ledger.ErrTransition) {
		if o.Status == ledger.ReceiptSent {
			log.Info().Msg("confirmed send was already recorded (the receipt is final)")
		} else {
			log.Info().Str("outcome", string(o.Status)).Msg("lease was taken over before the outcome was recorded; the new owner carries on")
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("record outcome %s of receipt %s: %w", o.Status, r.ID, err)
	}
	if fin.Overtaken {
		w.metrics.inDoubt.WithLabelValues(inDoubtOvertaken).Inc()
		log.Warn().Msg("the confirmed send was recorded after another worker reclaimed the delivery during a PostgreSQL outage; it may have sent too (in doubt, same Message-ID)")
	}
	if o.InDoubt && o.Status != ledger.ReceiptFailed {
		w.metrics.inDoubt.WithLabelValues(inDoubtLostReply).Inc()
	}
	w.metrics.deliveries.WithLabelValues(r.Transport, string(o.Status)).Inc()
	switch o.Status {
	case ledger.ReceiptSent:
		w.alerts.clear(r.Transport)
		log.Info().Str("message_id", o.MessageID).Msg("sent")
		return nil
	case ledger.ReceiptRetrying:
		ev := log.Info()
		if o.InDoubt {
			ev = log.Warn().Bool("in_doubt", true)
		}
		ev.Str("reason", o.LastError).Time("due_at", o.DueAt).Msg("delivery will be retried")
		if o.DueAt.Before(time.Now().Add(w.cfg.Horizon)) {
			due := []ledger.DueTask{{ID: r.ID, Attempt: r.Attempt, DueAt: o.DueAt}}
			if err := w.store.MarkReceiptsEnqueued(ctx, []string{r.ID}); err == nil {
				w.enqueueReceiptTasks(ctx, due)
			}
		}
		return asynq.RevokeTask
	default:
		log.Warn().Str("outcome", string(o.Status)).Str("reason", o.LastError).Msg("delivery ended without sending")
		return asynq.RevokeTask
	}
}

// attempt decides and performs one delivery; it writes nothing. A panic in event, loader,
// template or transport code is recovered into a temporary failure with a redacted reason.
func (w *Worker) attempt(ctx context.Context, r *ledger.ReceiptRow, pre *hydrated, reclaimed bool) (o ledger.Outcome, red redactor) {
	inSend := false
	defer func() {
		if p := recover(); p != nil {
			if row, err := w.store.GetDispatch(context.WithoutCancel(ctx), r.DispatchID); err == nil {
				red = append(red, w.redactorOf(row)...)
			}
			o = w.temporary(r, red.apply(fmt.Sprintf("panic: %v", p)))
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
		return w.temporary(r, "should send: "+err.Error()), red
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
			return w.temporary(r, err.Error()), red
		} else if !still {
			return ledger.Outcome{}, red // no status: nothing to record
		}
	}
	sctx, cancel := context.WithTimeout(ctx, w.cfg.SendTimeout)
	started := time.Now()
	inSend = true
	res, err := sender.Send(sctx, msg)
	inSend = false
	w.metrics.sendSeconds.WithLabelValues(r.Transport).Observe(time.Since(started).Seconds())
	cancel()
	if err == nil {
		return ledger.Outcome{Status: ledger.ReceiptSent, Subject: msg.Subject, MessageID: msg.MessageID,
			ProviderResponse: res.ProviderResponse}, red
	}
	reason := red.apply(err.Error())
	var ce *channels.Error
	if errors.As(err, &ce) && ce.ConfigAlert && w.alerts.raise(r.Transport) {
		w.log.Error().Str("alert", "transport_configuration").Str("transport", r.Transport).Str("receipt_id", r.ID).
			Str("reason", reason).Msg("the transport refused our session, credentials or TLS settings: deliveries on it are retried until the configuration is fixed")
	}
	switch channels.ClassOf(err) {
	case channels.Permanent:
		return ledger.Outcome{Status: ledger.ReceiptFailed, Subject: msg.Subject, MessageID: msg.MessageID, LastError: reason}, red
	case channels.RateLimited:
		if ce != nil && ce.RetryAfter > 0 && r.Attempt < r.MaxAttempts {
			return ledger.Outcome{Status: ledger.ReceiptRetrying, DueAt: time.Now().Add(ce.RetryAfter), LastError: reason}, red
		}
	}
	o = w.temporary(r, reason)
	o.Subject, o.MessageID = msg.Subject, msg.MessageID
	if ce != nil && ce.InDoubt {
		// The reply to the final "." was lost: the server may have queued the message. The retry
		// carries the same Message-ID; the receipt is flagged and counted (counted window (b)).
		o.InDoubt = true
		o.LastError = "in doubt (the server may have accepted the message): " + o.LastError
	}
	return o, red
}

func (w *Worker) temporary(r *ledger.ReceiptRow, reason string) ledger.Outcome {
	if r.Attempt >= r.MaxAttempts {
		return ledger.Outcome{Status: ledger.ReceiptFailed, LastError: fmt.Sprintf("%s (gave up after %d attempts)", reason, r.Attempt)}
	}
	return ledger.Outcome{Status: ledger.ReceiptRetrying, DueAt: time.Now().Add(w.backoff.Delay(r.Attempt)), LastError: reason}
}

// hydrate loads what a delivery needs when the fan-out did not hand it over.
func (w *Worker) hydrate(ctx context.Context, r *ledger.ReceiptRow) (*hydrated, *ledger.Outcome) {
	row, err := w.store.GetDispatch(ctx, r.DispatchID)
	if err != nil {
		o := w.temporary(r, err.Error())
		return nil, &o
	}
	if row.ScrubbedAt != nil {
		return nil, &ledger.Outcome{Status: ledger.ReceiptFailed, LastError: "the dispatch's secrets were scrubbed (older than the secret retention)"}
	}
	ev, err := w.reg.Lookup(row.EventID)
	if err != nil {
		o := w.temporary(r, fmt.Sprintf("unknown event %q on this worker", row.EventID))
		return nil, &o
	}
	d, red, err := w.buildDispatch(ctx, row)
	switch {
	case errors.Is(err, events.ErrNotFound), errors.Is(err, errBadRef), errors.Is(err, errBadSecret):
		return nil, &ledger.Outcome{Status: ledger.ReceiptFailed, LastError: red.apply(err.Error())}
	case err != nil:
		o := w.temporary(r, red.apply(err.Error()))
		return nil, &o
	}
	chs, _ := ev.Channels(ctx, d) // the receipt's own fields stand in if this fails
	return &hydrated{ev: ev, d: d, red: red, channels: chs}, nil
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
	subject, err := events.SubjectOf(ctx, ev, d, ch, rc)
	if err != nil {
		return channels.Message{}, fmt.Errorf("subject: %w", err)
	}
	assigns, err := templates.Assigns(ctx, ev, d, ch, rc, subject)
	if err != nil {
		return channels.Message{}, err
	}
	out, err := w.renderer.Render(ev.ID(), ch.Transport, events.VariantOf(ctx, ev, d, ch), subject, assigns)
	if err != nil {
		return channels.Message{}, err
	}
	from := w.from
	if f, ok := ev.(events.Fromer); ok {
		if from, err = f.From(ctx, d, ch); err != nil {
			return channels.Message{}, fmt.Errorf("from: %w", err)
		}
	}
	if events.ContainsSample(subject) || events.ContainsSample(out.Text) || events.ContainsSample(html.UnescapeString(out.HTML)) ||
		events.ContainsSample(rc.Address) || events.ContainsSample(from.Address) {
		return channels.Message{}, errSampleLeak
	}
	return channels.Message{
		ReceiptID: r.ID, MessageID: "<" + r.ID + "@" + w.domain + ">",
		FromName: from.Name, From: from.Address, ToName: rc.Name, To: rc.Address,
		Subject: subject, HTML: out.HTML, Text: out.Text,
	}, nil
}
