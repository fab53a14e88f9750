package engine

import (
	"context"
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/tasks"
)

// A promoter moves work from PostgreSQL into asynq. Each pass (every PromoterInterval, and at
// once when DispatchTx's NOTIFY wakes it) it enqueues:
//   - the dispatches that are accepted or retrying and due — outbox rows from DispatchTx, fan-out
//     retries, tasks Redis lost — and those whose fan-out lease expired (a worker died);
//   - the deliveries due within the Horizon — long delays, retries, tasks Redis lost — and those
//     whose lease expired, which the claim then marks in doubt.
//
// Work enqueued within RequeueAfter is left alone. It is safe in every worker at once: rows are
// taken with FOR UPDATE SKIP LOCKED and tasks have deterministic ids. It works for its queue
// only (DESIGN.md invariant 9): the rows of that queue, and rows of no known queue (written
// before queues were recorded), never another fleet's. A pass costs what its due work costs,
// however much waits in the future (invariant 10; the statements are in
// internal/ledger/maintenance.go).
type promoter struct {
	store   *ledger.Store
	cfg     Config
	log     zerolog.Logger
	metrics *metrics
	// enqueue hands a task to asynq; a task id held by an active task that never claimed its
	// work (its worker died) is enqueued again under a second id (Worker.enqueueStuck).
	enqueue func(ctx context.Context, typ, taskID string, payload []byte, due time.Time) error
}

// OutboxChannel is the PostgreSQL NOTIFY channel DispatchTx signals on commit. The payload is the
// producer's queue; an empty payload (an older producer) wakes every promoter.
const OutboxChannel = "herald_outbox"

// pass runs once: it enqueues what is due and returns how many tasks it enqueued.
func (pr *promoter) pass(ctx context.Context) int {
	n := 0
	ds, err := pr.store.Due(ctx, ledger.KindDispatch, pr.cfg.Queue, pr.cfg.Horizon, pr.cfg.RequeueAfter, promoteBatch)
	if err != nil {
		if ctx.Err() == nil {
			pr.log.Error().Err(err).Msg("promoter: list due dispatches")
		}
	}
	for _, d := range ds {
		p, _ := json.Marshal(tasks.DispatchPayload{V: 1, DispatchID: d.ID})
		if err := pr.enqueue(ctx, tasks.TypeDispatch, tasks.DispatchTaskID(d.ID, d.Attempt), p, d.DueAt); err != nil {
			pr.log.Warn().Err(err).Str("dispatch_id", d.ID).Msg("promoter: enqueue dispatch")
			continue
		}
		pr.metrics.enqueued.WithLabelValues(tasks.TypeDispatch).Inc()
		n++
	}
	rs, err := pr.store.Due(ctx, ledger.KindReceipt, pr.cfg.Queue, pr.cfg.Horizon, pr.cfg.RequeueAfter, promoteBatch)
	if err != nil {
		if ctx.Err() == nil {
			pr.log.Error().Err(err).Msg("promoter: list due receipts")
		}
	}
	for _, r := range rs {
		p, _ := json.Marshal(tasks.DeliverPayload{V: 1, ReceiptID: r.ID, Attempt: r.Attempt})
		if err := pr.enqueue(ctx, tasks.TypeDeliver, tasks.DeliverTaskID(r.ID, r.Attempt), p, r.DueAt); err != nil {
			pr.log.Warn().Err(err).Str("receipt_id", r.ID).Msg("promoter: enqueue delivery")
			continue
		}
		pr.metrics.enqueued.WithLabelValues(tasks.TypeDeliver).Inc()
		n++
	}
	return n
}

// listen holds a dedicated connection LISTENing on the outbox channel, reconnecting after
// failures; the ticker keeps the promoter going meanwhile.
func (pr *promoter) listen(ctx context.Context, wake chan<- struct{}) {
	for ctx.Err() == nil {
		err := pr.listenOnce(ctx, wake)
		if ctx.Err() != nil {
			return
		}
		pr.log.Warn().Err(err).Msg("outbox listener lost its connection; the promoter's tick carries on, reconnecting in 1s")
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (pr *promoter) listenOnce(ctx context.Context, wake chan<- struct{}) error {
	conn, err := pgx.ConnectConfig(ctx, pr.cfg.DB.Config().ConnConfig)
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
		if n.Payload != "" && n.Payload != pr.cfg.Queue {
			continue // another fleet's outbox
		}
		select {
		case wake <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}
