package tasks

import (
	"context"
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5"
)

// RunPromoter runs the promoter/sweeper until ctx is done. It is safe to run in every worker at
// once: rows are taken with FOR UPDATE SKIP LOCKED and tasks have deterministic ids. It works for
// the worker's queue only (DESIGN.md invariant 9): the rows of that queue, and rows of no known
// queue (written before queues were recorded), never another fleet's. Each tick:
//   - enqueue dispatches that are accepted or retrying and due (outbox rows from DispatchTx,
//     retries, tasks Redis lost), and reclaim fan-outs whose lease expired;
//   - enqueue receipts due within the horizon (long delays, retries, lost tasks) and reclaim
//     deliveries whose lease expired (the claim marks them in_doubt);
//   - every SweepInterval: scrub sealed secrets no longer needed, release old idempotency keys.
//
// A tick costs what its due work costs, however much work waits in the future (DESIGN.md
// invariant 10; the statements are in receipts/maintenance.go). DispatchTx notifies the outbox channel with its queue
// when its transaction commits; the promoter of that queue listens and runs at once instead of
// waiting for its next tick.
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

// OutboxChannel is the PostgreSQL NOTIFY channel DispatchTx signals on commit. The payload is the
// producer's queue; an empty payload (an older producer) wakes every promoter.
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
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Payload != "" && n.Payload != w.cfg.Queue {
			continue // another fleet's outbox
		}
		select {
		case wake <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}

// promoteBatch and sweepBatch bound the rows one statement of the promoter or the sweeper takes;
// sweepRounds bounds the batches of one sweep (the next sweep carries on).
const (
	promoteBatch = 500
	sweepBatch   = 1000
	sweepRounds  = 100
)

// Promote runs one promoter pass and returns how many tasks it enqueued.
func (w *Worker) Promote(ctx context.Context) int {
	n := 0
	ds, err := w.store.DueDispatches(ctx, w.cfg.Queue, w.cfg.Horizon, w.cfg.RequeueAfter, promoteBatch)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Error().Err(err).Msg("promoter: list due dispatches")
		}
	}
	for _, d := range ds {
		p, _ := json.Marshal(DispatchPayload{V: 1, DispatchID: d.ID})
		if err := w.enqueueStuck(ctx, TypeDispatch, DispatchTaskID(d.ID, d.Attempt), p, d.DueAt); err != nil {
			w.log.Warn().Err(err).Str("dispatch_id", d.ID).Msg("promoter: enqueue dispatch")
			continue
		}
		w.metrics.enqueued.WithLabelValues(TypeDispatch).Inc()
		n++
	}
	rs, err := w.store.DueReceipts(ctx, w.cfg.Queue, w.cfg.Horizon, w.cfg.RequeueAfter, promoteBatch)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Error().Err(err).Msg("promoter: list due receipts")
		}
	}
	for _, r := range rs {
		p, _ := json.Marshal(DeliverPayload{V: 1, ReceiptID: r.ID, Attempt: r.Attempt})
		if err := w.enqueueStuck(ctx, TypeDeliver, DeliverTaskID(r.ID, r.Attempt), p, r.DueAt); err != nil {
			w.log.Warn().Err(err).Str("receipt_id", r.ID).Msg("promoter: enqueue delivery")
			continue
		}
		w.metrics.enqueued.WithLabelValues(TypeDeliver).Inc()
		n++
	}
	return n
}

// Sweep scrubs secrets no longer needed and releases idempotency keys past the window, a batch
// at a time while full batches come back. Like the promoter it works for the worker's queue (and
// rows of no known queue): a fleet's retention and window never act on another fleet's rows.
func (w *Worker) Sweep(ctx context.Context) {
	var scrubbed int64
	for range sweepRounds {
		n, err := w.store.ScrubSecrets(ctx, w.cfg.Queue, w.cfg.SecretRetention, sweepBatch)
		if err != nil {
			if ctx.Err() == nil {
				w.log.Error().Err(err).Msg("sweeper: scrub secrets")
			}
			break
		}
		scrubbed += n
		if n < sweepBatch {
			break
		}
	}
	if scrubbed > 0 {
		w.log.Debug().Int64("dispatches", scrubbed).Msg("sweeper: scrubbed sealed secrets")
	}
	for range sweepRounds {
		n, err := w.store.ReleaseIdempotencyKeys(ctx, w.cfg.Queue, w.cfg.IdempotencyWindow, sweepBatch)
		if err != nil {
			if ctx.Err() == nil {
				w.log.Error().Err(err).Msg("sweeper: release idempotency keys")
			}
			break
		}
		if n < sweepBatch {
			break
		}
	}
}
