package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/examples"
	"github.com/heraldhq/herald/internal/engine"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/testenv"
)

// TestFleetsKeepTheirOwnWork: two worker fleets share one PostgreSQL, each with its own queue
// and its own events. Dispatches committed through DispatchTx (and one sent through Redis) reach
// sent on their own fleet at the first attempt: a promoter takes only its own queue's rows, and
// the receipts inherit the dispatch's queue (issue 6, item 6; DESIGN.md invariant 9).
func TestFleetsKeepTheirOwnWork(t *testing.T) {
	t.Parallel()
	a := setup(t) // fleet A: accounts.password_reset on its own queue
	ctx := t.Context()

	// Fleet B: the same database, another queue, another event.
	regB := events.NewRegistry()
	if err := regB.Register(testEvent{id: "fleet_b.hello", channels: []events.Channel{{Key: "email", Transport: events.TransportEmail, Audience: "user"}}}); err != nil {
		t.Fatal(err)
	}
	if err := regB.RegisterLoader("users", examples.UsersLoader{DB: a.pool}); err != nil {
		t.Fatal(err)
	}
	cfgB := a.cfg
	cfgB.Queue = testenv.Queue(t)
	workerB, err := engine.NewWorker(cfgB, engine.Deps{Registry: regB})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = workerB.Close() })
	clientB, err := engine.NewClient(engine.Config(herald.Config{Redis: a.redis, SecretKeys: secretKeys, Queue: cfgB.Queue}.WithDefaults()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = clientB.Close() })

	txDispatch := func(c *engine.Client, event string) string {
		t.Helper()
		var id string
		if err := pgx.BeginFunc(ctx, a.pool, func(tx pgx.Tx) error {
			res, err := c.DispatchTx(ctx, tx, event, user("42"), nil)
			id = res.ID
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	want := map[string]string{} // dispatch id → queue
	for range 3 {
		want[txDispatch(a.client, "accounts.password_reset")] = a.queue
		want[txDispatch(clientB, "fleet_b.hello")] = cfgB.Queue
	}

	// Before any worker runs, fleet A's promoter pass takes its own three rows and nothing else.
	if n := a.worker.Promote(ctx); n != 3 {
		t.Fatalf("fleet A's promoter enqueued %d tasks, want its own 3 (of 6 committed by two fleets)", n)
	}
	a.start()
	if err := workerB.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(workerB.Shutdown)
	// The Redis path: first sight records the queue the task came from.
	want[a.dispatch(t, "accounts.password_reset")] = a.queue
	redisB, err := dispatchID(clientB.Dispatch(ctx, "fleet_b.hello", user("43"), nil))
	if err != nil {
		t.Fatal(err)
	}
	want[redisB] = cfgB.Queue

	for id, queue := range want {
		r := a.waitReceipt(id, ledger.ReceiptSent, 15*time.Second)
		d, err := a.store.GetDispatch(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if d.Status != ledger.DispatchFannedOut || d.Attempt != 1 || d.LastError != "" {
			t.Errorf("dispatch %s (%s): %s attempt %d %q, want fanned_out at the first attempt", id, d.EventID, d.Status, d.Attempt, d.LastError)
		}
		if r.Attempt != 1 {
			t.Errorf("receipt of %s: attempt %d, want 1", id, r.Attempt)
		}
		if d.Queue != queue || r.Queue != queue {
			t.Errorf("dispatch %s: queue %q, its receipt %q, want %q", id, d.Queue, r.Queue, queue)
		}
	}
	if got := len(a.smtp.Messages()); got != len(want) {
		t.Fatalf("%d emails, want %d", got, len(want))
	}
}

// TestLegacyRowsStayRoutable: a row written before the queue column existed (or by an old
// worker during a rolling deploy, or by SQL that names no queue) has the empty queue "", and
// any fleet's promoter takes it, as before the upgrade.
func TestLegacyRowsStayRoutable(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	id := "0190f5a8-0000-7000-8000-000000000001"
	if _, err := b.pool.Exec(ctx, `INSERT INTO herald.dispatches (id, event_id, refs) VALUES ($1, 'accounts.password_reset',
		'[{"name":"user","resource":"users","id":"42"}]')`, id); err != nil {
		t.Fatal(err)
	}
	if err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error { // an outbox NOTIFY of an old producer
		_, err := tx.Exec(ctx, "SELECT pg_notify($1, '')", engine.OutboxChannel)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	b.start()
	r := b.waitReceipt(id, ledger.ReceiptSent, 15*time.Second)
	if d, _ := b.store.GetDispatch(context.Background(), id); d.Queue != "" || r.Queue != b.queue {
		t.Fatalf("legacy dispatch queue %q (want ''), its receipt %q (want the fleet that fanned it out, %q)", d.Queue, r.Queue, b.queue)
	}
}
