package engine

import (
	"context"

	"github.com/rs/zerolog"

	"github.com/heraldhq/herald/internal/ledger"
)

// A sweeper deletes and scrubs what PostgreSQL no longer needs, every SweepInterval: sealed
// secrets of dispatches whose deliveries are all final or that are older than SecretRetention
// (and the kept payloads of tasks held for a newer worker past that retention); idempotency keys
// older than IdempotencyWindow; then, by age, final receipts and dispatches past Retention (a
// dispatch once its last receipt has gone), rejected tasks past RejectedRetention and
// development mailbox messages past MailboxRetention. Each statement takes a batch at a time
// while full batches come back (at most sweepRounds; the next sweep carries on). Like the
// promoter it works for its queue (and rows of no known queue): a fleet's retention and window
// never act on another fleet's rows. Rows that are not final are never deleted
// (internal/ledger/retention.go).
type sweeper struct {
	store   *ledger.Store
	cfg     Config
	log     zerolog.Logger
	metrics *metrics
}

// promoteBatch and sweepBatch bound the rows one statement of the promoter or the sweeper takes;
// sweepRounds bounds the batches of one sweep (the next sweep carries on).
const (
	promoteBatch = 500
	sweepBatch   = 1000
	sweepRounds  = 100
)

func (sw *sweeper) sweep(ctx context.Context) {
	q := sw.cfg.Queue
	if n := sw.batches(ctx, "scrub secrets", func() (int64, error) {
		return sw.store.ScrubSecrets(ctx, q, sw.cfg.SecretRetention, sweepBatch)
	}); n > 0 {
		sw.log.Debug().Int64("dispatches", n).Msg("sweeper: scrubbed sealed secrets")
	}
	sw.batches(ctx, "release idempotency keys", func() (int64, error) {
		return sw.store.ReleaseIdempotencyKeys(ctx, q, sw.cfg.IdempotencyWindow, sweepBatch)
	})
	if n := sw.batches(ctx, "drop held payloads", func() (int64, error) {
		return sw.store.DropExpiredHeldPayloads(ctx, q, sw.cfg.SecretRetention, sweepBatch)
	}); n > 0 {
		sw.log.Warn().Int64("tasks", n).Msg("sweeper: dropped the kept payloads of tasks held for a newer worker " +
			"past HERALD_SECRET_RETENTION; they can no longer be requeued (`enqueue rejected`)")
	}
	sw.deleteExpired(ctx)
}

// deleteExpired deletes, by age: final receipts and dispatches past Retention (the receipts
// first: a dispatch goes once its last receipt has gone; one whose receipts are kept is pushed
// forward, to be looked at again when they can have gone), rejected tasks past
// RejectedRetention and development mailbox messages past MailboxRetention. Rows that are not
// final are never deleted (internal/ledger/retention.go).
func (sw *sweeper) deleteExpired(ctx context.Context) {
	q, cfg := sw.cfg.Queue, sw.cfg
	only := func(n int64, err error) (int64, int64, error) { return n, 0, err }
	for _, d := range []struct {
		table string
		run   func() (deleted, pushed int64, err error)
	}{
		{tableReceipts, func() (int64, int64, error) {
			return only(sw.store.DeleteExpiredReceipts(ctx, q, cfg.Retention, sweepBatch))
		}},
		{tableDispatches, func() (int64, int64, error) {
			return sw.store.DeleteExpiredDispatches(ctx, q, cfg.Retention, sweepBatch)
		}},
		{tableRejectedTasks, func() (int64, int64, error) {
			return only(sw.store.DeleteExpiredRejectedTasks(ctx, q, cfg.RejectedRetention, sweepBatch))
		}},
		{tableDevMailbox, func() (int64, int64, error) {
			return only(sw.store.DeleteExpiredMail(ctx, cfg.MailboxRetention, sweepBatch))
		}},
	} {
		counter := sw.metrics.retention.WithLabelValues(d.table)
		var deleted int64
		sw.batches(ctx, "delete expired "+d.table, func() (int64, error) {
			n, pushed, err := d.run()
			counter.Add(float64(n))
			deleted += n
			return n + pushed, err // a pushed dispatch is work done: a full batch may have more behind it
		})
		if deleted > 0 {
			sw.log.Debug().Str("table", d.table).Int64("rows", deleted).Msg("sweeper: deleted rows past their retention")
		}
	}
}

// batches runs batch while it comes back full (sweepBatch rows), at most sweepRounds times,
// and returns how many rows the batches changed. An error ends the loop; it is logged unless ctx
// is done (a shutdown is not a failure), and the next sweep tries again.
func (sw *sweeper) batches(ctx context.Context, what string, batch func() (int64, error)) int64 {
	var total int64
	for range sweepRounds {
		n, err := batch()
		total += n
		if err != nil {
			if ctx.Err() == nil {
				sw.log.Error().Err(err).Msg("sweeper: " + what)
			}
			break
		}
		if n < sweepBatch {
			break
		}
	}
	return total
}
