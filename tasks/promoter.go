package tasks

import (
	"context"
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5"
)

// RunPromoter runs the promoter/sweeper until ctx is done. It is safe to run in every worker at
// once: rows are taken with FOR UPDATE SKIP LOCKED and tasks have deterministic ids. Each tick:
//   - enqueue dispatches that are accepted or retrying and due (outbox rows from DispatchTx,
//     retries, tasks Redis lost), and reclaim fan-outs whose lease expired;
//   - enqueue receipts due within the horizon (long delays, retries, lost tasks) and reclaim
//     deliveries whose lease expired (the claim marks them in_doubt);
//   - every SweepInterval: scrub sealed secrets no longer needed, release old idempotency keys.
//
// DispatchTx notifies the outbox channel when its transaction commits; the promoter listens and
// runs at once instead of waiting for its next tick.
func (w *Worker) RunPromoter(ctx context.Context) {
	t := time.NewTicker(w.cfg.PromoterInterval)
	defer t.Stop()
	wake := make(chan struct{}, 1)
	listening := make(chan struct{})
	go func() {
		defer close(listening)
		w.listen(ctx, wake)
	}()
	defer func() { <-listening }()
	var lastSweep time.Time
	for {
		w.Promote(ctx)
		if time.Since(lastSweep) >= w.cfg.SweepInterval {
			w.Sweep(ctx)
			lastSweep = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		}
	}
}

// OutboxChannel is the PostgreSQL NOTIFY channel DispatchTx signals on commit.
const OutboxChannel = "herald_outbox"

// listen holds a dedicated connection LISTENing on the outbox channel, reconnecting after
// failures; the ticker keeps the promoter going meanwhile.
func (w *Worker) listen(ctx context.Context, wake chan<- struct{}) {
	for ctx.Err() == nil {
		err := w.listenOnce(ctx, wake)
		if ctx.Err() != nil {
			return
		}
		w.log.Warn().Err(err).Msg("outbox listener lost its connection; the promoter's tick carries on, reconnecting in 1s")
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (w *Worker) listenOnce(ctx context.Context, wake chan<- struct{}) error {
	conn, err := pgx.ConnectConfig(ctx, w.cfg.DB.Config().ConnConfig)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx)) //nolint:errcheck
	if _, err := conn.Exec(ctx, "LISTEN "+OutboxChannel); err != nil {
		return err
	}
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		select {
		case wake <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}

const promoteBatch = 500

// Promote runs one promoter pass and returns how many tasks it enqueued.
func (w *Worker) Promote(ctx context.Context) int {
	n := 0
	ds, err := w.store.DueDispatches(ctx, w.cfg.Horizon, w.cfg.RequeueAfter, promoteBatch)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Error().Err(err).Msg("promoter: list due dispatches")
		}
	}
	for _, d := range ds {
		p, _ := json.Marshal(DispatchPayload{V: 1, DispatchID: d.ID})
		if err := w.enqueue(ctx, TypeDispatch, DispatchTaskID(d.ID, d.Attempt), p, d.DueAt); err != nil {
			w.log.Warn().Err(err).Str("dispatch_id", d.ID).Msg("promoter: enqueue dispatch")
			continue
		}
		w.metrics.enqueued.WithLabelValues(TypeDispatch).Inc()
		n++
	}
	rs, err := w.store.DueReceipts(ctx, w.cfg.Horizon, w.cfg.RequeueAfter, promoteBatch)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Error().Err(err).Msg("promoter: list due receipts")
		}
	}
	for _, r := range rs {
		p, _ := json.Marshal(DeliverPayload{V: 1, ReceiptID: r.ID, Attempt: r.Attempt})
		if err := w.enqueue(ctx, TypeDeliver, DeliverTaskID(r.ID, r.Attempt), p, r.DueAt); err != nil {
			w.log.Warn().Err(err).Str("receipt_id", r.ID).Msg("promoter: enqueue delivery")
			continue
		}
		w.metrics.enqueued.WithLabelValues(TypeDeliver).Inc()
		n++
	}
	return n
}

// Sweep scrubs secrets no longer needed and releases idempotency keys past the window.
func (w *Worker) Sweep(ctx context.Context) {
	if n, err := w.store.ScrubSecrets(ctx, w.cfg.SecretRetention); err != nil {
		if ctx.Err() == nil {
			w.log.Error().Err(err).Msg("sweeper: scrub secrets")
		}
	} else if n > 0 {
		w.log.Debug().Int64("dispatches", n).Msg("sweeper: scrubbed sealed secrets")
	}
	if _, err := w.store.ReleaseIdempotencyKeys(ctx, w.cfg.IdempotencyWindow); err != nil && ctx.Err() == nil {
		w.log.Error().Err(err).Msg("sweeper: release idempotency keys")
	}
}
