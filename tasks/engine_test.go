package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/heraldhq/herald/channels/email/emailtest"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/receipts"
	"github.com/heraldhq/herald/tasks"
)

// tokenOf extracts and returns the reset token from an email body.
func tokenOf(t *testing.T, body string) string {
	t.Helper()
	i := strings.Index(body, "https://app.test/reset-password?token=")
	if i < 0 {
		t.Fatalf("no reset URL in %q", body)
	}
	rest := body[i:]
	if j := strings.IndexAny(rest, "\" \r\n<"); j > 0 {
		rest = rest[:j]
	}
	u, err := url.Parse(rest)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get("token")
}

func TestDispatchSendsOneEmailWithRealToken(t *testing.T) {
	t.Parallel()
	b := setup(t).start()
	id, err := b.client.Dispatch(t.Context(), "accounts.password_reset", user("42"), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := b.waitReceipt(id, receipts.ReceiptSent, 10*time.Second)
	msgs := b.smtp.WaitFor(t, 1, 5*time.Second)
	m := msgs[0]
	if m.To[0] != "ada@example.net" || m.Subject != "Reset your password" {
		t.Fatalf("to %v subject %q", m.To, m.Subject)
	}
	if want := "<" + r.ID + "@herald.test>"; m.MessageID != want || r.MessageID != want {
		t.Fatalf("Message-ID %q (receipt %q), want %q", m.MessageID, r.MessageID, want)
	}
	tok := tokenOf(t, m.Text)
	if uid, err := b.tokens.Verify(tok); err != nil || uid != "42" {
		t.Fatalf("token %q does not verify for user 42: %q %v", tok, uid, err)
	}
	if tokenOf(t, m.HTML) != tok {
		t.Fatal("HTML and text carry different tokens")
	}
	if m.Multipart != "multipart/alternative" {
		t.Fatalf("content type %q", m.Multipart)
	}
	d := b.waitDispatch(id, receipts.DispatchFannedOut, 5*time.Second)
	if d.Minted == nil || d.Minted["reset_token"].Sealed == "" {
		t.Fatalf("minted token not stored sealed: %+v", d.Minted)
	}
	// No second email turns up.
	b.waitIdle()
	if n := len(b.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails, want 1", n)
	}
	if strings.Contains(b.logs.String(), tok) {
		t.Fatal("the minted token appears in the logs")
	}
}

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
	r := b.waitReceipt(res.ID, receipts.ReceiptSent, 10*time.Second)
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
	if _, err := b.store.GetDispatch(ctx, rolled.ID); !errors.Is(err, receipts.ErrNotFound) {
		t.Fatalf("rolled-back dispatch exists: %v", err)
	}
	if n := len(b.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails after a rollback, want 1", n)
	}
}

func TestDelayedChannels(t *testing.T) {
	t.Parallel()
	ev := testEvent{id: "test.delayed", channels: []events.Channel{
		{Key: "soon", Transport: "email", Time: events.In(2 * time.Second)},
		{Key: "beyond_horizon", Transport: "email", Time: events.In(4 * time.Second)},
	}}
	b := setup(t, withEvents(ev), withConfig(func(c *tasks.Config) { c.Horizon = 3 * time.Second })).start()
	start := time.Now()
	id, err := b.client.Dispatch(t.Context(), "test.delayed", user("42"), map[string]any{"note": "n"})
	if err != nil {
		t.Fatal(err)
	}
	b.smtp.WaitFor(t, 1, 2*time.Second+5*time.Second)
	if el := time.Since(start); el < 2*time.Second {
		t.Fatalf("2s-delayed channel sent after %v", el)
	}
	rs := b.receipts(id)
	if len(rs) != 2 {
		t.Fatalf("%d receipts", len(rs))
	}
	b.smtp.WaitFor(t, 2, 4*time.Second+5*time.Second)
	if el := time.Since(start); el < 4*time.Second {
		t.Fatalf("4s-delayed channel sent after %v", el)
	}
	waitFor(t, 5*time.Second, "both receipts sent", func() bool {
		rs := b.receipts(id)
		return rs[0].Status == receipts.ReceiptSent && rs[1].Status == receipts.ReceiptSent
	})
	for _, r := range b.receipts(id) {
		if r.SentAt.Before(r.DueAt) {
			t.Fatalf("receipt %s sent at %v before due %v", r.ChannelKey, r.SentAt, r.DueAt)
		}
	}
}

// TestDuplicateAndRacingDeliveries runs the same deliver task twice and from two workers at
// once: one email.
func TestDuplicateAndRacingDeliveries(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *tasks.Config) { c.DisableInline = true }))
	other, err := tasks.NewWorker(b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	ctx := t.Context()
	ids := make([]string, 2)
	for i, uid := range []string{"42", "43"} {
		tx, _ := b.pool.Begin(ctx)
		res, err := b.client.DispatchTx(ctx, tx, "accounts.password_reset", user(uid), nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = tx.Commit(ctx)
		ids[i] = res.ID
		p, _ := json.Marshal(tasks.DispatchPayload{V: 1, DispatchID: res.ID})
		if err := b.worker.HandleDispatch(ctx, asynq.NewTask(tasks.TypeDispatch, p)); err != nil {
			t.Fatal(err)
		}
	}
	deliverTask := func(rid string) *asynq.Task {
		p, _ := json.Marshal(tasks.DeliverPayload{V: 1, ReceiptID: rid})
		return asynq.NewTask(tasks.TypeDeliver, p)
	}
	// Same task twice, one after the other.
	r1 := b.receipts(ids[0])[0]
	for range 2 {
		if err := b.worker.HandleDeliver(ctx, deliverTask(r1.ID)); err != nil {
			t.Fatal(err)
		}
	}
	// Two workers racing on the second receipt.
	r2 := b.receipts(ids[1])[0]
	var wg sync.WaitGroup
	for _, w := range []*tasks.Worker{b.worker, other, b.worker, other} {
		wg.Go(func() {
			if err := w.HandleDeliver(ctx, deliverTask(r2.ID)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// Deliveries are synchronous: once every call returned, every email that will ever be sent
	// for these receipts has arrived.
	if n := len(b.smtp.Messages()); n != 2 {
		t.Fatalf("%d emails for 2 deliveries, want 2", n)
	}
	for _, id := range ids {
		if r := b.receipts(id)[0]; r.Status != receipts.ReceiptSent || r.Attempt != 1 {
			t.Fatalf("receipt %+v", r)
		}
	}
}

// TestReclaimAfterCrash simulates a worker that claimed a delivery and died: the lease
// expires, the promoter reclaims it, and it is sent once more, flagged in_doubt.
func TestReclaimAfterCrash(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *tasks.Config) { c.DisableInline = true; c.Lease, c.TaskTimeout = 10*time.Second, 8*time.Second }))
	ctx := t.Context()
	tx, _ := b.pool.Begin(ctx)
	res, err := b.client.DispatchTx(ctx, tx, "accounts.password_reset", user("42"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = tx.Commit(ctx)
	p, _ := json.Marshal(tasks.DispatchPayload{V: 1, DispatchID: res.ID})
	if err := b.worker.HandleDispatch(ctx, asynq.NewTask(tasks.TypeDispatch, p)); err != nil {
		t.Fatal(err)
	}
	r := b.receipts(res.ID)[0]
	// The crashed worker: claimed (status sending), never finished.
	if _, out, err := b.store.ClaimReceipt(ctx, r.ID, time.Minute); err != nil || out != receipts.Claimed {
		t.Fatalf("claim: %v %v", out, err)
	}
	if err := b.store.ExpireLeaseForTest(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	b.start() // the promoter finds the expired lease and enqueues a reclaim
	got := b.waitReceipt(res.ID, receipts.ReceiptSent, 10*time.Second)
	if !got.InDoubt || got.Attempt != 2 {
		t.Fatalf("reclaimed receipt: in_doubt %v attempt %d", got.InDoubt, got.Attempt)
	}
	b.waitIdle()
	if n := len(b.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails after one crash, want at most 1 more", n)
	}
	if !strings.Contains(b.logs.String(), "in doubt") {
		t.Fatal("the in-doubt reclaim was not logged")
	}
}

func TestIdempotency(t *testing.T) {
	t.Parallel()
	b := setup(t).start()
	ctx := t.Context()

	// Postgres path: answered at once.
	txDispatch := func(vars map[string]any) (tasks.TxResult, error) {
		tx, _ := b.pool.Begin(ctx)
		defer tx.Rollback(ctx) //nolint:errcheck
		res, err := b.client.DispatchTx(ctx, tx, "accounts.password_reset", user("42"), vars, tasks.IdempotencyKey("reset-42"))
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
	if _, err := txDispatch(map[string]any{"n": 2}); !errors.Is(err, tasks.ErrIdempotencyConflict) {
		t.Fatalf("different arguments: %v", err)
	}
	b.waitReceipt(first.ID, receipts.ReceiptSent, 10*time.Second)

	// Redis path: recorded when the worker sees it.
	r1, err := b.client.Dispatch(ctx, "accounts.password_reset", user("43"), map[string]any{"n": 1.5}, tasks.IdempotencyKey("k"))
	if err != nil {
		t.Fatal(err)
	}
	b.waitReceipt(r1, receipts.ReceiptSent, 10*time.Second)
	r2, _ := b.client.Dispatch(ctx, "accounts.password_reset", user("43"), map[string]any{"n": 1.5}, tasks.IdempotencyKey("k"))
	dup := b.waitDispatch(r2, receipts.DispatchDuplicate, 10*time.Second)
	if dup.DuplicateOf != r1 {
		t.Fatalf("duplicate of %q, want %q", dup.DuplicateOf, r1)
	}
	r3, _ := b.client.Dispatch(ctx, "accounts.password_reset", user("43"), map[string]any{"n": 2}, tasks.IdempotencyKey("k"))
	rej := b.waitDispatch(r3, receipts.DispatchRejected, 10*time.Second)
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

func TestMintFailureFailsDispatch(t *testing.T) {
	t.Parallel()
	b := setup(t).start()
	b.tokens.Key = nil // the signing key is missing: minting fails
	id, err := b.client.Dispatch(t.Context(), "accounts.password_reset", user("42"), nil)
	if err != nil {
		t.Fatal(err)
	}
	d := b.waitDispatch(id, receipts.DispatchFailed, 10*time.Second)
	if !strings.Contains(d.LastError, "token generation failed") {
		t.Fatalf("reason %q", d.LastError)
	}
	if len(b.receipts(id)) != 0 || len(b.smtp.Messages()) != 0 {
		t.Fatal("a failed mint produced a receipt or an email")
	}
}

func TestProducerSecretNeverInClear(t *testing.T) {
	t.Parallel()
	b := setup(t).start()
	const token = "producer-tok-7Zq9w2"
	id, err := b.client.Dispatch(t.Context(), "accounts.password_reset", user("42"), map[string]any{"reset_token": events.NewSecret(token)})
	if err != nil {
		t.Fatal(err)
	}
	// While the task sits in Redis and after it ran.
	if hits := redisContains(t, b.redis, token); len(hits) > 0 {
		t.Fatalf("secret in clear in Redis keys %v", hits)
	}
	b.waitReceipt(id, receipts.ReceiptSent, 10*time.Second)
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

func TestBadInputIsRecorded(t *testing.T) {
	t.Parallel()
	b := setup(t).start()
	ctx := t.Context()

	unknown, err := b.client.Dispatch(ctx, "nobody.registered_this", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	missing, err := b.client.Dispatch(ctx, "accounts.password_reset", user("404"), nil)
	if err != nil {
		t.Fatal(err)
	}
	raw := asynq.NewTask(tasks.TypeDispatch, []byte(`{"v":1,"dispatch_id":`), asynq.Queue(b.queue), asynq.TaskID("broken-1"))
	ac := asynq.NewClient(b.redis)
	defer ac.Close()
	if _, err := ac.EnqueueContext(ctx, raw); err != nil {
		t.Fatal(err)
	}
	badDeliver := asynq.NewTask(tasks.TypeDeliver, []byte(`{"v":1,"receipt_id":"0190aaaa-0000-7000-8000-000000000000"}`), asynq.Queue(b.queue))
	if _, err := ac.EnqueueContext(ctx, badDeliver); err != nil {
		t.Fatal(err)
	}

	d := b.waitDispatch(unknown, receipts.DispatchFailed, 15*time.Second)
	if !strings.Contains(d.LastError, "unknown event") || d.Attempt < 2 {
		t.Fatalf("unknown event: attempt %d, %q", d.Attempt, d.LastError)
	}
	d = b.waitDispatch(missing, receipts.DispatchFailed, 15*time.Second)
	if !strings.Contains(d.LastError, "users/404") || !strings.Contains(d.LastError, "not found") || d.Attempt != 4 {
		t.Fatalf("missing row: attempt %d, %q", d.Attempt, d.LastError)
	}
	waitFor(t, 10*time.Second, "two rejected tasks", func() bool {
		rt, _ := b.store.ListRejectedTasks(ctx, 10)
		return len(rt) == 2
	})
	rt, _ := b.store.ListRejectedTasks(ctx, 10)
	reasons := rt[0].Reason + " | " + rt[1].Reason
	if !strings.Contains(reasons, "malformed payload") || !strings.Contains(reasons, "does not exist") {
		t.Fatalf("reasons: %s", reasons)
	}
	if len(b.smtp.Messages()) != 0 {
		t.Fatal("bad input sent an email")
	}
}

func TestSMTPReplies(t *testing.T) {
	t.Parallel()
	t.Run("451 is retried and sent", func(t *testing.T) {
		t.Parallel()
		b := setup(t).start()
		b.smtp.FailNext(emailtest.Reply(451, "4.3.0", "try again later"))
		id, _ := b.client.Dispatch(t.Context(), "accounts.password_reset", user("42"), nil)
		r := b.waitReceipt(id, receipts.ReceiptSent, 10*time.Second)
		if r.Attempt != 2 || !strings.Contains(r.LastError, "") {
			t.Fatalf("attempt %d", r.Attempt)
		}
		if n := len(b.smtp.Messages()); n != 1 {
			t.Fatalf("%d emails", n)
		}
	})
	t.Run("550 fails at once", func(t *testing.T) {
		t.Parallel()
		b := setup(t).start()
		b.smtp.FailNext(emailtest.Reply(550, "5.1.1", "no such mailbox"))
		id, _ := b.client.Dispatch(t.Context(), "accounts.password_reset", user("42"), nil)
		r := b.waitReceipt(id, receipts.ReceiptFailed, 10*time.Second)
		if r.Attempt != 1 || !strings.Contains(r.LastError, "550") {
			t.Fatalf("attempt %d, %q", r.Attempt, r.LastError)
		}
	})
	t.Run("535 is temporary", func(t *testing.T) {
		t.Parallel()
		srv := emailtest.Start(t)
		srv.RequireAuth("herald", "right")
		b := setup(t, withConfig(func(c *tasks.Config) { c.BackoffMin, c.BackoffMax = 5*time.Second, 5*time.Second }))
		s, err := newEmailSender("smtp://herald:wrong-Pw-123@" + srv.Addr + "?tls=none&auth=plain-noenc")
		if err != nil {
			t.Fatal(err)
		}
		b.cfg.Senders["email"] = s
		w, err := tasks.NewWorker(b.cfg)
		if err != nil {
			t.Fatal(err)
		}
		b.worker = w
		b.start()
		id, _ := b.client.Dispatch(t.Context(), "accounts.password_reset", user("42"), nil)
		r := b.waitReceipt(id, receipts.ReceiptRetrying, 10*time.Second)
		if !strings.Contains(r.LastError, "535") || strings.Contains(r.LastError, "wrong-Pw-123") {
			t.Fatalf("last error %q", r.LastError)
		}
		if !strings.Contains(b.logs.String(), "transport_configuration") || strings.Contains(b.logs.String(), "wrong-Pw-123") {
			t.Fatal("configuration alert missing, or password in logs")
		}
	})
}

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
	id, err := b.client.Dispatch(ctx, "test.later", user("42"), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := b.waitReceipt(id, receipts.ReceiptScheduled, 5*time.Second)
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
	b.waitReceipt(id, receipts.ReceiptSent, 3*time.Second+2*time.Second+5*time.Second)
	b.waitReceipt(res.ID, receipts.ReceiptSent, 15*time.Second)
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
	b := setup(t, withConfig(func(c *tasks.Config) { c.PromoterInterval = time.Minute })).start()
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
	b.waitReceipt(res.ID, receipts.ReceiptSent, 10*time.Second) // the tick is a minute away
}

// TestDeliveryOutcomes walks the outcomes other than sent: expired past the max age, skipped by
// policy, refused sample data, and a transport this worker does not have.
func TestDeliveryOutcomes(t *testing.T) {
	t.Parallel()
	b := setup(t, withEvents(
		testEvent{id: "test.expires", channels: []events.Channel{{Key: "email", Transport: "email",
			Time: events.In(time.Second), Policy: events.Policy{MaxAge: time.Nanosecond}}}},
		testEvent{id: "test.optout", channels: []events.Channel{{Key: "email", Transport: "email"}},
			shouldSend: &events.Decision{Send: false, Reason: "user_opted_out"}},
		testEvent{id: "test.leak", channels: []events.Channel{{Key: "email", Transport: "email"}},
			note: "token " + events.SampleString("reset-token")},
		testEvent{id: "test.sms", channels: []events.Channel{{Key: "sms", Transport: "sms"}, {Key: "email", Transport: "email"}}},
	)).start()
	ctx := t.Context()
	dispatch := func(ev string) string {
		id, err := b.client.Dispatch(ctx, ev, user("42"), nil)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	exp, opt, leak, sms := dispatch("test.expires"), dispatch("test.optout"), dispatch("test.leak"), dispatch("test.sms")

	if r := b.waitReceipt(exp, receipts.ReceiptExpired, 10*time.Second); !strings.Contains(r.LastError, "max age") {
		t.Errorf("expired: %q", r.LastError)
	}
	if r := b.waitReceipt(opt, receipts.ReceiptSkipped, 10*time.Second); r.LastError != "user_opted_out" {
		t.Errorf("skipped: %q", r.LastError)
	}
	if r := b.waitReceipt(leak, receipts.ReceiptFailed, 10*time.Second); !strings.Contains(r.LastError, "sample-data marker") {
		t.Errorf("sample leak: %q", r.LastError)
	}
	if r := b.waitReceipt(sms, receipts.ReceiptFailed, 10*time.Second); !strings.Contains(r.LastError, `no sender configured for transport "sms"`) {
		t.Errorf("no transport: %q", r.LastError)
	}
	b.waitReceipt(sms, receipts.ReceiptSent, 10*time.Second) // the email channel of the same dispatch still goes out
	msgs := b.smtp.WaitFor(t, 1, 5*time.Second)
	b.waitIdle()
	if n := len(b.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails, want only the sms event's email channel: %+v", n, msgs)
	}
	for _, m := range b.smtp.Messages() {
		if events.ContainsSample(m.Text) {
			t.Fatal("sample data reached an email")
		}
	}
}

// TestShutdownDuringSend: a send in flight when the worker shuts down completes, is recorded as
// sent, and is not sent again by the next worker.
func TestShutdownDuringSend(t *testing.T) {
	t.Parallel()
	b := setup(t).start()
	inData := b.smtp.SetDelay(1500 * time.Millisecond)
	id, err := b.client.Dispatch(t.Context(), "accounts.password_reset", user("42"), nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-inData:
	case <-time.After(10 * time.Second):
		t.Fatal("the send never started")
	}
	b.worker.Shutdown() // returns once the running delivery finished (ShutdownTimeout 8s > the 1.5s send)
	rs := b.receipts(id)
	if len(rs) != 1 || rs[0].Status != receipts.ReceiptSent {
		t.Fatalf("after shutdown: %+v", rs[0])
	}
	// A new worker on the same queue finds nothing left to do.
	b.smtp.SetDelay(0)
	next, err := tasks.NewWorker(b.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if n := next.Promote(t.Context()); n != 0 {
		t.Fatalf("the next worker's promoter found %d tasks to enqueue", n)
	}
	b.waitIdle()
	if n := len(b.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails, want 1", n)
	}
}

// TestTwoWorkersShareTheLoad: two workers (each with its promoter) on one queue and database
// deliver every dispatch exactly once.
func TestTwoWorkersShareTheLoad(t *testing.T) {
	t.Parallel()
	b := setup(t).start()
	other, err := tasks.NewWorker(b.cfg)
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
