package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/engine"
	"github.com/heraldhq/herald/internal/ledger"
)

// TestOutboxNotify: by default DispatchTx notifies the outbox channel with its queue at commit,
// which wakes that queue's promoters only; with DisableOutboxNotify it sends nothing, and the
// promoter's tick starts the dispatch.
func TestOutboxNotify(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "LISTEN "+engine.OutboxChannel); err != nil {
		t.Fatal(err)
	}
	quiet, err := engine.NewClient(engine.Config(herald.Config{SecretKeys: secretKeys, Queue: b.queue, DisableOutboxNotify: true}.WithDefaults()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = quiet.Close() })
	dispatchTx := func(c *engine.Client) string {
		t.Helper()
		var id string
		if err := pgx.BeginFunc(ctx, b.pool, func(tx pgx.Tx) error {
			res, err := c.DispatchTx(ctx, tx, "accounts.password_reset", user("42"), nil)
			id = res.ID
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return id
	}
	// Notifications arrive in commit order: the first one after a dispatch says whether it sent one.
	next := func() string {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		n, err := conn.Conn().WaitForNotification(wctx)
		if err != nil {
			t.Fatal(err)
		}
		return n.Payload
	}

	loud := dispatchTx(b.client)
	if got := next(); got != b.queue {
		t.Fatalf("DispatchTx notified %q, want its queue %q", got, b.queue)
	}
	silent := dispatchTx(quiet)
	if _, err := b.pool.Exec(ctx, "SELECT pg_notify($1, 'marker')", engine.OutboxChannel); err != nil {
		t.Fatal(err)
	}
	if got := next(); got != "marker" {
		t.Fatalf("DispatchTx with DisableOutboxNotify notified %q", got)
	}

	b.start() // the promoter's tick (100ms here) picks both up
	b.waitReceipt(loud, ledger.ReceiptSent, 10*time.Second)
	b.waitReceipt(silent, ledger.ReceiptSent, 10*time.Second)
}
