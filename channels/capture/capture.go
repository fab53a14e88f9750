// Package capture is the development mailbox transport (HERALD_SMTP_URL=capture://): instead of
// sending, it stores each message in herald.dev_mailbox, where `enqueue mailbox` reads it. It
// is for development only and is used only when named; it never stands in for a missing SMTP
// setting.
package capture

import (
	"context"
	"fmt"

	"github.com/heraldhq/herald/channels"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/receipts"
)

// Sender stores messages in the development mailbox.
type Sender struct{ store *ledger.Store }

var _ channels.Sender = (*Sender)(nil)

// New returns a Sender writing to the mailbox table of the herald schema through db.
func New(db receipts.Querier) *Sender { return &Sender{store: ledger.New(db)} }

// Send stores m.
func (s *Sender) Send(ctx context.Context, m channels.Message) (channels.Result, error) {
	to := m.To
	if m.ToName != "" {
		to = fmt.Sprintf("%s <%s>", m.ToName, m.To)
	}
	from := m.From
	if m.FromName != "" {
		from = fmt.Sprintf("%s <%s>", m.FromName, m.From)
	}
	id, err := s.store.InsertMail(ctx, ledger.Mail{ReceiptID: m.ReceiptID, MessageID: m.MessageID, From: from, To: to,
		Subject: m.Subject, HTML: m.HTML, Text: m.Text})
	if err != nil {
		return channels.Result{}, &channels.Error{Class: channels.Temporary, Err: err}
	}
	return channels.Result{ProviderResponse: fmt.Sprintf("captured in the development mailbox as mail %d", id)}, nil
}

func (s *Sender) String() string { return "capture://" }
