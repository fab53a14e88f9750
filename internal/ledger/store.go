package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Querier is what the store needs: a *pgxpool.Pool, a *pgx.Conn or a pgx.Tx.
type Querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Store reads and writes Herald's tables through one Querier.
type Store struct{ q Querier }

// New returns a store on q.
func New(q Querier) *Store { return &Store{q: q} }

// ErrNotFound is returned when a dispatch or receipt does not exist.
var ErrNotFound = errors.New("not found")

// ErrTransition is returned when a guarded UPDATE found the row in a state that does not allow
// the change (or fenced on an attempt that is no longer current).
var ErrTransition = errors.New("state transition not allowed")

// SetStatus moves a row to `to` if the transition table allows it from its current state,
// recording lastError. It is the admin path (cancel, manual fail) and what the transition test
// walks; workers use the claim and fenced updates, which take their guards from the same table.
func (s *Store) SetStatus(ctx context.Context, kind Kind, id string, to Status, lastError string) error {
	table := "herald.dispatches"
	if kind == KindReceipt {
		table = "herald.receipts"
	}
	tag, err := s.q.Exec(ctx, `UPDATE `+table+` SET status = $2, last_error = NULLIF($3, ''), updated_at = now()
		WHERE id = $1 AND status = ANY($4)`, id, string(to), lastError, From(kind, to))
	if err != nil {
		return fmt.Errorf("set %s %s to %s: %w", kind, id, to, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("set %s %s to %s: %w", kind, id, to, ErrTransition)
	}
	return nil
}

// Status returns the current status of a row.
func (s *Store) Status(ctx context.Context, kind Kind, id string) (Status, error) {
	table := "herald.dispatches"
	if kind == KindReceipt {
		table = "herald.receipts"
	}
	var st string
	err := s.q.QueryRow(ctx, `SELECT status FROM `+table+` WHERE id = $1`, id).Scan(&st)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("%s %s: %w", kind, id, ErrNotFound)
	}
	return Status(st), err
}

// DueTask is a row the promoter (re)enqueues.
type DueTask struct {
	ID      string
	Attempt int
	DueAt   time.Time
}

func collectDue(rows pgx.Rows, err error) ([]DueTask, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (DueTask, error) {
		var d DueTask
		err := r.Scan(&d.ID, &d.Attempt, &d.DueAt)
		return d, err
	})
}

// storable makes text PostgreSQL can store: invalid UTF-8 becomes U+FFFD and NUL characters
// are dropped. Text that describes an outcome (a relay's reply, a subject, an error) must never
// keep the outcome itself from being recorded.
func storable(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}
