package engine_test

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/heraldhq/herald/channels/email/emailtest"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/engine"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/ledger/ledgertest"
	"github.com/heraldhq/herald/tasks"
)

// TestDuplicateAndRacingDeliveries runs the same deliver task twice and from two workers at
// once: one email.
func TestDuplicateAndRacingDeliveries(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *engine.Config) { c.DisableInline = true }))
	other, err := engine.NewWorker(b.cfg, b.workerDeps())
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
		if err := tasks.NewServeMux(b.worker).ProcessTask(ctx, asynq.NewTask(tasks.TypeDispatch, p)); err != nil {
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
		if err := tasks.NewServeMux(b.worker).ProcessTask(ctx, deliverTask(r1.ID)); err != nil {
			t.Fatal(err)
		}
	}
	// Two workers racing on the second receipt.
	r2 := b.receipts(ids[1])[0]
	var wg sync.WaitGroup
	for _, w := range []*engine.Worker{b.worker, other, b.worker, other} {
		wg.Go(func() {
			if err := tasks.NewServeMux(w).ProcessTask(ctx, deliverTask(r2.ID)); err != nil {
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
		if r := b.receipts(id)[0]; r.Status != ledger.ReceiptSent || r.Attempt != 1 {
			t.Fatalf("receipt %+v", r)
		}
	}
}

// TestReclaimAfterCrash simulates a worker that claimed a delivery and died: the lease
// expires, the promoter reclaims it, and it is sent once more, flagged in_doubt.
func TestReclaimAfterCrash(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *engine.Config) { c.DisableInline = true; c.Lease, c.TaskTimeout = 10*time.Second, 8*time.Second }))
	ctx := t.Context()
	tx, _ := b.pool.Begin(ctx)
	res, err := b.client.DispatchTx(ctx, tx, "accounts.password_reset", user("42"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = tx.Commit(ctx)
	p, _ := json.Marshal(tasks.DispatchPayload{V: 1, DispatchID: res.ID})
	if err := tasks.NewServeMux(b.worker).ProcessTask(ctx, asynq.NewTask(tasks.TypeDispatch, p)); err != nil {
		t.Fatal(err)
	}
	r := b.receipts(res.ID)[0]
	// The crashed worker: claimed (status sending), never finished.
	if _, out, err := b.store.ClaimReceipt(ctx, r.ID, time.Minute); err != nil || out != ledger.Claimed {
		t.Fatalf("claim: %v %v", out, err)
	}
	if err := ledgertest.ExpireLease(ctx, b.pool, r.ID); err != nil {
		t.Fatal(err)
	}
	b.start() // the promoter finds the expired lease and enqueues a reclaim
	got := b.waitReceipt(res.ID, ledger.ReceiptSent, 10*time.Second)
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

func TestSMTPReplies(t *testing.T) {
	t.Parallel()
	t.Run("451 is retried and sent", func(t *testing.T) {
		t.Parallel()
		b := setup(t).start()
		b.smtp.FailNext(emailtest.Reply(451, "4.3.0", "try again later"))
		id := b.dispatch(t, "accounts.password_reset")
		r := b.waitReceipt(id, ledger.ReceiptSent, 10*time.Second)
		if r.Attempt != 2 || r.LastError != "" {
			t.Fatalf("attempt %d, last error %q: want the second attempt sent and the 451 cleared", r.Attempt, r.LastError)
		}
		b.waitIdle()
		if n := len(b.smtp.Messages()); n != 1 {
			t.Fatalf("%d emails", n)
		}
	})
	t.Run("550 fails at once", func(t *testing.T) {
		t.Parallel()
		b := setup(t).start()
		b.smtp.FailNext(emailtest.Reply(550, "5.1.1", "no such mailbox"))
		id := b.dispatch(t, "accounts.password_reset")
		r := b.waitReceipt(id, ledger.ReceiptFailed, 10*time.Second)
		if r.Attempt != 1 || !strings.Contains(r.LastError, "550") {
			t.Fatalf("attempt %d, %q", r.Attempt, r.LastError)
		}
	})
	t.Run("535 is temporary", func(t *testing.T) {
		t.Parallel()
		srv := emailtest.Start(t)
		srv.RequireAuth("herald", "right")
		b := setup(t, withConfig(func(c *engine.Config) { c.BackoffMin, c.BackoffMax = 5*time.Second, 5*time.Second }))
		s, err := newEmailSender("smtp://herald:wrong-Pw-123@" + srv.Addr + "?tls=none&auth=plain-noenc")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		b.cfg.Senders["email"] = s
		b.rebuild(t)
		b.start()
		id := b.dispatch(t, "accounts.password_reset")
		r := b.waitReceipt(id, ledger.ReceiptRetrying, 10*time.Second)
		if !strings.Contains(r.LastError, "535") || strings.Contains(r.LastError, "wrong-Pw-123") {
			t.Fatalf("last error %q", r.LastError)
		}
		if !strings.Contains(b.logs.String(), "transport_configuration") || strings.Contains(b.logs.String(), "wrong-Pw-123") {
			t.Fatal("configuration alert missing, or password in logs")
		}
	})
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
		id, err := dispatchID(b.client.Dispatch(ctx, ev, user("42"), nil))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	exp, opt, leak, sms := dispatch("test.expires"), dispatch("test.optout"), dispatch("test.leak"), dispatch("test.sms")

	if r := b.waitReceipt(exp, ledger.ReceiptExpired, 10*time.Second); !strings.Contains(r.LastError, "max age") {
		t.Errorf("expired: %q", r.LastError)
	}
	if r := b.waitReceipt(opt, ledger.ReceiptSkipped, 10*time.Second); r.LastError != "user_opted_out" {
		t.Errorf("skipped: %q", r.LastError)
	}
	if r := b.waitReceipt(leak, ledger.ReceiptFailed, 10*time.Second); !strings.Contains(r.LastError, "sample-data marker") {
		t.Errorf("sample leak: %q", r.LastError)
	}
	if r := b.waitReceipt(sms, ledger.ReceiptFailed, 10*time.Second); !strings.Contains(r.LastError, `no sender configured for transport "sms"`) {
		t.Errorf("no transport: %q", r.LastError)
	}
	b.waitReceipt(sms, ledger.ReceiptSent, 10*time.Second) // the email channel of the same dispatch still goes out
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
	id, err := dispatchID(b.client.Dispatch(t.Context(), "accounts.password_reset", user("42"), nil))
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
	if len(rs) != 1 || rs[0].Status != ledger.ReceiptSent {
		t.Fatalf("after shutdown: %+v", rs[0])
	}
	// A new worker on the same queue finds nothing left to do.
	b.smtp.SetDelay(0)
	next, err := engine.NewWorker(b.cfg, b.workerDeps())
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
