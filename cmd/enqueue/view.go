package main

import (
	"fmt"
	"io"
	"time"

	"github.com/heraldhq/herald/internal/ledger"
)

// receiptView is a receipt as the CLI prints it in JSON.
type receiptView struct {
	ID          string     `json:"id"`
	Channel     string     `json:"channel"`
	Transport   string     `json:"transport"`
	Recipient   string     `json:"recipient"`
	Status      string     `json:"status"`
	Attempt     int        `json:"attempt"`
	DueAt       time.Time  `json:"due_at"`
	SentAt      *time.Time `json:"sent_at,omitempty"`
	InDoubt     bool       `json:"in_doubt,omitempty"`
	MessageID   string     `json:"message_id,omitempty"`
	Subject     string     `json:"subject,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	Response    string     `json:"provider_response,omitempty"`
	DispatchID  string     `json:"dispatch_id"`
	RecipientID string     `json:"recipient_id"`
}

// viewReceipt returns r as the CLI prints it in JSON.
func viewReceipt(r *ledger.ReceiptRow) receiptView {
	return receiptView{ID: r.ID, Channel: r.ChannelKey, Transport: r.Transport, Recipient: r.Recipient.Address, Status: string(r.Status),
		Attempt: r.Attempt, DueAt: r.DueAt, SentAt: r.SentAt, InDoubt: r.InDoubt, MessageID: r.MessageID, Subject: r.Subject,
		LastError: r.LastError, Response: r.ProviderResponse, DispatchID: r.DispatchID, RecipientID: r.RecipientID}
}

// dispatchView is a dispatch as the CLI prints it in JSON.
type dispatchView struct {
	ID          string     `json:"id"`
	State       string     `json:"status"`
	Event       string     `json:"event_id,omitempty"`
	Attempt     int        `json:"attempt"`
	AcceptedAt  *time.Time `json:"accepted_at,omitempty"`
	UpdatedAt   *time.Time `json:"updated_at,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	DuplicateOf string     `json:"duplicate_of,omitempty"`
}

// viewDispatch returns d as the CLI prints it in JSON.
func viewDispatch(d *ledger.DispatchRow) dispatchView {
	return dispatchView{ID: d.ID, State: string(d.Status), Event: d.EventID, Attempt: d.Attempt, AcceptedAt: &d.AcceptedAt,
		UpdatedAt: &d.UpdatedAt, LastError: d.LastError, DuplicateOf: d.DuplicateOf}
}

// printList prints rows as JSON views, or a line each (none when there are none).
func printList[R, V any](e *env, rows []R, view func(R) V, none string, line func(io.Writer, R)) error {
	views := make([]V, 0, len(rows))
	for _, r := range rows {
		views = append(views, view(r))
	}
	return e.print(views, func(w io.Writer) {
		if len(rows) == 0 {
			fmt.Fprintln(w, none)
			return
		}
		for _, r := range rows {
			line(w, r)
		}
	})
}

// reason formats a last error for the end of a text line.
func reason(s string) string {
	if s == "" {
		return ""
	}
	return "  — " + s
}

// plural returns one when n is 1, else many: the ending of a counted word.
func plural(n int64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
