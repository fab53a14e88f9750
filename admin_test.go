package herald_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/channels/email/emailtest"
	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/examples"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/receipts"
)

// countingReset is the example password reset, counting its SendVariables calls.
type countingReset struct {
	examples.PasswordReset
	mints *atomic.Int32
}

func (c countingReset) SendVariables(ctx context.Context, d *events.Dispatch) (map[string]any, error) {
	c.mints.Add(1)
	return c.PasswordReset.SendVariables(ctx, d)
}

type adminBundle struct {
	admin *herald.Admin
	pool  *pgxpool.Pool
	smtp  *emailtest.Server
	mints *atomic.Int32
}

func setupAdmin(t *testing.T, resetKey []byte) *adminBundle {
	t.Helper()
	ctx := t.Context()
	b := &adminBundle{pool: testenv.DB(t), smtp: emailtest.Start(t), mints: &atomic.Int32{}}
	seedExamples(t, b.pool)
	reg := events.NewRegistry()
	reg.MustRegister(countingReset{PasswordReset: examples.PasswordReset{Tokens: &examples.Tokens{Key: resetKey}, BaseURL: "https://app.test"},
		mints: b.mints})
	if err := reg.RegisterLoader("users", examples.UsersLoader{DB: b.pool}); err != nil {
		t.Fatal(err)
	}
	a, err := herald.NewAdmin(ctx, herald.Config{Redis: testenv.RedisOpt(t), DB: b.pool, SMTPURL: b.smtp.URL(),
		MailFrom: "Herald <noreply@herald.test>", SecretKeys: keys, Queue: testenv.Queue(t), LogOutput: &testenv.LogBuffer{}}, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	b.admin = a
	return b
}

// rows counts the rows of every Herald table.
func (b *adminBundle) rows(t *testing.T) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(t.Context(), `SELECT (SELECT count(*) FROM herald.dispatches) + (SELECT count(*) FROM herald.receipts)
		+ (SELECT count(*) FROM herald.rejected_tasks) + (SELECT count(*) FROM herald.dev_mailbox)
		+ (SELECT count(*) FROM herald.audit_log)`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

var user42 = []events.Ref{{Name: "user", Resource: "users", ID: "42"}}

// TestAdminListsAndPreviews: the events list, a preview from sample data and one for a real
// record. Neither mints (SendVariables is never called) nor writes (no row in any Herald
// table), and what a send would mint shows as a marked sample value.
func TestAdminListsAndPreviews(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t, []byte(strings.Repeat("r", 32)))
	ctx := t.Context()
	evs := b.admin.Events(ctx)
	if len(evs) != 1 || evs[0].ID != "accounts.password_reset" || !evs[0].Previewable || !evs[0].Mints || len(evs[0].Channels) == 0 ||
		evs[0].Domain != "accounts" {
		t.Fatalf("events: %+v", evs)
	}

	sample, err := b.admin.Preview(ctx, "accounts.password_reset")
	if err != nil || len(sample) != 1 {
		t.Fatalf("preview: %+v %v", sample, err)
	}
	s := sample[0]
	if s.Status != receipts.ReceiptScheduled || !events.ContainsSample(s.Recipient.Address) || !events.ContainsSample(s.Text) ||
		!strings.Contains(s.Text, "https://app.test/reset-password?token=reset-token-"+events.SampleMarker) || s.Subject == "" ||
		!strings.Contains(s.HTML, "reset-token-"+events.SampleMarker) || s.From.Address != "noreply@herald.test" {
		t.Fatalf("sample preview: %+v", s)
	}

	real, err := b.admin.PreviewFor(ctx, "accounts.password_reset", user42, nil)
	if err != nil || len(real) != 1 {
		t.Fatalf("preview for user 42: %+v %v", real, err)
	}
	r := real[0]
	if r.Recipient.Address != "ada@example.net" || r.Recipient.ID != "42" || r.Status != receipts.ReceiptScheduled ||
		!strings.Contains(r.Text, "reset-token-"+events.SampleMarker) || !strings.Contains(r.Text, "Ada") {
		t.Fatalf("preview for user 42: %+v", r)
	}
	// A secret passed in shows as a placeholder too, never in clear.
	withSecret, err := b.admin.PreviewFor(ctx, "accounts.password_reset", user42, map[string]any{"reset_token": events.NewSecret("s3cr3t-token-value")})
	if err != nil || len(withSecret) != 1 || strings.Contains(withSecret[0].Text+withSecret[0].HTML, "s3cr3t-token-value") ||
		!strings.Contains(withSecret[0].Text, "reset_token-"+events.SampleMarker) {
		t.Fatalf("preview with a secret: %+v %v", withSecret, err)
	}
	if _, err := b.admin.PreviewFor(ctx, "accounts.password_reset", []events.Ref{{Name: "user", Resource: "users", ID: "404"}}, nil); err == nil {
		t.Fatal("a preview for a missing record succeeded")
	}
	if _, err := b.admin.Preview(ctx, "nobody.registered_this"); !errors.Is(err, herald.ErrUnknownEvent) {
		t.Fatalf("preview of an unknown event: %v", err)
	}
	if n := b.mints.Load(); n != 0 {
		t.Fatalf("previews called SendVariables %d times", n)
	}
	if n := b.rows(t); n != 0 {
		t.Fatalf("previews wrote %d rows", n)
	}
	if got := len(b.smtp.Messages()); got != 0 {
		t.Fatalf("previews sent %d messages", got)
	}
}

// TestAdminTriggerSendsWhatThePreviewShowed: a manual trigger mints a real token once, sends to
// the recipients the preview for the same record showed, and returns receipt ids that exist in
// PostgreSQL.
func TestAdminTriggerSendsWhatThePreviewShowed(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t, []byte(strings.Repeat("r", 32)))
	ctx := t.Context()
	preview, err := b.admin.PreviewFor(ctx, "accounts.password_reset", user42, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := b.admin.Trigger(ctx, "accounts.password_reset", user42, nil, herald.Actor("admin:7"), herald.IdempotencyKey("manual-1"))
	if err != nil || res.DispatchID == "" || res.Duplicate || len(res.Receipts) != len(preview) {
		t.Fatalf("trigger: %+v %v (preview showed %d deliveries)", res, err, len(preview))
	}
	for i, r := range res.Receipts {
		if r.ChannelKey != preview[i].Channel.Key || r.RecipientID != preview[i].Recipient.Key() || r.Recipient.Address != preview[i].Recipient.Address {
			t.Errorf("delivery %d: triggered %s/%s <%s>, preview showed %s/%s <%s>", i, r.ChannelKey, r.RecipientID, r.Recipient.Address,
				preview[i].Channel.Key, preview[i].Recipient.Key(), preview[i].Recipient.Address)
		}
		stored, err := receipts.NewReader(b.pool).Receipt(ctx, r.ID)
		if err != nil || stored.DispatchID != res.DispatchID {
			t.Errorf("receipt %s in PostgreSQL: %+v %v", r.ID, stored, err)
		}
	}
	if res.Receipts[0].Status != receipts.ReceiptSent {
		t.Errorf("the single immediate delivery: %s, want sent in the call", res.Receipts[0].Status)
	}
	m := b.smtp.WaitFor(t, 1, 10*time.Second)[0]
	if events.ContainsSample(m.Text) || !strings.Contains(m.Text, "https://app.test/reset-password?token=") {
		t.Fatalf("the email sent: %q", m.Text)
	}
	if n := b.mints.Load(); n != 1 {
		t.Fatalf("SendVariables called %d times, want once", n)
	}
	d, err := receipts.NewReader(b.pool).Dispatch(ctx, res.DispatchID)
	if err != nil || d.Actor != "admin:7" || d.Status != receipts.DispatchFannedOut {
		t.Fatalf("the dispatch: %+v %v", d, err)
	}
	again, err := b.admin.Trigger(ctx, "accounts.password_reset", user42, nil, herald.IdempotencyKey("manual-1"))
	if err != nil || !again.Duplicate || again.DispatchID != res.DispatchID || len(again.Receipts) != 1 {
		t.Fatalf("the same key again: %+v %v", again, err)
	}
	if _, err := b.admin.Trigger(ctx, "accounts.password_reset", []events.Ref{{Name: "user", Resource: "users", ID: "43"}}, nil,
		herald.IdempotencyKey("manual-1")); !errors.Is(err, herald.ErrIdempotencyConflict) {
		t.Fatalf("the key with other arguments: %v", err)
	}
	if got := len(b.smtp.Messages()); got != 1 {
		t.Fatalf("%d messages sent, want 1", got)
	}
}

// TestAdminTriggerFailsWhenMintingFails: a token that cannot be minted fails the trigger with the
// reason, records the dispatch failed, and sends nothing (AshDispatch's action path carried on).
func TestAdminTriggerFailsWhenMintingFails(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t, nil) // no signing key: minting fails
	ctx := t.Context()
	res, err := b.admin.Trigger(ctx, "accounts.password_reset", user42, nil)
	if !errors.Is(err, herald.ErrDispatchFailed) || !strings.Contains(err.Error(), "token generation failed") || res.DispatchID == "" {
		t.Fatalf("trigger with minting failing: %+v %v", res, err)
	}
	d, err := receipts.NewReader(b.pool).Dispatch(ctx, res.DispatchID)
	if err != nil || d.Status != receipts.DispatchFailed {
		t.Fatalf("the dispatch: %+v %v", d, err)
	}
	if rs, _ := receipts.NewReader(b.pool).ReceiptsOf(ctx, res.DispatchID); len(rs) != 0 {
		t.Fatalf("receipts of a failed mint: %+v", rs)
	}
	if got := len(b.smtp.Messages()); got != 0 {
		t.Fatalf("%d messages sent", got)
	}
}

// TestAdminTriggerSaysWhenNothingWasSent: a trigger whose every delivery failed (here the
// sample-data guard refusing a real record that carries the marker) is an error with the reason,
// not a success; the dispatch and its receipts are still returned.
func TestAdminTriggerSaysWhenNothingWasSent(t *testing.T) {
	t.Parallel()
	b := setupAdmin(t, []byte(strings.Repeat("r", 32)))
	ctx := t.Context()
	if err := examples.SeedUser(ctx, b.pool, examples.User{ID: "44", Email: "eve@example.net", Name: "Eve " + events.SampleMarker}); err != nil {
		t.Fatal(err)
	}
	res, err := b.admin.Trigger(ctx, "accounts.password_reset", []events.Ref{{Name: "user", Resource: "users", ID: "44"}}, nil)
	if !errors.Is(err, herald.ErrDispatchFailed) || !strings.Contains(err.Error(), "sample") {
		t.Fatalf("trigger whose delivery failed: %v, want ErrDispatchFailed with the reason", err)
	}
	if res.DispatchID == "" || len(res.Receipts) != 1 || res.Receipts[0].Status != receipts.ReceiptFailed {
		t.Fatalf("result: %+v", res)
	}
	if got := len(b.smtp.Messages()); got != 0 {
		t.Fatalf("%d messages sent", got)
	}
}
