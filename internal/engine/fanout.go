package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/canon"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/tasks"
)

// FanOut is the herald:dispatch handler: record the dispatch on first sight, then fan
// it out into receipts (DESIGN.md, "fan-out").
func (w *Worker) FanOut(ctx context.Context, t *asynq.Task, p tasks.DispatchPayload) error {
	if p.EventID != "" {
		row, err := w.firstSight(ctx, p)
		if errors.Is(err, errSettled) {
			return asynq.RevokeTask
		}
		if err != nil && !isConnError(err) && ctx.Err() == nil {
			// PostgreSQL refused what the producer sent: retrying cannot help, and asynq would
			// archive the task after its retries with no record anywhere. Record it for good.
			return w.reject(ctx, t, "PostgreSQL refused the dispatch on first sight: "+err.Error())
		}
		if err != nil {
			return err // waiting for PostgreSQL: not counted as a failure (see guard)
		}
		if row != nil && row.Status == ledger.DispatchFanningOut {
			return w.fanOutClaimed(ctx, row) // inserted already claimed
		}
	}
	return w.fanOut(ctx, p.DispatchID)
}

var errSettled = errors.New("settled on first sight")

// workerName names this process in messages an operator reads: host and pid.
var workerName = func() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s[%d]", cmpOr(h, "unknown-host"), os.Getpid())
}()

// eventList lists the ids of the events this worker serves, for messages.
func (w *Worker) eventList() string {
	var ids []string
	for _, ev := range w.reg.Events() {
		ids = append(ids, ev.ID())
	}
	if len(ids) == 0 {
		return "none"
	}
	return strings.Join(ids, ", ")
}

// firstSight inserts the dispatch row from the payload — claimed for this worker when it is
// due — answering idempotency. It returns the inserted row, or nil if the row already existed.
func (w *Worker) firstSight(ctx context.Context, p tasks.DispatchPayload) (*ledger.DispatchRow, error) {
	fp, err := canon.Fingerprint(p.EventID, p.Refs, p.Vars) // vars were checked by tasks.DecodeDispatch
	if err != nil {
		return nil, err
	}
	vars, err := canon.Vars(p.Vars)
	if err != nil {
		return nil, err
	}
	if p.AcceptedAt.After(time.Now().Add(time.Minute)) {
		// A producer's clock running fast (or a forged payload) must not delay the sends: the
		// worker's first sight is as late as a dispatch can have been accepted.
		w.log.Warn().Str("dispatch_id", p.DispatchID).Time("accepted_at", p.AcceptedAt).
			Msg("dispatch accepted in the future (producer clock ahead?); using the time the worker first saw it")
		p.AcceptedAt = time.Time{}
	}
	nd := ledger.NewDispatch{ID: p.DispatchID, EventID: p.EventID, Refs: p.Refs, Vars: vars, Sealed: p.Secrets,
		Actor: p.Actor, IdempotencyKey: p.IdempotencyKey, Fingerprint: fp, AcceptedAt: p.AcceptedAt, ClaimFor: w.cfg.Lease,
		Queue: w.cfg.Queue}
	res, err := w.store.InsertDispatch(ctx, nd, w.cfg.IdempotencyWindow)
	if err != nil {
		return nil, err
	}
	if res.Outcome == ledger.Duplicate || res.Outcome == ledger.Conflict {
		if err := w.store.InsertSettled(ctx, nd, res); err != nil {
			return nil, err
		}
		ev := w.log.Info()
		if res.Outcome == ledger.Conflict {
			ev = w.log.Warn()
		}
		w.metrics.dispatches.WithLabelValues(map[bool]string{true: "rejected", false: "duplicate"}[res.Outcome == ledger.Conflict]).Inc()
		ev.Str("dispatch_id", p.DispatchID).Str("event_id", p.EventID).Str("of", res.Of).
			Bool("conflict", res.Outcome == ledger.Conflict).Msg("idempotency key already used; nothing sent")
		return nil, errSettled
	}
	return res.Row, nil
}

// Undecodable answers a payload tasks.DecodeDispatch or tasks.DecodeDeliver refused: one of a
// newer version waits for a worker that understands it (holdNewer); a malformed one is rejected.
func (w *Worker) Undecodable(ctx context.Context, t *asynq.Task, err error) error {
	var newer *tasks.NewerPayloadError
	if errors.As(err, &newer) {
		return w.holdNewer(ctx, t, newer)
	}
	return w.reject(ctx, t, err.Error())
}

// reject records a task too broken to have a row of its own, then revokes it. Its payload is not
// kept (see ledger.RejectedTask).
func (w *Worker) reject(ctx context.Context, t *asynq.Task, reason string) error {
	id, _ := asynq.GetTaskID(ctx)
	q, _ := asynq.GetQueueName(ctx)
	if err := w.store.RecordRejectedTask(ctx, t.Type(), id, q, reason, t.Payload()); err != nil {
		return err
	}
	w.metrics.rejected.WithLabelValues(t.Type()).Inc()
	w.log.Warn().Str("task_type", t.Type()).Str("task_id", id).Str("reason", reason).Msg("task rejected")
	return asynq.RevokeTask
}

// fanOut claims the dispatch and turns it into receipts.
func (w *Worker) fanOut(ctx context.Context, id string) error {
	row, out, err := w.store.ClaimDispatch(ctx, id, w.cfg.Lease)
	if err != nil {
		return err
	}
	switch out {
	case ledger.ClaimMissing:
		return w.rejectID(ctx, tasks.TypeDispatch, tasks.DispatchTaskID(id, 0), "dispatch "+id+" does not exist")
	case ledger.ClaimNotDue:
		d, err := w.store.GetDispatch(ctx, id)
		if err != nil {
			return err
		}
		return &notDueError{due: d.DueAt}
	case ledger.ClaimBusy:
		// Held by another worker, or final: canceled, perhaps by a tombstone that waited for this
		// task, which the retention may delete once this task has met it.
		return w.store.MeetTombstone(ctx, id)
	}
	return w.fanOutClaimed(ctx, row)
}

// fanOutClaimed runs the fan-out of a dispatch this worker has claimed.
func (w *Worker) fanOutClaimed(ctx context.Context, row *ledger.DispatchRow) error {
	f := &fanout{w: w, row: row}
	if row.Attempt > w.cfg.MaxAttempts {
		// Only a reclaim gets here (ordinary failures stop at MaxAttempts): the last fan-outs
		// ended without an outcome — a crash, a kill, a fan-out that never finished.
		f.fail(ctx, fmt.Sprintf("gave up after %d fan-out attempts: the last one ended without recording an outcome (worker stopped or crashed)", w.cfg.MaxAttempts))
	} else {
		f.run(ctx)
	}
	if errors.Is(f.err, ledger.ErrTransition) {
		w.log.Warn().Str("dispatch_id", row.ID).Int("attempt", row.Attempt).Msg("fan-out lease was taken over; leaving the dispatch to its new owner")
		return nil
	}
	return f.err
}

func (w *Worker) rejectID(ctx context.Context, typ, taskID, reason string) error {
	if id, ok := asynq.GetTaskID(ctx); ok {
		taskID = id
	}
	q, _ := asynq.GetQueueName(ctx)
	if err := w.store.RecordRejectedTask(ctx, typ, taskID, q, reason, nil); err != nil {
		return err
	}
	w.metrics.rejected.WithLabelValues(typ).Inc()
	w.log.Warn().Str("task_type", typ).Str("task_id", taskID).Str("reason", reason).Msg("task rejected")
	return asynq.RevokeTask
}

type fanout struct {
	w   *Worker
	row *ledger.DispatchRow
	red redactor
	err error // a database error: asynq retries the task
}

// run executes steps 2–7 of the fan-out; every exit records an outcome. A panic in event or
// loader code is recovered into a temporary failure with a redacted reason.
func (f *fanout) run(ctx context.Context) {
	w, row := f.w, f.row
	committed := false
	defer func() {
		if p := recover(); p != nil {
			if committed {
				panic(p) // not event code: the engine's own guard reports it
			}
			reason := append(f.red, w.redactorOf(row)...).apply(fmt.Sprintf("panic: %v", p))
			w.log.Error().Str("dispatch_id", row.ID).Str("event_id", row.EventID).Str("panic", reason).
				Msg("recovered a panic in event or loader code; the fan-out will be retried (fix the code)")
			f.temporary(ctx, reason)
		}
	}()
	if err := events.ValidateID(row.EventID); err != nil {
		f.fail(ctx, err.Error()) // no worker could ever register it
		return
	}
	ev, err := w.reg.Lookup(row.EventID)
	if err != nil {
		f.unknown(ctx, fmt.Sprintf("unknown event %q: the worker %s on queue %q does not have it registered (events it serves: %s)",
			row.EventID, workerName, w.cfg.Queue, w.eventList()))
		return
	}
	d, red, err := w.buildDispatch(ctx, row)
	f.red = red
	switch {
	case errors.Is(err, events.ErrNotFound):
		if row.Attempt <= w.cfg.MissingRowRetries {
			f.retry(ctx, time.Now().Add(w.cfg.MissingRowDelay), err.Error())
		} else {
			f.fail(ctx, err.Error())
		}
		return
	case errors.Is(err, errNoLoader):
		f.unknown(ctx, err.Error())
		return
	case errors.Is(err, errBadRef), errors.Is(err, errBadSecret):
		f.fail(ctx, err.Error())
		return
	case err != nil:
		f.temporary(ctx, err.Error())
		return
	}

	// Step 4 (mint): secrets minted once and sealed. They commit with the first chunk of
	// receipts, so no receipt ever exists without them; a resumed fan-out reuses them.
	var minted map[string]ledger.Minted
	if sv, ok := ev.(events.SendVariabler); ok && row.Minted == nil {
		vars, err := sv.SendVariables(ctx, d)
		if err != nil {
			f.fail(ctx, "send variables: "+err.Error())
			return
		}
		var red redactor
		minted, red, err = w.sealMinted(row.ID, vars)
		f.red = append(f.red, red...)
		if err != nil {
			f.fail(ctx, err.Error())
			return
		}
		for k, v := range vars {
			d.Vars[k] = v
		}
	}

	// Step 5 (plan): channels → recipients → policies → receipts, one chunk at a time.
	chs, err := ev.Channels(ctx, d)
	if err != nil {
		f.temporary(ctx, "channels: "+err.Error())
		return
	}
	if err := events.ValidateChannels(chs); err != nil {
		f.fail(ctx, err.Error())
		return
	}
	pos := f.progress(chs)
	started := time.Now()
	slice := min(w.cfg.TaskTimeout, w.cfg.Lease) / 2
	first := pos.Chunks == 0
	pages := &recipientPages{ev: ev, d: d, chs: chs, pos: pos, size: w.cfg.FanoutChunk}
	for {
		ch, rcs, next, err := pages.next(ctx)
		if err != nil {
			f.temporary(ctx, err.Error())
			return
		}
		rs, err := w.plan(ctx, ev, d, row, ch, rcs)
		if err != nil {
			f.temporary(ctx, err.Error())
			return
		}
		last := next.Done
		inline := -1
		if first && last {
			inline = w.inlineOf(rs)
		}
		toEnqueue := w.markDue(rs, inline)

		// Steps 6–7 (commit): the chunk, the minted values (first chunk) and either the progress
		// (more to come; the lease is extended) or fanned_out commit together, fenced on the
		// attempt: a canceled dispatch or a lease taken over commits nothing.
		next.Chunks = pos.Chunks + 1
		var inserted []string
		err = w.record(ctx, func(ctx context.Context) error {
			return pgx.BeginFunc(ctx, w.cfg.DB, func(tx pgx.Tx) error {
				st := ledger.New(tx)
				if minted != nil {
					if err := st.StoreMinted(ctx, row.ID, row.Attempt, minted); err != nil {
						return err
					}
				}
				var err error
				if inserted, err = st.InsertNewReceipts(ctx, rs); err != nil {
					return err
				}
				if last {
					return st.FinishDispatch(ctx, row.ID, row.Attempt, ledger.DispatchFannedOut, time.Time{}, "")
				}
				b, _ := json.Marshal(next)
				return st.SaveFanoutProgress(ctx, row.ID, row.Attempt, b, w.cfg.Lease)
			})
		})
		if err != nil {
			f.err = err
			return
		}
		minted, first, pos = nil, false, next
		committed = last

		// Hand off: deliveries due within the horizon get their tasks; later ones wait for the
		// promoter. Only receipts this chunk inserted: a resumed chunk's existing ones have theirs.
		if last && inline >= 0 && len(inserted) == 1 && inserted[0] == rs[inline].ID {
			w.metrics.dispatches.WithLabelValues(string(ledger.DispatchFannedOut)).Inc()
			r, err := w.store.GetReceipt(ctx, rs[inline].ID)
			if err != nil {
				f.err = err
				return
			}
			f.err = w.deliverClaimed(ctx, &ledger.Claim{Receipt: r}, &hydrated{ev: ev, d: d, red: f.red, channels: chs})
			return
		}
		w.enqueueReceiptTasks(ctx, onlyInserted(toEnqueue, inserted))
		if last {
			w.metrics.dispatches.WithLabelValues(string(ledger.DispatchFannedOut)).Inc()
			w.log.Debug().Str("dispatch_id", row.ID).Str("event_id", row.EventID).Int("chunks", pos.Chunks).Msg("fanned out")
			return
		}
		if time.Since(started) > slice || ctx.Err() != nil {
			f.yield(ctx)
			return
		}
	}
}

// fanoutPos is where a fan-out has got to: stored with each chunk it commits.
type fanoutPos struct {
	Channel string `json:"channel"`            // key of the channel being fanned out ("" before the first)
	Cursor  string `json:"cursor,omitempty"`   // RecipientPager: the next page's cursor
	Offset  int    `json:"offset,omitempty"`   // plain Recipients: how many of the list are committed
	LastKey string `json:"last_key,omitempty"` // plain Recipients: the key of the last one committed
	Chunks  int    `json:"chunks"`             // chunks committed so far
	Done    bool   `json:"-"`                  // nothing after this chunk
}

// progress reads where an earlier attempt or time slice of this fan-out stopped.
func (f *fanout) progress(chs []events.Channel) fanoutPos {
	pos := fanoutPos{Channel: chs[0].Key}
	if f.row.Progress == nil {
		return pos
	}
	if err := json.Unmarshal(f.row.Progress, &pos); err != nil {
		return fanoutPos{Channel: chs[0].Key} // unreadable: start over (ON CONFLICT keeps it single)
	}
	return pos
}

// recipientPages walks the channels' recipients from a position, one chunk at a time.
type recipientPages struct {
	ev   events.Event
	d    *events.Dispatch
	chs  []events.Channel
	pos  fanoutPos
	size int
	list []events.Recipient // plain Recipients of the current channel, fetched once per run
	for_ string             // the channel list belongs to
}

// next returns the channel and recipients of the next chunk and the position after it.
func (p *recipientPages) next(ctx context.Context) (events.Channel, []events.Recipient, fanoutPos, error) {
	i := slices.IndexFunc(p.chs, func(c events.Channel) bool { return c.Key == p.pos.Channel })
	if i < 0 {
		i, p.pos = 0, fanoutPos{Channel: p.chs[0].Key, Chunks: p.pos.Chunks} // the channels changed: start over
	}
	ch := p.chs[i]
	var rcs []events.Recipient
	next := p.pos
	if pager, ok := p.ev.(events.RecipientPager); ok {
		page, cursor, err := pager.RecipientsPage(ctx, p.d, ch, p.pos.Cursor, p.size)
		if err != nil {
			return ch, nil, next, fmt.Errorf("recipients of channel %q: %w", ch.Key, err)
		}
		rcs, next.Cursor = page, cursor
		if cursor != "" {
			p.pos = next
			return ch, rcs, next, nil
		}
	} else {
		if p.for_ != ch.Key {
			list, err := p.ev.Recipients(ctx, p.d, ch)
			if err != nil {
				return ch, nil, next, fmt.Errorf("recipients of channel %q: %w", ch.Key, err)
			}
			p.list, p.for_ = list, ch.Key
			// Resuming into a list fetched again: if it changed before the offset (a recipient
			// left or joined), the offset no longer points after what was committed. Start the
			// channel over; receipts already written are kept once (ON CONFLICT).
			if o := p.pos.Offset; o > 0 && (o > len(list) || list[o-1].Key() != p.pos.LastKey) {
				p.pos.Offset = 0
			}
		}
		from := min(p.pos.Offset, len(p.list))
		to := min(from+p.size, len(p.list))
		rcs, next.Offset = p.list[from:to], to
		if to > 0 {
			next.LastKey = p.list[to-1].Key()
		}
		if to < len(p.list) {
			p.pos = next
			return ch, rcs, next, nil
		}
	}
	// This channel is done: the next position is the start of the next channel.
	if i+1 < len(p.chs) {
		next = fanoutPos{Channel: p.chs[i+1].Key, Chunks: p.pos.Chunks}
	} else {
		next.Done = true
	}
	p.pos = next
	return ch, rcs, next, nil
}

// plan turns one chunk of a channel's recipients into receipts: the recipient key, the due
// and expiry times, the attempt ceiling, and the status — scheduled, or skipped/failed with the
// reason when a policy says no, the recipient has no key, or no transport serves the channel.
func (w *Worker) plan(ctx context.Context, ev events.Event, d *events.Dispatch, row *ledger.DispatchRow, ch events.Channel, rcs []events.Recipient) ([]ledger.NewReceipt, error) {
	due := ch.Time.DueAt(row.AcceptedAt)
	maxAttempts := ch.Policy.MaxAttempts
	if maxAttempts <= 0 {
		maxAttempts = w.cfg.MaxAttempts
	}
	rs := make([]ledger.NewReceipt, 0, len(rcs))
	for _, rc := range rcs {
		nr := ledger.NewReceipt{ID: uuid.Must(uuid.NewV7()).String(), DispatchID: row.ID, EventID: row.EventID,
			ChannelKey: ch.Key, Transport: ch.Transport, Audience: ch.Audience, RecipientID: rc.Key(),
			Recipient:   ledger.Recipient{Address: rc.Address, Name: rc.Name, Locale: rc.Locale},
			MaxAttempts: maxAttempts, DueAt: due, ExpiresAt: due.Add(events.MaxAgeOf(ev, ch)), Queue: cmpOr(row.Queue, w.cfg.Queue)}
		switch dec, err := events.ShouldSendOf(ctx, ev, d, ch, rc); {
		case err != nil:
			return nil, fmt.Errorf("should send (channel %q): %w", ch.Key, err)
		case rc.Key() == "":
			nr.RecipientID, nr.Status, nr.LastError = "invalid:"+nr.ID, ledger.ReceiptSkipped, "recipient has neither id nor address"
		case !dec.Send:
			nr.Status, nr.LastError = ledger.ReceiptSkipped, cmpOr(dec.Reason, "should_send said no")
		case w.cfg.Senders[ch.Transport] == nil:
			nr.Status, nr.LastError = ledger.ReceiptFailed, fmt.Sprintf("no sender configured for transport %q on this worker", ch.Transport)
		default:
			nr.Status = ledger.ReceiptScheduled
		}
		rs = append(rs, nr)
	}
	return rs, nil
}

// inlineOf picks the delivery to send in this task: the only scheduled one, when it is due now
// (it is inserted already claimed). -1: none.
func (w *Worker) inlineOf(rs []ledger.NewReceipt) int {
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
	if inline < 0 || w.cfg.DisableInline || rs[inline].DueAt.After(time.Now()) {
		return -1
	}
	rs[inline].Status, rs[inline].ClaimFor = ledger.ReceiptSending, w.cfg.Lease
	return inline
}

// markDue marks the scheduled deliveries due within the horizon as enqueued and returns them.
func (w *Worker) markDue(rs []ledger.NewReceipt, inline int) []ledger.DueTask {
	horizon := time.Now().Add(w.cfg.Horizon)
	var out []ledger.DueTask
	for i := range rs {
		if i != inline && rs[i].Status == ledger.ReceiptScheduled && !rs[i].DueAt.After(horizon) {
			rs[i].Enqueued = true
			out = append(out, ledger.DueTask{ID: rs[i].ID, DueAt: rs[i].DueAt})
		}
	}
	return out
}

func onlyInserted(due []ledger.DueTask, inserted []string) []ledger.DueTask {
	if len(due) == len(inserted) {
		return due
	}
	ok := make(map[string]bool, len(inserted))
	for _, id := range inserted {
		ok[id] = true
	}
	return slices.DeleteFunc(due, func(d ledger.DueTask) bool { return !ok[d.ID] })
}

// yield ends this task's time slice of a long fan-out: the dispatch goes back to retrying, due
// now, with its attempt given back, and a continuation task picks it up where it stopped.
func (f *fanout) yield(ctx context.Context) {
	w, row := f.w, f.row
	if err := w.record(ctx, func(ctx context.Context) error { return w.store.YieldDispatch(ctx, row.ID, row.Attempt) }); err != nil {
		f.err = err
		return
	}
	w.log.Debug().Str("dispatch_id", row.ID).Msg("long fan-out: time slice over, continuing in a new task")
	p, _ := json.Marshal(tasks.DispatchPayload{V: 1, DispatchID: row.ID})
	taskID := fmt.Sprintf("%s:slice:%d", tasks.DispatchTaskID(row.ID, row.Attempt-1), time.Now().UnixNano())
	if err := w.enqueue(ctx, tasks.TypeDispatch, taskID, p, time.Now()); err != nil {
		w.log.Warn().Err(err).Str("dispatch_id", row.ID).Msg("enqueue the fan-out's next slice failed; the promoter will")
	}
}

// enqueueReceiptTasks hands deliver tasks to asynq for receipts already marked enqueued, a few
// at a time in parallel (asynq v0.26 has no batch enqueue). A failure is left to the promoter,
// which enqueues again after RequeueAfter.
func (w *Worker) enqueueReceiptTasks(ctx context.Context, due []ledger.DueTask) {
	const parallel = 8
	var wg sync.WaitGroup
	work := make(chan ledger.DueTask)
	for range min(parallel, len(due)) {
		wg.Go(func() {
			for r := range work {
				p, _ := json.Marshal(tasks.DeliverPayload{V: 1, ReceiptID: r.ID, Attempt: r.Attempt})
				if err := w.enqueue(ctx, tasks.TypeDeliver, tasks.DeliverTaskID(r.ID, r.Attempt), p, r.DueAt); err != nil {
					w.log.Warn().Err(err).Str("receipt_id", r.ID).Msg("enqueue failed; the promoter will retry")
				}
			}
		})
	}
	for _, r := range due {
		work <- r
	}
	close(work)
	wg.Wait()
}

// unknown retries for UnknownEventFor after acceptance (rolling deploys), then fails.
func (f *fanout) unknown(ctx context.Context, reason string) {
	if time.Since(f.row.AcceptedAt) < f.w.cfg.UnknownEventFor {
		f.retry(ctx, time.Now().Add(f.w.backoff.Delay(f.row.Attempt)), reason)
		return
	}
	f.fail(ctx, fmt.Sprintf("%s (gave up after %v)", reason, f.w.cfg.UnknownEventFor))
}

// temporary retries with backoff until MaxAttempts.
func (f *fanout) temporary(ctx context.Context, reason string) {
	if f.row.Attempt >= f.w.cfg.MaxAttempts {
		f.fail(ctx, fmt.Sprintf("%s (gave up after %d attempts)", reason, f.row.Attempt))
		return
	}
	f.retry(ctx, time.Now().Add(f.w.backoff.Delay(f.row.Attempt)), reason)
}

func (f *fanout) retry(ctx context.Context, due time.Time, reason string) {
	w, row := f.w, f.row
	reason = f.red.apply(reason)
	if err := w.finishDispatch(ctx, row.ID, row.Attempt, ledger.DispatchRetrying, due, reason); err != nil {
		f.err = err
		return
	}
	w.metrics.dispatches.WithLabelValues(string(ledger.DispatchRetrying)).Inc()
	w.log.Warn().Str("dispatch_id", row.ID).Str("event_id", row.EventID).Int("attempt", row.Attempt).
		Time("due_at", due).Str("reason", reason).Msg("fan-out will be retried")
	if due.Before(time.Now().Add(w.cfg.Horizon)) {
		p, _ := json.Marshal(tasks.DispatchPayload{V: 1, DispatchID: row.ID})
		if err := w.enqueue(ctx, tasks.TypeDispatch, tasks.DispatchTaskID(row.ID, row.Attempt), p, due); err == nil {
			_ = w.store.MarkDispatchesEnqueued(ctx, []string{row.ID})
		}
	}
}

func (f *fanout) fail(ctx context.Context, reason string) {
	w, row := f.w, f.row
	reason = f.red.apply(reason)
	if err := w.finishDispatch(ctx, row.ID, row.Attempt, ledger.DispatchFailed, time.Time{}, reason); err != nil {
		f.err = err
		return
	}
	w.metrics.dispatches.WithLabelValues(string(ledger.DispatchFailed)).Inc()
	w.log.Warn().Str("dispatch_id", row.ID).Str("event_id", row.EventID).Str("reason", reason).Msg("dispatch failed")
}

// finishDispatch records a fan-out outcome; it runs even if ctx was canceled (the work is done).
func (w *Worker) finishDispatch(ctx context.Context, id string, attempt int, to ledger.Status, due time.Time, reason string) error {
	return w.record(ctx, func(ctx context.Context) error {
		return w.store.FinishDispatch(ctx, id, attempt, to, due, reason)
	})
}
