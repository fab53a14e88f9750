package engine

import (
	"context"
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/tasks"
)

// RunMaintenance runs the promoter and the sweeper until ctx is done. It is safe to run in every worker at
// once: rows are taken with FOR UPDATE SKIP LOCKED and tasks have deterministic ids. It works for
// the worker's queue only (DESIGN.md invariant 9): the rows of that queue, and rows of no known
// queue (written before queues were recorded), never another fleet's. Each tick:
//   - enqueue dispatches that are accepted or retrying and due (outbox rows from DispatchTx,
//     retries, tasks Redis lost), and reclaim fan-outs whose lease expired;
//   - enqueue receipts due within the horizon (long delays, retries, lost tasks) and reclaim
//     deliveries whose lease expired (the claim marks them in_doubt);
//   - every SweepInterval: scrub sealed secrets no longer needed, release old idempotency keys,
//     and delete what the retention no longer keeps (final receipts and dispatches, rejected
//     tasks, development mailbox messages).
//
// A tick costs what its due work costs, however much work waits in the future (DESIGN.md
// invariant 10; the statements are in internal/ledger/maintenance.go and internal/ledger/retention.go).
// DispatchTx notifies the outbox channel with its queue when its transaction commits; the
// promoter of that queue listens and runs at once instead of waiting for its next tick.
func (w *Worker) RunMaintenance(ctx context.Context) {
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
		p, _ := json.Marshal(tasks.DispatchPayload{V: 1, DispatchID: d.ID})
		if err := w.enqueueStuck(ctx, tasks.TypeDispatch, tasks.DispatchTaskID(d.ID, d.Attempt), p, d.DueAt); err != nil {
			w.log.Warn().Err(err).Str("dispatch_id", d.ID).Msg("promoter: enqueue dispatch")
			continue
		}
		w.metrics.enqueued.WithLabelValues(tasks.TypeDispatch).Inc()
		n++
	}
	rs, err := w.store.DueReceipts(ctx, w.cfg.Queue, w.cfg.Horizon, w.cfg.RequeueAfter, promoteBatch)
	if err != nil {
		if ctx.Err() == nil {
			w.log.Error().Err(err).Msg("promoter: list due receipts")
		}
	}
	for _, r := range rs {
		p, _ := json.Marshal(tasks.DeliverPayload{V: 1, ReceiptID: r.ID, Attempt: r.Attempt})
		if err := w.enqueueStuck(ctx, tasks.TypeDeliver, tasks.DeliverTaskID(r.ID, r.Attempt), p, r.DueAt); err != nil {
			w.log.Warn().Err(err).Str("receipt_id", r.ID).Msg("promoter: enqueue delivery")
			continue
		}
		w.metrics.enqueued.WithLabelValues(tasks.TypeDeliver).Inc()
		n++
	}
	return n
}

// Sweep scrubs secrets no longer needed (and drops the kept payloads of tasks held for a newer
// worker past the secret retention), releases idempotency keys past the window, then deletes
// what the retention no longer keeps, each a batch at a time while full batches come back (at
// most sweepRounds batches each; the next sweep carries on). Like the promoter it works for the
// worker's queue (and rows of no known queue): a fleet's retention and window never act on
// another fleet's rows.
func (w *Worker) Sweep(ctx context.Context) {
	q := w.cfg.Queue
	if n := w.sweepBatches(ctx, "scrub secrets", func() (int64, error) {
		return w.store.ScrubSecrets(ctx, q, w.cfg.SecretRetention, sweepBatch)
	}); n > 0 {
		w.log.Debug().Int64("dispatches", n).Msg("sweeper: scrubbed sealed secrets")
	}
	w.sweepBatches(ctx, "release idempotency keys", func() (int64, error) {
		return w.store.ReleaseIdempotencyKeys(ctx, q, w.cfg.IdempotencyWindow, sweepBatch)
	})
	if n := w.sweepBatches(ctx, "drop held payloads", func() (int64, error) {
		return w.store.DropExpiredHeldPayloads(ctx, q, w.cfg.SecretRetention, sweepBatch)
	}); n > 0 {
		w.log.Warn().Int64("tasks", n).Msg("sweeper: dropped the kept payloads of tasks held for a newer worker " +
			"past HERALD_SECRET_RETENTION; they can no longer be requeued (`enqueue rejected`)")
	}
	w.deleteExpired(ctx)
}

// deleteExpired deletes, by age: final receipts and dispatches past Retention (the receipts
// first: a dispatch goes once its last receipt has gone; one whose receipts are kept is pushed
// forward, to be looked at again when they can have gone), rejected tasks past
// RejectedRetention and development mailbox messages past MailboxRetention. Rows that are not
// final are never deleted (internal/ledger/retention.go).
func (w *Worker) deleteExpired(ctx context.Context) {
	q, cfg := w.cfg.Queue, w.cfg
	only := func(n int64, err error) (int64, int64, error) { return n, 0, err }
	for _, d := range []struct {
		table string
		run   func() (deleted, pushed int64, err error)
	}{
		{tableReceipts, func() (int64, int64, error) {
			return only(w.store.DeleteExpiredReceipts(ctx, q, cfg.Retention, sweepBatch))
		}},
		{tableDispatches, func() (int64, int64, error) {
			return w.store.DeleteExpiredDispatches(ctx, q, cfg.Retention, sweepBatch)
		}},
		{tableRejectedTasks, func() (int64, int64, error) {
			return only(w.store.DeleteExpiredRejectedTasks(ctx, q, cfg.RejectedRetention, sweepBatch))
		}},
		{tableDevMailbox, func() (int64, int64, error) {
			return only(w.store.DeleteExpiredMail(ctx, cfg.MailboxRetention, sweepBatch))
		}},
	} {
		counter := w.metrics.retention.WithLabelValues(d.table)
		var deleted int64
		w.sweepBatches(ctx, "delete expired "+d.table, func() (int64, error) {
			n, pushed, err := d.run()
			counter.Add(float64(n))
			deleted += n
			return n + pushed, err // a pushed dispatch is work done: a full batch may have more behind it
		})
		if deleted > 0 {
			w.log.Debug().Str("table", d.table).Int64("rows", deleted).Msg("sweeper: deleted rows past their retention")
		}
	}
}

// sweepBatches runs batch while it comes back full (sweepBatch rows), at most sweepRounds times,
// and returns how many rows the batches changed. An error ends the loop; it is logged unless ctx
// is done (a shutdown is not a failure), and the next sweep tries again.
func (w *Worker) sweepBatches(ctx context.Context, what string, batch func() (int64, error)) int64 {
	var total int64
	for range sweepRounds {
		n, err := batch()
		total += n
		if err != nil {
			if ctx.Err() == nil {
				w.log.Error().Err(err).Msg("sweeper: " + what)
			}
			break
		}
		if n < sweepBatch {
			break
		}
	}
	return total
}
