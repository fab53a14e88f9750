package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hibiken/asynq"
	"github.com/rs/zerolog"

	"github.com/heraldhq/herald/internal/ledger"
)

// recordRetry is the pause between tries of a final update while PostgreSQL is unreachable.
const recordRetry = 250 * time.Millisecond

// record runs a final update — an outcome that already happened — under
// context.WithoutCancel, each try with its own short deadline. While PostgreSQL is unreachable it
// tries again every recordRetry for as long as the process lives: a lost final update would mean
// a reclaim and a duplicate (DESIGN.md, invariant 8). Any other error — a refused value, or a
// statement slower than the per-try deadline while the server answers — is tried a few times,
// then returned, so that nothing spins forever.
func (w *Worker) record(ctx context.Context, update func(context.Context) error) error {
	base := context.WithoutCancel(ctx)
	var err error
	started, warned, other := time.Now(), time.Time{}, 0
	for {
		uctx, cancel := context.WithTimeout(base, 5*time.Second)
		err = update(uctx)
		cancel()
		if err == nil || errors.Is(err, ledger.ErrTransition) {
			if !warned.IsZero() {
				w.log.Info().Dur("waited", time.Since(started)).Msg("PostgreSQL answers again; the held outcome is recorded")
			}
			return err
		}
		if !w.unreachable(base, err) {
			if other++; other >= 5 {
				return err
			}
		} else if time.Since(warned) > 10*time.Second {
			warned = time.Now()
			w.log.Warn().Err(err).Dur("waited", time.Since(started)).
				Msg("PostgreSQL is unreachable: holding an outcome in memory until it answers (do not kill this worker)")
		}
		time.Sleep(recordRetry)
	}
}

// recordDelivery records the outcome of a delivery attempt, fenced on its attempt (a lease taken
// over meanwhile leaves the row to its new owner, unless the outcome is a confirmed send), counts
// it, logs it once, and hands a retry due within the horizon to asynq. The task then ends: nil
// after a send, RevokeTask otherwise (PostgreSQL holds the outcome).
func (w *Worker) recordDelivery(ctx context.Context, r *ledger.ReceiptRow, o ledger.Outcome, log zerolog.Logger) error {
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
