package engine_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/engine"
	"github.com/heraldhq/herald/internal/ledger"
)

func TestDispatchTxCommitAndRollback(t *testing.T) {
	t.Parallel()
	b := setup(t).start()
	ctx := t.Context()

	tx, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.client.DispatchTx(ctx, tx, "accounts.password_reset", user("42"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := b.waitReceipt(res.ID, ledger.ReceiptSent, 10*time.Second)
	m := b.smtp.WaitFor(t, 1, 5*time.Second)[0]
	if m.MessageID != r.MessageID {
		t.Fatalf("Message-ID %q, receipt %q", m.MessageID, r.MessageID)
	}
	if uid, err := b.tokens.Verify(tokenOf(t, m.Text)); err != nil || uid != "42" {
		t.Fatalf("token: %v", err)
	}

	tx, err = b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rolled, err := b.client.DispatchTx(ctx, tx, "accounts.password_reset", user("43"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// Nothing reaches the promoter (its own pass finds nothing), and nothing exists.
	if n := b.worker.Promote(ctx); n != 0 {
		t.Fatalf("the promoter enqueued %d tasks after a rollback", n)
	}
	b.waitIdle()
	if _, err := b.store.GetDispatch(ctx, rolled.ID); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("rolled-back dispatch exists: %v", err)
	}
	if n := len(b.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails after a rollback, want 1", n)
	}
}

func TestIdempotency(t *testing.T) {
	t.Parallel()
	b := setup(t).start()
	ctx := t.Context()

	// Postgres path: answered at once.
	txDispatch := func(vars map[string]any) (engine.Result, error) {
		tx, _ := b.pool.Begin(ctx)
		defer tx.Rollback(ctx) //nolint:errcheck
		res, err := b.client.DispatchTx(ctx, tx, "accounts.password_reset", user("42"), vars, engine.IdempotencyKey("reset-42"))
		if err == nil {
			err = tx.Commit(ctx)
		}
		return res, err
	}
	first, err := txDispatch(map[string]any{"n": 1})
	if err != nil {
		t.Fatal(err)
	}
	again, err := txDispatch(map[string]any{"n": 1})
	if err != nil || again.ID != first.ID || !again.Duplicate {
		t.Fatalf("same key and arguments: %+v %v; want %s", again, err, first.ID)
	}
	if _, err := txDispatch(map[string]any{"n": 2}); !errors.Is(err, engine.ErrIdempotencyConflict) {
		t.Fatalf("different arguments: %v", err)
	}
	b.waitReceipt(first.ID, ledger.ReceiptSent, 10*time.Second)

	// Redis path: recorded when the worker sees it.
	r1, err := dispatchID(b.client.Dispatch(ctx, "accounts.password_reset", user("43"), map[string]any{"n": 1.5}, engine.IdempotencyKey("k")))
	if err != nil {
		t.Fatal(err)
	}
	b.waitReceipt(r1, ledger.ReceiptSent, 10*time.Second)
	r2, err := dispatchID(b.client.Dispatch(ctx, "accounts.password_reset", user("43"), map[string]any{"n": 1.5}, engine.IdempotencyKey("k")))
	if err != nil {
		t.Fatal(err)
	}
	dup := b.waitDispatch(r2, ledger.DispatchDuplicate, 10*time.Second)
	if dup.DuplicateOf != r1 {
		t.Fatalf("duplicate of %q, want %q", dup.DuplicateOf, r1)
	}
	r3, err := dispatchID(b.client.Dispatch(ctx, "accounts.password_reset", user("43"), map[string]any{"n": 2}, engine.IdempotencyKey("k")))
	if err != nil {
		t.Fatal(err)
	}
	rej := b.waitDispatch(r3, ledger.DispatchRejected, 10*time.Second)
	if rej.DuplicateOf != r1 || !strings.Contains(rej.LastError, "idempotency_conflict") {
		t.Fatalf("conflict: %+v", rej)
	}
	if len(b.receipts(r2))+len(b.receipts(r3)) != 0 {
		t.Fatal("a duplicate or rejected dispatch has receipts")
	}
	if n := len(b.smtp.Messages()); n != 2 {
		t.Fatalf("%d emails, want 2", n)
	}
}

func TestProducerSecretNeverInClear(t *testing.T) {
	t.Parallel()
	b := setup(t).start()
	const token = "producer-tok-7Zq9w2"
	id, err := dispatchID(b.client.Dispatch(t.Context(), "accounts.password_reset", user("42"), map[string]any{"reset_token": events.NewSecret(token)}))
	if err != nil {
		t.Fatal(err)
	}
	// While the task sits in Redis and after it ran.
	if hits := redisContains(t, b.redis, token); len(hits) > 0 {
		t.Fatalf("secret in clear in Redis keys %v", hits)
	}
	b.waitReceipt(id, ledger.ReceiptSent, 10*time.Second)
	m := b.smtp.WaitFor(t, 1, 5*time.Second)[0]
	if tokenOf(t, m.Text) != token {
		t.Fatalf("the producer's token was not used: %q", tokenOf(t, m.Text))
	}
	if hits := redisContains(t, b.redis, token); len(hits) > 0 {
		t.Fatalf("secret in clear in Redis keys %v", hits)
	}
	var n int
	if err := b.pool.QueryRow(t.Context(), `SELECT count(*) FROM herald.receipts r WHERE r::text LIKE '%' || $1 || '%'`, token).Scan(&n); err != nil || n != 0 {
		t.Fatalf("secret in %d receipts (%v)", n, err)
	}
	if err := b.pool.QueryRow(t.Context(), `SELECT count(*) FROM herald.dispatches d WHERE d::text LIKE '%' || $1 || '%'`, token).Scan(&n); err != nil || n != 0 {
		t.Fatalf("secret in clear in %d dispatch rows (%v)", n, err)
	}
	if strings.Contains(b.logs.String(), token) {
		t.Fatal("secret in the logs")
	}
	// Once every receipt is final, the sweeper scrubs the sealed copy.
	waitFor(t, 5*time.Second, "secrets scrubbed", func() bool {
		d, _ := b.store.GetDispatch(t.Context(), id)
		return d.Sealed == nil && d.ScrubbedAt != nil
	})
}
