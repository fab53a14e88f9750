package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// InsertNewReceipts creates deliveries in one statement, one per (dispatch, channel key,
// recipient id); a delivery that already exists (a resumed fan-out, a recipient listed twice) is
// left as it is. It returns the ids it inserted.
func (s *Store) InsertNewReceipts(ctx context.Context, rs []NewReceipt) ([]string, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	n := len(rs)
	var (
		ids, dispatchIDs, eventIDs, keys, transports, audiences, recipientIDs, statuses, lastErrors = make([]string, n),
			make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n),
			make([]string, n), make([]string, n)
		recs          = make([]string, n)
		queues        = make([]string, n)
		maxAttempts   = make([]int32, n)
		attempts      = make([]int32, n)
		leases        = make([]time.Duration, n)
		enqueued      = make([]bool, n)
		dues, expires = make([]time.Time, n), make([]time.Time, n)
	)
	for i, r := range rs {
		rec, err := json.Marshal(r.Recipient)
		if err != nil {
			return nil, err
		}
		st := r.Status
		if st == "" {
			st = ReceiptScheduled
		}
		if st == ReceiptSending {
			if r.ClaimFor <= 0 {
				return nil, fmt.Errorf("insert receipt %s as sending: no lease (ClaimFor)", r.ID)
			}
			attempts[i], leases[i] = 1, r.ClaimFor
		}
		ids[i], dispatchIDs[i], eventIDs[i], keys[i], transports[i], audiences[i], recipientIDs[i] =
			r.ID, r.DispatchID, r.EventID, r.ChannelKey, r.Transport, r.Audience, r.RecipientID
		recs[i], statuses[i], lastErrors[i], maxAttempts[i], enqueued[i], dues[i], expires[i] =
			string(rec), string(st), storable(r.LastError), int32(r.MaxAttempts), r.Enqueued, r.DueAt, r.ExpiresAt //nolint:gosec // attempts are small
		queues[i] = r.Queue
	}
	rows, err := s.q.Query(ctx, `INSERT INTO herald.receipts (id, dispatch_id, event_id, channel_key, transport, audience,
			recipient_id, recipient, status, last_error, max_attempts, due_at, expires_at, attempt, lease_until, enqueued_at,
			queue)
		SELECT u.id, u.dispatch_id, u.event_id, u.channel_key, u.transport, u.audience, u.recipient_id, u.recipient::jsonb,
		       u.status, NULLIF(u.last_error, ''), u.max_attempts, u.due_at, u.expires_at, u.attempt,
		       CASE WHEN u.attempt > 0 THEN now() + u.lease END, CASE WHEN u.enqueued THEN now() END, u.queue
		FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
		            $9::text[], $10::text[], $11::int[], $12::timestamptz[], $13::timestamptz[], $14::int[], $15::interval[],
		            $16::bool[], $17::text[])
		     AS u(id, dispatch_id, event_id, channel_key, transport, audience, recipient_id, recipient, status, last_error,
		          max_attempts, due_at, expires_at, attempt, lease, enqueued, queue)
		ON CONFLICT (dispatch_id, channel_key, recipient_id) DO NOTHING
		RETURNING id::text`,
		ids, dispatchIDs, eventIDs, keys, transports, audiences, recipientIDs, recs, statuses, lastErrors, maxAttempts,
		dues, expires, attempts, leases, enqueued, queues)
	if err != nil {
		return nil, fmt.Errorf("insert receipts of dispatch %s: %w", rs[0].DispatchID, err)
	}
	inserted, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("insert receipts of dispatch %s: %w", rs[0].DispatchID, err)
	}
	return inserted, nil
}

// SaveFanoutProgress records, fenced on the fan-out attempt, where the fan-out has got to, and
// extends its lease: a long fan-out that makes progress keeps its claim.
func (s *Store) SaveFanoutProgress(ctx context.Context, id string, attempt int, progress json.RawMessage, lease time.Duration) error {
	tag, err := s.q.Exec(ctx, `UPDATE herald.dispatches SET fanout_progress = $3, lease_until = now() + $4::interval,
		updated_at = now() WHERE id = $1 AND attempt = $2 AND status = 'fanning_out'`, id, attempt, progress, lease)
	if err != nil {
		return fmt.Errorf("save fan-out progress of %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("save fan-out progress of %s attempt %d: %w", id, attempt, ErrTransition)
	}
	return nil
}

// YieldDispatch hands a long fan-out back after a time slice: retrying, due now, and its attempt
// given back (the next claim takes the same attempt number again, so slices do not use up
// attempts). Fenced on the attempt.
func (s *Store) YieldDispatch(ctx context.Context, id string, attempt int) error {
	tag, err := s.q.Exec(ctx, `UPDATE herald.dispatches SET status = 'retrying', attempt = attempt - 1, due_at = now(),
		lease_until = NULL, enqueued_at = now(), updated_at = now()
		WHERE id = $1 AND attempt = $2 AND status = 'fanning_out'`, id, attempt)
	if err != nil {
		return fmt.Errorf("yield dispatch %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("yield dispatch %s attempt %d: %w", id, attempt, ErrTransition)
	}
	return nil
}
