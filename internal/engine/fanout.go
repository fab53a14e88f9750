package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
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

type fanout struct {
	w         *Worker
	row       *ledger.DispatchRow
	red       redactor
	err       error // a database error: asynq retries the task
	committed bool  // the last chunk committed: what follows is the engine's, not event code
}

// run executes the fan-out as named steps — resolve the event and its references, mint,
// resolve the channels, then chunk by chunk: resolve recipients, plan, commit, hand off. Every
// exit records an outcome. A panic in event or loader code is recovered into a temporary
// failure with a redacted reason.
func (f *fanout) run(ctx context.Context) {
	w, row := f.w, f.row
	defer func() {
		if p := recover(); p != nil {
			if f.committed {
				panic(p) // not event code: the engine's own guard reports it
			}
			reason := append(f.red, w.redactorOf(row)...).apply(fmt.Sprintf("panic: %v", p))
			w.log.Error().Str("dispatch_id", row.ID).Str("event_id", row.EventID).Str("panic", reason).
				Msg("recovered a panic in event or loader code; the fan-out will be retried (fix the code)")
			f.temporary(ctx, reason)
		}
	}()
	ev, d, ok := f.resolve(ctx)
	if !ok {
		return
	}
	minted, ok := f.mint(ctx, ev, d)
	if !ok {
		return
	}
	chs, err := ev.Channels(ctx, d)
	if err != nil {
		f.temporary(ctx, "channels: "+err.Error())
		return
	}
	if err := events.ValidateChannels(chs); err != nil {
		f.fail(ctx, err.Error())
		return
	}
	f.chunks(ctx, ev, d, chs, minted)
}

// resolve finds the event and hydrates the dispatch's references. A failure is recorded (an
// unknown event is retried for UnknownEventFor, a missing row MissingRowRetries times).
func (f *fanout) resolve(ctx context.Context) (events.Event, *events.Dispatch, bool) {
	w, row := f.w, f.row
	if err := events.ValidateID(row.EventID); err != nil {
		f.fail(ctx, err.Error()) // no worker could ever register it
		return nil, nil, false
	}
	ev, err := w.reg.Lookup(row.EventID)
	if err != nil {
		f.unknown(ctx, fmt.Sprintf("unknown event %q: the worker %s on queue %q does not have it registered (events it serves: %s)",
			row.EventID, workerName, w.cfg.Queue, w.eventList()))
		return nil, nil, false
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
		return nil, nil, false
	case errors.Is(err, errNoLoader):
		f.unknown(ctx, err.Error())
		return nil, nil, false
	case errors.Is(err, errBadRef), errors.Is(err, errBadSecret):
		f.fail(ctx, err.Error())
		return nil, nil, false
	case err != nil:
		f.temporary(ctx, err.Error())
		return nil, nil, false
	}
	return ev, d, true
}

// mint makes the secrets SendVariables returns, once, sealed: they commit with the first chunk
// of receipts, so no receipt ever exists without them, and a resumed fan-out reuses them (the
// row has them). The minted values join d.Vars, where Channels and Recipients see them.
func (f *fanout) mint(ctx context.Context, ev events.Event, d *events.Dispatch) (map[string]ledger.Minted, bool) {
	sv, ok := ev.(events.SendVariabler)
	if !ok || f.row.Minted != nil {
		return nil, true
	}
	vars, err := sv.SendVariables(ctx, d)
	if err != nil {
		f.fail(ctx, "send variables: "+err.Error())
		return nil, false
	}
	minted, red, err := f.w.sealMinted(f.row.ID, vars)
	f.red = append(f.red, red...)
	if err != nil {
		f.fail(ctx, err.Error())
		return nil, false
	}
	for k, v := range vars {
		d.Vars[k] = v
	}
	return minted, true
}

// chunks runs the fan-out one chunk of recipients at a time — resolve, plan, commit, hand off
// — until the last chunk has committed or the task's time slice is over (it then yields to a
// continuation task).
func (f *fanout) chunks(ctx context.Context, ev events.Event, d *events.Dispatch, chs []events.Channel, minted map[string]ledger.Minted) {
	w, row := f.w, f.row
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
		answers, err := decide(ctx, ev, d, ch, rcs)
		if err != nil {
			f.temporary(ctx, err.Error())
			return
		}
		last := next.Done
		p := planChunk(w.planInput(row, ev, ch, rcs, answers, first && last))
		next.Chunks = pos.Chunks + 1
		inserted, err := f.commit(ctx, p.Receipts, minted, next)
		if err != nil {
			f.err = err
			return
		}
		minted, first, pos = nil, false, next
		f.committed = last
		if f.handOff(ctx, p, inserted, last, &hydrated{ev: ev, d: d, red: f.red, channels: chs}) {
			return
		}
		if time.Since(started) > slice || ctx.Err() != nil {
			f.yield(ctx)
			return
		}
	}
}

// planInput gathers what the plan of one chunk decides from.
func (w *Worker) planInput(row *ledger.DispatchRow, ev events.Event, ch events.Channel, rcs []events.Recipient,
	answers []events.Decision, whole bool) planInput {
	return planInput{DispatchID: row.ID, EventID: row.EventID, AcceptedAt: row.AcceptedAt, Queue: cmpOr(row.Queue, w.cfg.Queue),
		Channel: ch, Recipients: rcs, Answers: answers, MaxAge: events.MaxAgeOf(ev, ch), MaxAttempts: w.cfg.MaxAttempts,
		CanSend: func(t string) bool { return w.cfg.Senders[t] != nil }, Now: time.Now(), Horizon: w.cfg.Horizon,
		Inline: whole && !w.cfg.DisableInline, Lease: w.cfg.Lease, NewID: func() string { return uuid.Must(uuid.NewV7()).String() }}
}

// commit writes one chunk: its receipts, the minted values (first chunk) and either the
// progress (more to come; the lease is extended) or fanned_out, in one transaction fenced on
// the attempt: a canceled dispatch or a lease taken over commits nothing. It returns the ids of
// the receipts it inserted (a resumed chunk's existing ones are kept as they are).
func (f *fanout) commit(ctx context.Context, rs []ledger.NewReceipt, minted map[string]ledger.Minted, next fanoutPos) ([]string, error) {
	w, row := f.w, f.row
	var inserted []string
	err := w.record(ctx, func(ctx context.Context) error {
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
			if next.Done {
				return st.FinishDispatch(ctx, row.ID, row.Attempt, ledger.DispatchFannedOut, time.Time{}, "")
			}
			b, _ := json.Marshal(next)
			return st.SaveFanoutProgress(ctx, row.ID, row.Attempt, b, w.cfg.Lease)
		})
	})
	return inserted, err
}

// handOff passes a committed chunk on: its inline delivery is sent in this task; deliveries due
// within the horizon get their tasks; later ones wait for the promoter. Only receipts this chunk
// inserted: a resumed chunk's existing ones have theirs. It reports whether the fan-out is over.
func (f *fanout) handOff(ctx context.Context, p chunkPlan, inserted []string, last bool, pre *hydrated) bool {
	w, row := f.w, f.row
	if last && p.Inline >= 0 && len(inserted) == 1 && inserted[0] == p.Receipts[p.Inline].ID {
		w.metrics.dispatches.WithLabelValues(string(ledger.DispatchFannedOut)).Inc()
		r, err := w.store.GetReceipt(ctx, p.Receipts[p.Inline].ID)
		if err != nil {
			f.err = err
			return true
		}
		f.err = w.deliverClaimed(ctx, &ledger.Claim{Receipt: r}, pre)
		return true
	}
	w.enqueueReceiptTasks(ctx, onlyInserted(p.Due, inserted))
	if last {
		w.metrics.dispatches.WithLabelValues(string(ledger.DispatchFannedOut)).Inc()
		w.log.Debug().Str("dispatch_id", row.ID).Str("event_id", row.EventID).Msg("fanned out")
	}
	return last
}
