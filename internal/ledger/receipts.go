package ledger

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Recipient is the stored form of a recipient.
type Recipient struct {
	Address string `json:"address,omitempty"`
	Name    string `json:"name,omitempty"`
	Locale  string `json:"locale,omitempty"`
}

// ReceiptRow is a row of herald.receipts: one delivery (dispatch, channel key, recipient id).
type ReceiptRow struct {
	ID               string
	DispatchID       string
	EventID          string
	ChannelKey       string
	Transport        string
	Audience         string
	RecipientID      string
	Recipient        Recipient
	Status           Status
	Attempt          int
	MaxAttempts      int
	DueAt            time.Time
	ExpiresAt        time.Time
	LeaseUntil       *time.Time
	InDoubt          bool
	LastError        string
	Subject          string
	MessageID        string
	ProviderResponse string
	CreatedAt        time.Time
	UpdatedAt        time.Time
	SentAt           *time.Time
	Queue            string // the queue whose promoter drives it ("": any, rows older than queues)
}

// NewReceipt is a delivery the fan-out creates.
type NewReceipt struct {
	ID          string
	DispatchID  string
	EventID     string
	ChannelKey  string
	Transport   string
	Audience    string
	RecipientID string
	Recipient   Recipient
	Status      Status // scheduled; sending (claimed, with ClaimFor); or skipped/failed with LastError
	LastError   string
	ClaimFor    time.Duration // with status sending: attempt 1 under this lease
	Enqueued    bool          // a task is being enqueued for it now (sets enqueued_at)
	MaxAttempts int
	DueAt       time.Time
	ExpiresAt   time.Time
	Queue       string // the dispatch's queue: only that fleet's promoter drives the delivery
}

const receiptColumns = `id, dispatch_id, event_id, channel_key, transport, audience, recipient_id, recipient, status,
	attempt, max_attempts, due_at, expires_at, lease_until, in_doubt, COALESCE(last_error, ''), COALESCE(subject, ''),
	COALESCE(message_id, ''), COALESCE(provider_response, ''), created_at, updated_at, sent_at, queue`

// lastScanner appends extra destinations after a scan function's own.
type lastScanner struct {
	row   pgx.Row
	extra []any
}

func (l lastScanner) Scan(dest ...any) error { return l.row.Scan(append(dest, l.extra...)...) }

// scanLast makes row scan its trailing columns into extra.
func scanLast(row pgx.Row, extra ...any) pgx.Row { return lastScanner{row, extra} }

func scanReceipt(row pgx.Row) (*ReceiptRow, error) {
	var r ReceiptRow
	var rec []byte
	var st string
	err := row.Scan(&r.ID, &r.DispatchID, &r.EventID, &r.ChannelKey, &r.Transport, &r.Audience, &r.RecipientID, &rec, &st,
		&r.Attempt, &r.MaxAttempts, &r.DueAt, &r.ExpiresAt, &r.LeaseUntil, &r.InDoubt, &r.LastError, &r.Subject,
		&r.MessageID, &r.ProviderResponse, &r.CreatedAt, &r.UpdatedAt, &r.SentAt, &r.Queue)
	if err != nil {
		return nil, err
	}
	r.Status = Status(st)
	if err := json.Unmarshal(rec, &r.Recipient); err != nil {
		return nil, fmt.Errorf("receipt %s: recipient: %w", r.ID, err)
	}
	return &r, nil
}

// InsertReceipts creates deliveries, one per (dispatch, channel key, recipient id); a delivery
// that already exists is left as it is (a re-run of the fan-out).
func (s *Store) InsertReceipts(ctx context.Context, rs []NewReceipt) error {
	if len(rs) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, r := range rs {
		rec, err := json.Marshal(r.Recipient)
		if err != nil {
			return err
		}
		st := r.Status
		if st == "" {
			st = ReceiptScheduled
		}
		attempt, lease := 0, time.Duration(0)
		if st == ReceiptSending {
			if r.ClaimFor <= 0 {
				return fmt.Errorf("insert receipt %s as sending: no lease (ClaimFor)", r.ID)
			}
			attempt, lease = 1, r.ClaimFor
		}
		b.Queue(`INSERT INTO herald.receipts (id, dispatch_id, event_id, channel_key, transport, audience, recipient_id,
			recipient, status, last_error, max_attempts, due_at, expires_at, attempt, lease_until, enqueued_at, queue)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULLIF($10, ''), $11, $12, $13, $14,
			        CASE WHEN $14 > 0 THEN now() + $15::interval END, CASE WHEN $16 THEN now() END, $17)
			ON CONFLICT (dispatch_id, channel_key, recipient_id) DO NOTHING`,
			r.ID, r.DispatchID, r.EventID, r.ChannelKey, r.Transport, r.Audience, r.RecipientID, rec, string(st),
			r.LastError, r.MaxAttempts, r.DueAt, r.ExpiresAt, attempt, lease, r.Enqueued, r.Queue)
	}
	if err := s.q.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("insert receipts of dispatch %s: %w", rs[0].DispatchID, err)
	}
	return nil
}

// GetReceipt returns one receipt.
func (s *Store) GetReceipt(ctx context.Context, id string) (*ReceiptRow, error) {
	r, err := scanReceipt(s.q.QueryRow(ctx, `SELECT `+receiptColumns+` FROM herald.receipts WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("receipt %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get receipt %s: %w", id, err)
	}
	return r, nil
}

// ListReceipts returns a dispatch's receipts, oldest first.
func (s *Store) ListReceipts(ctx context.Context, dispatchID string) ([]*ReceiptRow, error) {
	rows, err := s.q.Query(ctx, `SELECT `+receiptColumns+` FROM herald.receipts WHERE dispatch_id = $1
		ORDER BY due_at, channel_key, recipient_id`, dispatchID)
	if err != nil {
		return nil, fmt.Errorf("list receipts of %s: %w", dispatchID, err)
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (*ReceiptRow, error) { return scanReceipt(r) })
}

// MarkReceiptsEnqueued notes that tasks for ids were handed to the queue.
func (s *Store) MarkReceiptsEnqueued(ctx context.Context, ids []string) error {
	_, err := s.q.Exec(ctx, `UPDATE herald.receipts SET enqueued_at = now() WHERE id = ANY($1)`, ids)
	return err
}

// CountInDoubt returns how many receipts were reclaimed after a possible send.
func (s *Store) CountInDoubt(ctx context.Context) (int64, error) {
	var n int64
	err := s.q.QueryRow(ctx, `SELECT count(*) FROM herald.receipts WHERE in_doubt`).Scan(&n)
	return n, err
}

// CancelReceipts cancels the deliveries of a dispatch that have not started: scheduled or
// retrying ones (the transition table's predecessors of canceled). A delivery being sent
// finishes. It returns how many were canceled.
func (s *Store) CancelReceipts(ctx context.Context, dispatchID, reason string) (int64, error) {
	tag, err := s.q.Exec(ctx, `UPDATE herald.receipts SET status = 'canceled', last_error = NULLIF($2, ''), lease_until = NULL,
		updated_at = now() WHERE dispatch_id = $1 AND status = ANY($3)`, dispatchID, reason, From(KindReceipt, ReceiptCanceled))
	if err != nil {
		return 0, fmt.Errorf("cancel receipts of dispatch %s: %w", dispatchID, err)
	}
	return tag.RowsAffected(), nil
}
