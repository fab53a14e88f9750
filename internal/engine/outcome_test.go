package engine

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/heraldhq/herald/channels"
	"github.com/heraldhq/herald/internal/ledger"
)

// TestSendOutcome walks the mapping of a send's answer to the receipt's next state, with no
// service running.
func TestSendOutcome(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	backoff := Backoff{Min: 10 * time.Second, Max: time.Minute}
	msg := channels.Message{Subject: "Reset", MessageID: "<r1@herald.test>"}
	temp := &channels.Error{Class: channels.Temporary, Code: 451, Err: errors.New("try later")}
	for _, tc := range []struct {
		name              string
		attempt, max      int
		res               channels.Result
		err               error
		status            ledger.Status
		dueMin, dueMax    time.Duration // the due time's window after now (retrying)
		inDoubt           bool
		reason, response  string
		keepsSubjectAndID bool
	}{
		{name: "confirmed", attempt: 1, max: 3, res: channels.Result{ProviderResponse: "250 2.0.0 queued"},
			status: ledger.ReceiptSent, response: "250 2.0.0 queued", keepsSubjectAndID: true},
		{name: "permanent", attempt: 1, max: 3, err: &channels.Error{Class: channels.Permanent, Code: 550, Err: errors.New("no such user")},
			status: ledger.ReceiptFailed, reason: "the reason", keepsSubjectAndID: true},
		{name: "temporary, attempts left", attempt: 1, max: 3, err: temp,
			status: ledger.ReceiptRetrying, dueMin: 5 * time.Second, dueMax: 10 * time.Second, reason: "the reason", keepsSubjectAndID: true},
		{name: "temporary, third attempt backs off longer", attempt: 3, max: 5, err: temp,
			status: ledger.ReceiptRetrying, dueMin: 20 * time.Second, dueMax: 40 * time.Second, reason: "the reason", keepsSubjectAndID: true},
		{name: "temporary, attempts spent", attempt: 3, max: 3, err: temp,
			status: ledger.ReceiptFailed, reason: "the reason (gave up after 3 attempts)"},
		{name: "unclassified errors are temporary", attempt: 1, max: 3, err: errors.New("connection reset"),
			status: ledger.ReceiptRetrying, dueMin: 5 * time.Second, dueMax: 10 * time.Second, reason: "the reason", keepsSubjectAndID: true},
		{name: "rate limited with Retry-After", attempt: 1, max: 3, err: &channels.Error{Class: channels.RateLimited, RetryAfter: 90 * time.Second},
			status: ledger.ReceiptRetrying, dueMin: 90 * time.Second, dueMax: 90 * time.Second, reason: "the reason"},
		{name: "rate limited without Retry-After backs off", attempt: 1, max: 3, err: &channels.Error{Class: channels.RateLimited},
			status: ledger.ReceiptRetrying, dueMin: 5 * time.Second, dueMax: 10 * time.Second, reason: "the reason", keepsSubjectAndID: true},
		{name: "rate limited on the last attempt fails", attempt: 3, max: 3, err: &channels.Error{Class: channels.RateLimited, RetryAfter: time.Second},
			status: ledger.ReceiptFailed, reason: "the reason (gave up after 3 attempts)"},
		{name: "reply lost after data: in doubt, retried", attempt: 1, max: 3, err: &channels.Error{Class: channels.Temporary, InDoubt: true},
			status: ledger.ReceiptRetrying, dueMin: 5 * time.Second, dueMax: 10 * time.Second, inDoubt: true,
			reason: "in doubt (the server may have accepted the message): the reason", keepsSubjectAndID: true},
		{name: "reply lost on the last attempt: in doubt, failed", attempt: 2, max: 2, err: fmt.Errorf("wrapped: %w", &channels.Error{Class: channels.Temporary, InDoubt: true}),
			status: ledger.ReceiptFailed, inDoubt: true, reason: "in doubt (the server may have accepted the message): the reason (gave up after 2 attempts)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			reason := ""
			if tc.err != nil {
				reason = "the reason"
			}
			o := sendOutcome(tc.attempt, tc.max, msg, tc.res, tc.err, reason, now, backoff)
			if o.Status != tc.status || o.InDoubt != tc.inDoubt || o.LastError != tc.reason || o.ProviderResponse != tc.response {
				t.Fatalf("outcome %+v; want status %s, in doubt %v, reason %q, response %q", o, tc.status, tc.inDoubt, tc.reason, tc.response)
			}
			if tc.status == ledger.ReceiptRetrying {
				if wait := o.DueAt.Sub(now); wait < tc.dueMin || wait > tc.dueMax {
					t.Errorf("due in %v, want %v to %v", wait, tc.dueMin, tc.dueMax)
				}
			} else if !o.DueAt.IsZero() {
				t.Errorf("a final outcome with a due time %v", o.DueAt)
			}
			if got := o.Subject == msg.Subject && o.MessageID == msg.MessageID; got != tc.keepsSubjectAndID && tc.status != ledger.ReceiptFailed {
				t.Errorf("subject and Message-ID kept: %v, want %v", got, tc.keepsSubjectAndID)
			}
		})
	}
}
