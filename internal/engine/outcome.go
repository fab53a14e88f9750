package engine

import (
	"errors"
	"fmt"
	"time"

	"github.com/heraldhq/herald/channels"
	"github.com/heraldhq/herald/internal/ledger"
)

// sendOutcome maps the answer of one send to the receipt's next state. It is the one place
// this mapping lives (outcome_test.go walks it as a table):
//   - no error: sent, with the subject, Message-ID and the transport's reply;
//   - a permanent error: failed;
//   - rate limited with a Retry-After while attempts are left: retrying at Retry-After;
//   - anything else (temporary, unclassified): retryOutcome — retrying after the backoff, or
//     failed once the attempts are spent; a reply lost after the end of data marks it in doubt.
//
// reason is the error's text, already redacted.
func sendOutcome(attempt, maxAttempts int, msg channels.Message, res channels.Result, err error, reason string,
	now time.Time, backoff Backoff) ledger.Outcome {
	if err == nil {
		return ledger.Outcome{Status: ledger.ReceiptSent, Subject: msg.Subject, MessageID: msg.MessageID,
			ProviderResponse: res.ProviderResponse}
	}
	var ce *channels.Error
	errors.As(err, &ce)
	switch channels.ClassOf(err) {
	case channels.Permanent:
		return ledger.Outcome{Status: ledger.ReceiptFailed, Subject: msg.Subject, MessageID: msg.MessageID, LastError: reason}
	case channels.RateLimited:
		if ce != nil && ce.RetryAfter > 0 && attempt < maxAttempts {
			return ledger.Outcome{Status: ledger.ReceiptRetrying, DueAt: now.Add(ce.RetryAfter), LastError: reason}
		}
	}
	o := retryOutcome(attempt, maxAttempts, reason, now, backoff)
	o.Subject, o.MessageID = msg.Subject, msg.MessageID
	if ce != nil && ce.InDoubt {
		// The reply to the final "." was lost: the server may have queued the message. The retry
		// carries the same Message-ID; the receipt is flagged and counted (counted window (b)).
		o.InDoubt = true
		o.LastError = "in doubt (the server may have accepted the message): " + o.LastError
	}
	return o
}

// retryOutcome is a temporary failure: retrying after the backoff of this attempt, or failed
// once maxAttempts are spent.
func retryOutcome(attempt, maxAttempts int, reason string, now time.Time, backoff Backoff) ledger.Outcome {
	if attempt >= maxAttempts {
		return ledger.Outcome{Status: ledger.ReceiptFailed, LastError: fmt.Sprintf("%s (gave up after %d attempts)", reason, attempt)}
	}
	return ledger.Outcome{Status: ledger.ReceiptRetrying, DueAt: now.Add(backoff.Delay(attempt)), LastError: reason}
}
