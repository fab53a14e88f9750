package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/heraldhq/herald/internal/ledger"
)

// receiptsCmd is the `enqueue receipts` group.
type receiptsCmd struct {
	Show   receiptShowCmd   `cmd:"" help:"Show one receipt."`
	List   receiptListCmd   `cmd:"" help:"List receipts, newest first (--status failed: deliveries that failed, with the reason)."`
	Cancel receiptCancelCmd `cmd:"" help:"Cancel one delivery that has not started."`
}

// receiptShowCmd is `enqueue receipts show ID`.
type receiptShowCmd struct {
	ID string `arg:"" help:"Receipt id."`
}

// receiptListCmd is `enqueue receipts list`.
type receiptListCmd struct {
	Status   string `help:"Only receipts in this state: ${receipt_states}." placeholder:"STATE"`
	Dispatch string `help:"Only the receipts of this dispatch id." placeholder:"ID"`
	Limit    int    `help:"How many, newest first (1 to ${max_limit})." default:"20"`
}

// receiptCancelCmd is `enqueue receipts cancel ID`.
type receiptCancelCmd struct {
	ID     string `arg:"" help:"Receipt id."`
	Reason string `help:"Why, recorded on the receipt." default:"canceled by an operator"`
}

// Run shows one receipt.
func (c *receiptShowCmd) Run(ctx context.Context, e *env) error {
	id, err := parseID("receipt", c.ID)
	if err != nil {
		return err
	}
	store, done, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	r, err := store.GetReceipt(ctx, id)
	if err != nil {
		return err
	}
	v := viewReceipt(r)
	return e.print(v, func(w io.Writer) {
		fmt.Fprintf(w, "receipt %s\n  dispatch    %s\n  event       %s\n  channel     %s (%s)\n  recipient   %s (%s)\n  status      %s (attempt %d of %d)\n  due         %s\n",
			r.ID, r.DispatchID, r.EventID, r.ChannelKey, r.Transport, r.Recipient.Address, r.RecipientID, r.Status, r.Attempt, r.MaxAttempts,
			r.DueAt.Local().Format(time.DateTime))
		if r.SentAt != nil {
			fmt.Fprintf(w, "  sent        %s\n", r.SentAt.Local().Format(time.DateTime))
		}
		for _, kv := range [][2]string{{"subject", r.Subject}, {"message-id", r.MessageID}, {"response", r.ProviderResponse}, {"last error", r.LastError}} {
			if kv[1] != "" {
				fmt.Fprintf(w, "  %-11s %s\n", kv[0], kv[1])
			}
		}
		if r.InDoubt {
			fmt.Fprintln(w, "  in doubt    yes: reclaimed after a worker stopped mid-send; a duplicate is possible (same Message-ID)")
		}
	})
}

// Run lists the receipts that match the flags, newest first.
func (c *receiptListCmd) Run(ctx context.Context, e *env) error {
	st, err := parseStatus(ledger.KindReceipt, c.Status)
	if err != nil {
		return err
	}
	limit, err := parseLimit(c.Limit)
	if err != nil {
		return err
	}
	dispatchID := ""
	if c.Dispatch != "" {
		if dispatchID, err = parseID("dispatch", c.Dispatch); err != nil {
			return fmt.Errorf("--dispatch: %w", err)
		}
	}
	store, done, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	rs, err := store.FindReceipts(ctx, ledger.ReceiptFilter{Status: st, DispatchID: dispatchID, Limit: limit})
	if err != nil {
		return err
	}
	return printList(e, rs, viewReceipt, "no receipts", func(w io.Writer, r *ledger.ReceiptRow) {
		doubt := ""
		if r.InDoubt {
			doubt = "  (in doubt)"
		}
		fmt.Fprintf(w, "%s  %s  %-9s %-8s %-24s attempt %d%s%s\n", r.CreatedAt.Local().Format(time.DateTime), r.ID, r.Status,
			r.ChannelKey, r.Recipient.Address, r.Attempt, reason(r.LastError), doubt)
	})
}

// Run cancels one delivery that is scheduled or retrying.
func (c *receiptCancelCmd) Run(ctx context.Context, e *env) error {
	id, err := parseID("receipt", c.ID)
	if err != nil {
		return err
	}
	store, done, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	if err := store.SetStatus(ctx, ledger.KindReceipt, id, ledger.ReceiptCanceled, c.Reason); err != nil {
		if errors.Is(err, ledger.ErrTransition) {
			st, _ := store.Status(ctx, ledger.KindReceipt, id)
			if st == "" {
				return fmt.Errorf("receipt %s: %w", id, ledger.ErrNotFound)
			}
			return fmt.Errorf("receipt %s is %s: only scheduled or retrying deliveries can be canceled", id, st)
		}
		return err
	}
	return e.print(map[string]string{"id": id, "status": "canceled"}, func(w io.Writer) {
		fmt.Fprintf(w, "receipt %s: canceled\n", id)
	})
}
