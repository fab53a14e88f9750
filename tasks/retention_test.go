package tasks_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/receipts"
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
		withConfig(func(c *tasks.Config) {
			c.Retention, c.RejectedRetention, c.MailboxRetention = 48*time.Hour, 48*time.Hour, 48*time.Hour
			c.SweepInterval = time.Hour // the test sweeps itself
		}))
	ctx := t.Context()
	want := map[string]float64{"receipts": 0, "dispatches": 0, "rejected_tasks": 0, "dev_mailbox": 0}
	if got := countersBy(t, reg, "herald_retention_deleted_total", "table"); !equalCounts(got, want) {
		t.Fatalf("herald_retention_deleted_total at start-up: %v, want every table at zero: %v", got, want)
	}
	b.start()

	once, reminder := b.dispatch(t, "test.once"), b.dispatch(t, "test.reminder")
	onceReceipt := b.waitReceipt(once, receipts.ReceiptSent, 15*time.Second)
	sent := b.waitReceipt(reminder, receipts.ReceiptSent, 15*time.Second)
	later := b.waitReceipt(reminder, receipts.ReceiptScheduled, 5*time.Second)
	b.waitDispatch(once, receipts.DispatchFannedOut, 5*time.Second)
	b.waitDispatch(reminder, receipts.DispatchFannedOut, 5*time.Second)

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
		if _, err := b.store.InsertMail(ctx, receipts.Mail{MessageID: m, From: "a@example.net", To: "b@example.net"}); err != nil {
			t.Fatal(err)
		}
	}
	exec(`UPDATE herald.dev_mailbox SET created_at = now() - interval '3 days' WHERE message_id = 'old'`)

	b.worker.Sweep(ctx)

	if _, err := b.store.GetDispatch(ctx, once); !errors.Is(err, receipts.ErrNotFound) {
		t.Errorf("delivered dispatch past the retention: %v, want it deleted", err)
	}
	if st, err := b.store.Status(ctx, receipts.KindDispatch, reminder); err != nil || st != receipts.DispatchFannedOut {
		t.Errorf("dispatch with a delivery still scheduled: %s %v, want it kept", st, err)
	}
	for id, keep := range map[string]bool{onceReceipt.ID: false, sent.ID: false, later.ID: true} {
		_, err := b.store.Status(ctx, receipts.KindReceipt, id)
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
	if got := countersBy(t, reg, "herald_retention_deleted_total", "table"); !equalCounts(got, want) {
		t.Errorf("herald_retention_deleted_total: %v, want %v", got, want)
	}

	b.worker.Sweep(ctx) // nothing more is due
	if got := countersBy(t, reg, "herald_retention_deleted_total", "table"); !equalCounts(got, want) {
		t.Errorf("herald_retention_deleted_total after a second sweep: %v, want %v", got, want)
	}
	if st, err := b.store.Status(ctx, receipts.KindReceipt, later.ID); err != nil || st != receipts.ReceiptScheduled {
		t.Errorf("scheduled delivery after a second sweep: %s %v", st, err)
	}
}

func equalCounts(a, b map[string]float64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestRetentionMustExceedIdempotencyWindow: a retention that does not exceed the idempotency
// window is refused at start-up (a deleted dispatch no longer holds its key).
func TestRetentionMustExceedIdempotencyWindow(t *testing.T) {
	t.Parallel()
	pool, err := pgxpool.New(t.Context(), "postgres://herald@127.0.0.1:1/unused") // never connected: NewWorker starts nothing
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	for _, tc := range []struct {
		retention, window time.Duration
		refused           bool
	}{
		{24 * time.Hour, 0, true}, // the default window is 24h
		{12 * time.Hour, 0, true},
		{48 * time.Hour, 72 * time.Hour, true},
		{72 * time.Hour, 72 * time.Hour, true},
		{25 * time.Hour, 0, false},
		{0, 0, false}, // both defaults: 90 days and 24h
	} {
		w, err := tasks.NewWorker(tasks.Config{Redis: testenv.RedisOpt(t), DB: pool, Registry: events.NewRegistry(),
			SecretKeys: secretKeys, Retention: tc.retention, IdempotencyWindow: tc.window})
		if w != nil {
			_ = w.Close()
		}
		refused := err != nil && strings.Contains(err.Error(), "must exceed the idempotency window")
		if refused != tc.refused || (!tc.refused && err != nil) {
			t.Errorf("retention %v, window %v: err = %v, want refused %v", tc.retention, tc.window, err, tc.refused)
		}
	}
}
