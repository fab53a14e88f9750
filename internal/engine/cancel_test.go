package engine_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/examples"
	"github.com/heraldhq/herald/internal/engine"
	"github.com/heraldhq/herald/internal/ledger"
)

// gated is the password reset event whose Recipients waits for a signal: a fan-out held open.
type gated struct {
	examples.PasswordReset
	entered chan struct{}
	release chan struct{}
}

func (g gated) Recipients(ctx context.Context, d *events.Dispatch, ch events.Channel) ([]events.Recipient, error) {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-g.release
	return g.PasswordReset.Recipients(ctx, d, ch)
}

// TestCancelAtEveryStage: a dispatch can be canceled before any worker saw it (a tombstone its
// first sight respects), while it waits to retry, and in the middle of its fan-out; in every
// case nothing is sent (issue 6, item 9).
func TestCancelAtEveryStage(t *testing.T) {
	t.Parallel()
	t.Run("still in Redis", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := b.dispatch(t, "accounts.password_reset")
		c, err := b.store.CancelDispatch(t.Context(), id, "changed my mind", true)
		if err != nil || !c.Tombstone {
			t.Fatalf("cancel: %+v %v", c, err)
		}
		b.start()
		b.waitIdle()
		if st := b.dispatchStatus(id); st != ledger.DispatchCanceled {
			t.Fatalf("status %s", st)
		}
		if n := len(b.receipts(id)) + len(b.smtp.Messages()); n != 0 {
			t.Fatalf("%d receipts and emails after canceling before first sight", n)
		}
	})
	t.Run("unknown id without tombstone", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		if _, err := b.store.CancelDispatch(t.Context(), "0193a0c4-0000-7000-8000-0000000000aa", "", false); err == nil {
			t.Fatal("canceling an unknown id without a tombstone succeeded")
		}
	})
	t.Run("retrying", func(t *testing.T) {
		t.Parallel()
		b := setup(t, withConfig(func(c *engine.Config) { c.UnknownEventFor = time.Hour })).start()
		id, err := dispatchID(b.client.Dispatch(t.Context(), "nobody.serves_this", user("42"), nil))
		if err != nil {
			t.Fatal(err)
		}
		d := b.waitDispatch(id, ledger.DispatchRetrying, 10*time.Second)
		if !strings.Contains(d.LastError, `queue "`+b.queue+`"`) || !strings.Contains(d.LastError, "accounts.password_reset") {
			t.Fatalf("the unknown-event reason names neither the queue nor the events served: %q", d.LastError)
		}
		c, err := b.store.CancelDispatch(t.Context(), id, "", false)
		if err != nil || c.Was != ledger.DispatchRetrying || !c.Dispatch {
			t.Fatalf("cancel: %+v %v", c, err)
		}
		b.waitIdle()
		if d, _ := b.store.GetDispatch(t.Context(), id); d.Status != ledger.DispatchCanceled {
			t.Fatalf("status %s after cancel", d.Status)
		}
	})
	t.Run("during the fan-out", func(t *testing.T) {
		t.Parallel()
		g := gated{entered: make(chan struct{}, 1), release: make(chan struct{})}
		b := setup(t)
		g.PasswordReset = examples.PasswordReset{Tokens: b.tokens, BaseURL: "https://app.test"}
		b.reg = events.NewRegistry()
		b.reg.MustRegister(g)
		_ = b.reg.RegisterLoader("users", examples.UsersLoader{DB: b.pool})
		b.rebuild(t)
		b.start()
		id := b.dispatch(t, "accounts.password_reset")
		select {
		case <-g.entered:
		case <-time.After(10 * time.Second):
			t.Fatal("the fan-out never started")
		}
		c, err := b.store.CancelDispatch(t.Context(), id, "", false)
		if err != nil || c.Was != ledger.DispatchFanningOut {
			t.Fatalf("cancel: %+v %v", c, err)
		}
		close(g.release)
		b.waitIdle()
		if st := b.dispatchStatus(id); st != ledger.DispatchCanceled {
			t.Fatalf("status %s", st)
		}
		if n := len(b.receipts(id)) + len(b.smtp.Messages()); n != 0 {
			t.Fatalf("%d receipts and emails after canceling mid fan-out", n)
		}
	})
}
