package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/tasks"
)

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
