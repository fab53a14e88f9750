package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"
)

// mailboxCmd is the `enqueue mailbox` group.
type mailboxCmd struct {
	List mailboxListCmd `cmd:"" help:"List captured mail, newest first."`
	Show mailboxShowCmd `cmd:"" help:"Show one captured mail with its text and HTML."`
}

// mailboxListCmd is `enqueue mailbox list`.
type mailboxListCmd struct {
	Limit int `help:"How many." default:"20"`
}

// mailboxShowCmd is `enqueue mailbox show ID`.
type mailboxShowCmd struct {
	ID int64 `arg:"" help:"Mail id (from mailbox list)."`
}

// Run lists captured mail, newest first.
func (c *mailboxListCmd) Run(ctx context.Context, e *env) error {
	store, done, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	ms, err := store.ListMail(ctx, c.Limit)
	if err != nil {
		return err
	}
	type row struct {
		ID        int64     `json:"id"`
		To        string    `json:"to"`
		Subject   string    `json:"subject"`
		ReceiptID string    `json:"receipt_id"`
		At        time.Time `json:"created_at"`
	}
	rows := []row{}
	for _, m := range ms {
		rows = append(rows, row{m.ID, m.To, m.Subject, m.ReceiptID, m.CreatedAt})
	}
	return e.print(rows, func(w io.Writer) {
		if len(rows) == 0 {
			fmt.Fprintln(w, "the development mailbox is empty")
			return
		}
		for _, r := range rows {
			fmt.Fprintf(w, "%-5s %s  %-30s %s\n", strconv.FormatInt(r.ID, 10), r.At.Local().Format(time.TimeOnly), r.To, r.Subject)
		}
	})
}

// Run shows one captured mail with its text and HTML.
func (c *mailboxShowCmd) Run(ctx context.Context, e *env) error {
	store, done, err := e.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	m, err := store.GetMail(ctx, c.ID)
	if err != nil {
		return err
	}
	v := struct {
		ID        int64     `json:"id"`
		ReceiptID string    `json:"receipt_id"`
		MessageID string    `json:"message_id"`
		From      string    `json:"from"`
		To        string    `json:"to"`
		Subject   string    `json:"subject"`
		Text      string    `json:"text"`
		HTML      string    `json:"html"`
		At        time.Time `json:"created_at"`
	}{m.ID, m.ReceiptID, m.MessageID, m.From, m.To, m.Subject, m.Text, m.HTML, m.CreatedAt}
	return e.print(v, func(w io.Writer) {
		fmt.Fprintf(w, "From:       %s\nTo:         %s\nSubject:    %s\nMessage-ID: %s\nReceipt:    %s\n\n%s\n", m.From, m.To, m.Subject, m.MessageID, m.ReceiptID, m.Text)
		if m.HTML != "" {
			fmt.Fprintf(w, "\n--- HTML (%d bytes) ---\n%s\n", len(m.HTML), m.HTML)
		}
	})
}
