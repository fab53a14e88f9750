package engine_test

import (
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/engine"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/tasks"
)

// TestSweepDeletesExpiredRows (issue 7): a worker's sweep deletes, end to end, the delivered
// dispatches and receipts that last changed before Retention, and the rejected tasks and captured
// mail older than theirs — batch after batch while batches come back full — and counts them by
// table. A dispatch with a delivery still scheduled stays, with that delivery; so do newer rows
// and another queue's.
func TestSweepDeletesExpiredRows(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	b := setup(t, withMetrics(reg), withEvents(
		testEvent{id: "test.once", channels: []events.Channel{{Key: "now", Transport: "email"}}},
		testEvent{id: "test.reminder", channels: []events.Channel{{Key: "now", Transport: "email"},
			{Key: "later", Transport: "email", Time: events.In(time.Hour)}}}),
		withConfig(func(c *engine.Config) {
			c.Retention, c.RejectedRetention, c.MailboxRetention = 48*time.Hour, 48*time.Hour, 48*time.Hour
			c.SweepInterval = time.Hour // the test sweeps itself
		}))
	ctx := t.Context()
	want := map[string]float64{"receipts": 0, "dispatches": 0, "rejected_tasks": 0, "dev_mailbox": 0}
	if got := countersBy(t, reg, "herald_retention_deleted_total", "table"); !maps.Equal(got, want) {
		t.Fatalf("herald_retention_deleted_total at start-up: %v, want every table at zero: %v", got, want)
	}
	b.start()

	once, reminder := b.dispatch(t, "test.once"), b.dispatch(t, "test.reminder")
	onceReceipt := b.waitReceipt(once, ledger.ReceiptSent, 15*time.Second)
	sent := b.waitReceipt(reminder, ledger.ReceiptSent, 15*time.Second)
	later := b.waitReceipt(reminder, ledger.ReceiptScheduled, 5*time.Second)
	b.waitDispatch(once, ledger.DispatchFannedOut, 5*time.Second)
	b.waitDispatch(reminder, ledger.DispatchFannedOut, 5*time.Second)

	// Three days pass for this test's rows. Rejected tasks and mail: old and new ones, another
	// queue's old one, and enough old ones to take several batches.
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := b.pool.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec(`UPDATE herald.dispatches SET updated_at = now() - interval '3 days' WHERE id = ANY($1)`, []string{once, reminder})
	exec(`UPDATE herald.receipts SET updated_at = now() - interval '3 days' WHERE dispatch_id = ANY($1)`, []string{once, reminder})
	for _, r := range []struct{ id, queue string }{{"old", b.queue}, {"new", b.queue}, {"theirs", b.queue + "-other"}} {
		if err := b.store.RecordRejectedTask(ctx, tasks.TypeDeliver, r.id, r.queue, "missing row", nil); err != nil {
			t.Fatal(err)
		}
	}
	exec(`INSERT INTO herald.rejected_tasks (task_type, task_id, queue, reason)
		SELECT 'herald:deliver', 'bulk-' || i, $1, 'missing row' FROM generate_series(1, 2500) i`, b.queue)
	exec(`UPDATE herald.rejected_tasks SET created_at = now() - interval '3 days' WHERE task_id <> 'new'`)
	for _, m := range []string{"old", "new"} {
		if _, err := b.store.InsertMail(ctx, ledger.Mail{MessageID: m, From: "a@example.net", To: "b@example.net"}); err != nil {
			t.Fatal(err)
		}
	}
	exec(`UPDATE herald.dev_mailbox SET created_at = now() - interval '3 days' WHERE message_id = 'old'`)

	b.worker.Sweep(ctx)

	if _, err := b.store.GetDispatch(ctx, once); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("delivered dispatch past the retention: %v, want it deleted", err)
	}
	if st, err := b.store.Status(ctx, ledger.KindDispatch, reminder); err != nil || st != ledger.DispatchFannedOut {
		t.Errorf("dispatch with a delivery still scheduled: %s %v, want it kept", st, err)
	}
	for id, keep := range map[string]bool{onceReceipt.ID: false, sent.ID: false, later.ID: true} {
		_, err := b.store.Status(ctx, ledger.KindReceipt, id)
		if kept := err == nil; kept != keep {
			t.Errorf("receipt %s: kept %v (%v), want %v", id, kept, err, keep)
		}
	}
	var rejectedLeft, mailLeft []string
	var bulkLeft int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE task_id LIKE 'bulk-%'),
		array_agg(task_id ORDER BY task_id) FILTER (WHERE task_id NOT LIKE 'bulk-%') FROM herald.rejected_tasks`).
		Scan(&bulkLeft, &rejectedLeft); err != nil {
		t.Fatal(err)
	}
	if strings.Join(rejectedLeft, ",") != "new,theirs" || bulkLeft != 0 {
		t.Errorf("rejected tasks left: %v and %d of the 2,500 old ones, want the new one and another queue's", rejectedLeft, bulkLeft)
	}
	if err := b.pool.QueryRow(ctx, `SELECT array_agg(message_id) FROM herald.dev_mailbox`).Scan(&mailLeft); err != nil {
		t.Fatal(err)
	}
	if strings.Join(mailLeft, ",") != "new" {
		t.Errorf("mail left: %v, want the new message", mailLeft)
	}
	want = map[string]float64{"receipts": 2, "dispatches": 1, "rejected_tasks": 2501, "dev_mailbox": 1}
	if got := countersBy(t, reg, "herald_retention_deleted_total", "table"); !maps.Equal(got, want) {
		t.Errorf("herald_retention_deleted_total: %v, want %v", got, want)
	}

	b.worker.Sweep(ctx) // nothing more is due
	if got := countersBy(t, reg, "herald_retention_deleted_total", "table"); !maps.Equal(got, want) {
		t.Errorf("herald_retention_deleted_total after a second sweep: %v, want %v", got, want)
	}
	if st, err := b.store.Status(ctx, ledger.KindReceipt, later.ID); err != nil || st != ledger.ReceiptScheduled {
		t.Errorf("scheduled delivery after a second sweep: %s %v", st, err)
	}
}

// TestRetentionKeepsATombstoneWhoseTaskStillWaits: a canceled dispatch whose task still waits in
// Redis is held back only by its tombstone row (queue ""), however long the task waits: the
// retention keeps the tombstone (else the task would meet no row on first sight, and send). Once
// the task has met it, the tombstone's retention counts from then, and a later sweep deletes it.
func TestRetentionKeepsATombstoneWhoseTaskStillWaits(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *engine.Config) {
		c.IdempotencyWindow, c.Retention = time.Hour, 2*time.Hour
		c.SweepInterval = time.Hour
	}))
	ctx := t.Context()
	id := b.dispatch(t, "accounts.password_reset") // waits in Redis: no worker runs yet
	if c, err := b.store.CancelDispatch(ctx, id, "operator canceled", true); err != nil || !c.Tombstone {
		t.Fatalf("cancel: %+v %v", c, err)
	}
	exec := func(sql string) {
		t.Helper()
		if _, err := b.pool.Exec(ctx, sql, id); err != nil {
			t.Fatal(err)
		}
	}
	// The queue is backed up for 3 hours (workers down, a deploy stuck, …).
	exec(`UPDATE herald.dispatches SET updated_at = now() - interval '3 hours' WHERE id = $1`)
	b.worker.Sweep(ctx)
	if st := b.dispatchStatus(id); st != ledger.DispatchCanceled {
		t.Fatalf("after the sweep the canceled dispatch's tombstone is %q (gone): its waiting task will send", st)
	}
	b.start()
	waitFor(t, 15*time.Second, "the task to meet its tombstone", func() bool {
		var met bool
		err := b.pool.QueryRow(ctx, `SELECT retention_from IS NOT NULL FROM herald.dispatches WHERE id = $1`, id).Scan(&met)
		return err == nil && met
	})
	if rs := b.receipts(id); len(rs) != 0 {
		t.Errorf("the canceled dispatch has %d deliveries, want none", len(rs))
	}
	if st := b.dispatchStatus(id); st != ledger.DispatchCanceled {
		t.Fatalf("the tombstone its task met is %q, want canceled", st)
	}
	b.worker.Sweep(ctx) // met a moment ago: kept for the retention
	if st := b.dispatchStatus(id); st != ledger.DispatchCanceled {
		t.Fatalf("a tombstone met a moment ago is %q after a sweep, want kept for the retention", st)
	}
	exec(`UPDATE herald.dispatches SET retention_from = now() - interval '3 hours' WHERE id = $1`)
	b.worker.Sweep(ctx)
	if _, err := b.store.GetDispatch(ctx, id); !errors.Is(err, ledger.ErrNotFound) {
		t.Errorf("a tombstone met longer than the retention ago: %v, want it deleted", err)
	}
}

// TestSweepKeepsGoingPastPushedDispatches: a sweep batch of dispatches past the retention whose
// receipts are kept pushes them forward (to when their reminders are due) and counts them as work
// done, so the sweep takes the next batch and deletes the deletable dispatches behind them (that
// the next sweeps do not read them again, ledger.TestDeleteExpiredDispatchesCostWithFutureReminders
// measures).
func TestSweepKeepsGoingPastPushedDispatches(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	b := setup(t, withMetrics(reg), withConfig(func(c *engine.Config) {
		c.Retention = 48 * time.Hour
		c.SweepInterval = time.Hour // the test sweeps itself
	}))
	ctx := t.Context()
	// 1,500 dispatches settled 10 days ago, each with a reminder due in 5 days (more than a sweep
	// batch), and behind them 10 settled 9 days ago with no receipt left.
	for _, sql := range []string{
		`INSERT INTO herald.dispatches (id, event_id, status, attempt, due_at, accepted_at, updated_at, queue)
		 SELECT gen_random_uuid(), 'test.reminder', 'fanned_out', 1, now(), now() - interval '10 days',
		        now() - interval '10 days' - i * interval '1 second', $1
		 FROM generate_series(1, 1500) i`,
		`INSERT INTO herald.receipts (id, dispatch_id, event_id, channel_key, transport, recipient_id, status, due_at, expires_at, queue)
		 SELECT gen_random_uuid(), d.id, d.event_id, 'later', 'email', 'u1', 'scheduled', now() + interval '5 days',
		        now() + interval '6 days', $1
		 FROM herald.dispatches d WHERE d.event_id = 'test.reminder'`,
		`INSERT INTO herald.dispatches (id, event_id, status, attempt, due_at, accepted_at, updated_at, queue)
		 SELECT gen_random_uuid(), 'test.once', 'fanned_out', 1, now(), now() - interval '9 days', now() - interval '9 days', $1
		 FROM generate_series(1, 10) i`,
	} {
		if _, err := b.pool.Exec(ctx, sql, b.queue); err != nil {
			t.Fatal(err)
		}
	}
	b.worker.Sweep(ctx)
	var reminders, pushed, once int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE event_id = 'test.reminder'),
		count(*) FILTER (WHERE event_id = 'test.reminder' AND retention_from > now() + interval '4 days'),
		count(*) FILTER (WHERE event_id = 'test.once') FROM herald.dispatches`).Scan(&reminders, &pushed, &once); err != nil {
		t.Fatal(err)
	}
	if reminders != 1500 || pushed != 1500 || once != 0 {
		t.Errorf("after a sweep: %d dispatches with a reminder kept, %d of them pushed to it, %d deletable ones left; want 1500, 1500, 0",
			reminders, pushed, once)
	}
	want := map[string]float64{"receipts": 0, "dispatches": 10, "rejected_tasks": 0, "dev_mailbox": 0}
	if got := countersBy(t, reg, "herald_retention_deleted_total", "table"); !maps.Equal(got, want) {
		t.Errorf("herald_retention_deleted_total: %v, want %v (pushed dispatches are not deleted ones)", got, want)
	}
}
