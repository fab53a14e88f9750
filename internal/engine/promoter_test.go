package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/engine"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/testenv"
)

func TestPromoterRecreatesTasksAfterRedisFlush(t *testing.T) {
	// Uses a Redis database of its own, which it checks is empty before flushing it.
	const db = 13
	opt := testenvRedis(t)
	opt.DB = db
	rc := redisClient(opt)
	if n := rc.DBSize(t.Context()).Val(); n != 0 {
		t.Fatalf("Redis database %d holds %d keys that this test did not create; it needs it empty", db, n)
	}
	t.Cleanup(func() { rc.FlushDB(context.Background()); rc.Close() }) // runs last, after the worker stopped
	b := setup(t, withRedisDB(db), withEvents(testEvent{id: "test.later", channels: []events.Channel{
		{Key: "later", Transport: "email", Time: events.In(3 * time.Second)}}}))
	b.start()
	ctx := t.Context()
	id, err := dispatchID(b.client.Dispatch(ctx, "test.later", user("42"), nil))
	if err != nil {
		t.Fatal(err)
	}
	r := b.waitReceipt(id, ledger.ReceiptScheduled, 5*time.Second)
	// The scheduled deliver task is in Redis; lose everything.
	if err := rc.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	// A dispatch recorded in Postgres only (the outbox path) must also go out.
	tx, _ := b.pool.Begin(ctx)
	res, err := b.client.DispatchTx(ctx, tx, "test.later", user("43"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = tx.Commit(ctx)
	if err := rc.FlushDB(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	b.waitReceipt(id, ledger.ReceiptSent, 3*time.Second+2*time.Second+5*time.Second)
	b.waitReceipt(res.ID, ledger.ReceiptSent, 15*time.Second)
	if n := len(b.smtp.Messages()); n != 2 {
		t.Fatalf("%d emails, want 2", n)
	}
	_ = r
}

func testenvRedis(t *testing.T) asynq.RedisClientOpt { return testenv.RedisOpt(t) }

// TestOutboxWakesPromoter: a committed DispatchTx is picked up at once through LISTEN/NOTIFY,
// long before the promoter's next tick.
func TestOutboxWakesPromoter(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *engine.Config) { c.PromoterInterval = time.Minute })).start()
	ctx := t.Context()
	waitFor(t, 10*time.Second, "the outbox listener", func() bool {
		var n int
		_ = b.pool.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query = 'LISTEN herald_outbox'`).Scan(&n)
		return n == 1
	})
	tx, _ := b.pool.Begin(ctx)
	res, err := b.client.DispatchTx(ctx, tx, "accounts.password_reset", user("42"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	b.waitReceipt(res.ID, ledger.ReceiptSent, 10*time.Second) // the tick is a minute away
}

// TestTwoWorkersShareTheLoad: two workers (each with its promoter) on one queue and database
// deliver every dispatch exactly once.
func TestTwoWorkersShareTheLoad(t *testing.T) {
	t.Parallel()
	b := setup(t).start()
	other, err := engine.NewWorker(b.cfg, b.workerDeps())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer other.Shutdown()
	ctx := t.Context()
	const n = 40
	for i := range n {
		if i%2 == 0 {
			if _, err := b.client.Dispatch(ctx, "accounts.password_reset", user("42"), nil); err != nil {
				t.Fatal(err)
			}
			continue
		}
		tx, _ := b.pool.Begin(ctx)
		if _, err := b.client.DispatchTx(ctx, tx, "accounts.password_reset", user("43"), nil); err != nil {
			t.Fatal(err)
		}
		_ = tx.Commit(ctx)
	}
	b.smtp.WaitFor(t, n, 30*time.Second)
	waitFor(t, 10*time.Second, "every receipt sent", func() bool {
		var sent int
		_ = b.pool.QueryRow(ctx, `SELECT count(*) FROM herald.receipts WHERE status = 'sent' AND attempt = 1`).Scan(&sent)
		return sent == n
	})
	b.waitIdle()
	msgs := b.smtp.Messages()
	ids := map[string]bool{}
	for _, m := range msgs {
		ids[m.MessageID] = true
	}
	if len(msgs) != n || len(ids) != n {
		t.Fatalf("%d emails with %d distinct Message-IDs, want %d", len(msgs), len(ids), n)
	}
}

// TestPromoterRecoversWorkHeldByADeadTask: the task carrying a dispatch is active in asynq but its
// worker never claims the row (it died, or hangs); once RequeueAfter has passed, the promoter
// enqueues the work again under a second id instead of waiting for asynq's own recovery.
func TestPromoterRecoversWorkHeldByADeadTask(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *engine.Config) { c.RequeueAfter = time.Second }))
	// The rogue worker takes the task and holds it until the end of the test.
	hold := make(chan struct{})
	took := make(chan struct{}, 1)
	rogue := asynq.NewServer(b.redis, asynq.Config{Concurrency: 1, Queues: map[string]int{b.queue: 1},
		TaskCheckInterval: 50 * time.Millisecond, LogLevel: asynq.FatalLevel})
	if err := rogue.Start(asynq.HandlerFunc(func(ctx context.Context, _ *asynq.Task) error {
		took <- struct{}{}
		select {
		case <-hold:
		case <-ctx.Done():
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { close(hold); rogue.Shutdown() })
	ctx := t.Context()
	id := b.dispatchTx(t, "42")
	// A promoter pass of "another worker" hands the task to the rogue.
	b.worker.Promote(ctx)
	select {
	case <-took:
	case <-time.After(10 * time.Second):
		t.Fatal("the rogue never took the task")
	}
	b.start()
	b.waitReceipt(id, ledger.ReceiptSent, 15*time.Second)
}
