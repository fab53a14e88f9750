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

// Claim is a successful receipt claim.
type Claim struct {
	Receipt *ReceiptRow // after the claim: status sending, attempt bumped
	// Reclaimed says this claim took over the expired lease of an attempt that was sending: that
	// attempt may have reached the transport, so this one is in doubt. It is true only for the
	// claim that took the lease over, unlike the sticky Receipt.InDoubt.
	Reclaimed bool
}

// ClaimReceipt takes the delivery lease: status → sending, attempt+1, lease_until = now+lease.
// A claim over an expired sending lease flags the receipt in_doubt. When no row is claimed the
// outcome says why (missing, not yet due, busy or final).
func (s *Store) ClaimReceipt(ctx context.Context, id string, lease time.Duration) (*Claim, ClaimOutcome, error) {
	var reclaimed bool
	r, err := scanReceipt(scanLast(s.q.QueryRow(ctx, `UPDATE herald.receipts r
		SET status = 'sending', attempt = attempt + 1, lease_until = now() + $2::interval,
		    in_doubt = in_doubt OR p.prev = 'sending', updated_at = now()
		FROM (SELECT id AS pid, status AS prev FROM herald.receipts WHERE id = $1 FOR UPDATE) p
		WHERE r.id = p.pid AND due_at <= now()
		  AND (status = ANY($3) AND status <> 'sending' OR (status = 'sending' AND lease_until < now()))
		RETURNING `+receiptColumns+`, p.prev = 'sending'`, id, lease, From(KindReceipt, ReceiptSending)), &reclaimed))
	if err == nil {
		return &Claim{Receipt: r, Reclaimed: reclaimed}, Claimed, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return nil, 0, fmt.Errorf("claim receipt %s: %w", id, err)
	}
	out, err := s.whyNoClaim(ctx, "herald.receipts", id, []string{string(ReceiptScheduled), string(ReceiptRetrying)})
	return nil, out, err
}

// Outcome is the result of one delivery attempt.
type Outcome struct {
	Status           Status    // sent, retrying, failed, expired or skipped
	DueAt            time.Time // retrying: when to try again
	LastError        string
	Subject          string
	MessageID        string
	ProviderResponse string
	// InDoubt flags the receipt in doubt: the transport may have accepted the message although it
	// did not confirm it (a reply lost after the final "."). It is sticky.
	InDoubt bool
}

// Finished is what FinishReceipt recorded.
type Finished struct {
	// Overtaken: a confirmed send landed on a receipt that a reclaim had moved to a later attempt
	// (a PostgreSQL outage longer than the lease). That attempt may have sent too: the receipt is
	// flagged in doubt — counted window (c) of DESIGN.md.
	Overtaken bool
}

// FinishReceipt records an attempt's outcome, fenced on (id, attempt, sending): a stale worker
// whose lease was taken over gets ErrTransition and changes nothing — except for sent. A send the
// transport confirmed beats a lease: it lands on any non-final state of the receipt, even after a
// reclaim moved it to a later attempt (DESIGN.md, "A confirmed outcome beats a lease").
func (s *Store) FinishReceipt(ctx context.Context, id string, attempt int, o Outcome) (Finished, error) {
	var due *time.Time
	if !o.DueAt.IsZero() {
		due = &o.DueAt
	}
	var overtaken bool
	err := s.q.QueryRow(ctx, `UPDATE herald.receipts
		SET status = $3, due_at = COALESCE($4, due_at), last_error = NULLIF($5, ''),
		    subject = COALESCE(NULLIF($6, ''), subject), message_id = COALESCE(NULLIF($7, ''), message_id),
		    provider_response = COALESCE(NULLIF($8, ''), provider_response),
		    lease_until = NULL, enqueued_at = NULL, updated_at = now(), in_doubt = in_doubt OR $10 OR attempt <> $2,
		    sent_at = CASE WHEN $3 = 'sent' THEN now() ELSE sent_at END
		WHERE id = $1 AND (attempt = $2 AND status = 'sending' AND 'sending' = ANY($9)
		                   OR $3 = 'sent' AND NOT (status = ANY($11)))
		RETURNING attempt <> $2`,
		id, attempt, string(o.Status), due, storable(o.LastError), storable(o.Subject), storable(o.MessageID),
		storable(o.ProviderResponse), From(KindReceipt, o.Status), o.InDoubt, finalStrings(KindReceipt)).Scan(&overtaken)
	if errors.Is(err, pgx.ErrNoRows) {
		return Finished{}, fmt.Errorf("finish receipt %s attempt %d as %s: %w", id, attempt, o.Status, ErrTransition)
	}
	if err != nil {
		return Finished{}, fmt.Errorf("finish receipt %s as %s: %w", id, o.Status, err)
	}
	return Finished{Overtaken: overtaken}, nil
}

// StillClaimed reports whether the receipt is still sending under attempt: a reclaimer re-reads
// the row just before it sends, so that an earlier attempt whose confirmed outcome landed in the
// meantime is not sent again.
func (s *Store) StillClaimed(ctx context.Context, id string, attempt int) (bool, error) {
	var ok bool
	err := s.q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM herald.receipts WHERE id = $1 AND attempt = $2 AND status = 'sending')`,
		id, attempt).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("re-read receipt %s: %w", id, err)
	}
	return ok, nil
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

// ExpireLeaseForTest moves a receipt's lease into the past, as if its worker had crashed.
// For tests and fault drills only.
func (s *Store) ExpireLeaseForTest(ctx context.Context, id string) error {
	_, err := s.q.Exec(ctx, `UPDATE herald.receipts SET lease_until = now() - interval '1 second' WHERE id = $1`, id)
	return err
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
