package engine_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/engine"
	"github.com/heraldhq/herald/internal/ledger"
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
	id, err := dispatchID(b.client.Dispatch(t.Context(), "accounts.password_reset", user("42"), nil))
	if err != nil {
		t.Fatal(err)
	}
	r := b.waitReceipt(id, ledger.ReceiptSent, 10*time.Second)
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
	d := b.waitDispatch(id, ledger.DispatchFannedOut, 5*time.Second)
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

func TestDelayedChannels(t *testing.T) {
	t.Parallel()
	ev := testEvent{id: "test.delayed", channels: []events.Channel{
		{Key: "soon", Transport: "email", Time: events.In(2 * time.Second)},
		{Key: "beyond_horizon", Transport: "email", Time: events.In(4 * time.Second)},
	}}
	b := setup(t, withEvents(ev), withConfig(func(c *engine.Config) { c.Horizon = 3 * time.Second })).start()
	start := time.Now()
	id, err := dispatchID(b.client.Dispatch(t.Context(), "test.delayed", user("42"), map[string]any{"note": "n"}))
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
		return rs[0].Status == ledger.ReceiptSent && rs[1].Status == ledger.ReceiptSent
	})
	for _, r := range b.receipts(id) {
		if r.SentAt.Before(r.DueAt) {
			t.Fatalf("receipt %s sent at %v before due %v", r.ChannelKey, r.SentAt, r.DueAt)
		}
	}
}

func TestMintFailureFailsDispatch(t *testing.T) {
	t.Parallel()
	b := setup(t).start()
	b.tokens.Key = nil // the signing key is missing: minting fails
	id, err := dispatchID(b.client.Dispatch(t.Context(), "accounts.password_reset", user("42"), nil))
	if err != nil {
		t.Fatal(err)
	}
	d := b.waitDispatch(id, ledger.DispatchFailed, 10*time.Second)
	if !strings.Contains(d.LastError, "token generation failed") {
		t.Fatalf("reason %q", d.LastError)
	}
	if len(b.receipts(id)) != 0 || len(b.smtp.Messages()) != 0 {
		t.Fatal("a failed mint produced a receipt or an email")
	}
}

func TestBadInputIsRecorded(t *testing.T) {
	t.Parallel()
	b := setup(t).start()
	ctx := t.Context()

	unknown, err := dispatchID(b.client.Dispatch(ctx, "nobody.registered_this", nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	missing, err := dispatchID(b.client.Dispatch(ctx, "accounts.password_reset", user("404"), nil))
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

	d := b.waitDispatch(unknown, ledger.DispatchFailed, 15*time.Second)
	if !strings.Contains(d.LastError, "unknown event") || d.Attempt < 2 {
		t.Fatalf("unknown event: attempt %d, %q", d.Attempt, d.LastError)
	}
	d = b.waitDispatch(missing, ledger.DispatchFailed, 15*time.Second)
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
