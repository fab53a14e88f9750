package ledger

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// DefaultListLimit is how many rows FindDispatches and FindReceipts return when no limit is given.
const DefaultListLimit = 20

// MaxListLimit is the most rows one call of FindDispatches or FindReceipts returns.
const MaxListLimit = 10000

// DispatchFilter selects dispatches for FindDispatches. Zero fields match everything.
type DispatchFilter struct {
	Status  Status // only dispatches in this state
	EventID string // only dispatches of this event
	// Limit is how many dispatches, newest first. Defaults to DefaultListLimit; at most
	// MaxListLimit.
	Limit int
}

// ReceiptFilter selects receipts for FindReceipts. Zero fields match everything.
type ReceiptFilter struct {
	Status     Status // only receipts in this state
	DispatchID string // only the receipts of this dispatch
	// Limit is how many receipts, newest first. Defaults to DefaultListLimit; at most
	// MaxListLimit.
	Limit int
}

// listLimit applies the documented default and bound.
func listLimit(n int) (int, error) {
	switch {
	case n == 0:
		return DefaultListLimit, nil
	case n < 0 || n > MaxListLimit:
		return 0, fmt.Errorf("limit %d: want 1 to %d", n, MaxListLimit)
	}
	return n, nil
}

// where builds "WHERE a = $1 AND b = $2" from the non-empty conditions, in order.
func where(conds [][2]string) (string, []any) {
	var parts []string
	var args []any
	for _, c := range conds {
		if c[1] == "" {
			continue
		}
		args = append(args, c[1])
		parts = append(parts, fmt.Sprintf("%s = $%d", c[0], len(args)))
	}
	if len(parts) == 0 {
		return "", nil
	}
	return " WHERE " + strings.Join(parts, " AND "), args
}

// FindDispatches returns the dispatches f selects, newest (last accepted) first.
//
// The query is one ORDER BY accepted_at DESC with a LIMIT, so an index on accepted_at (or on
// (status, accepted_at), (event_id, accepted_at)) lets PostgreSQL stop after Limit rows.
func (s *Store) FindDispatches(ctx context.Context, f DispatchFilter) ([]*DispatchRow, error) {
	limit, err := listLimit(f.Limit)
	if err != nil {
		return nil, fmt.Errorf("list dispatches: %w", err)
	}
	cond, args := where([][2]string{{"status", string(f.Status)}, {"event_id", f.EventID}})
	args = append(args, limit)
	rows, err := s.q.Query(ctx, `SELECT `+dispatchColumns+` FROM herald.dispatches`+cond+
		fmt.Sprintf(` ORDER BY accepted_at DESC, id DESC LIMIT $%d`, len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("list dispatches: %w", err)
	}
	ds, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*DispatchRow, error) { return scanDispatch(r) })
	if err != nil {
		return nil, fmt.Errorf("list dispatches: %w", err)
	}
	return ds, nil
}

// FindReceipts returns the receipts f selects, newest (last created) first.
//
// The query is one ORDER BY created_at DESC with a LIMIT, so an index on created_at (or on
// (status, created_at), (dispatch_id, created_at)) lets PostgreSQL stop after Limit rows.
func (s *Store) FindReceipts(ctx context.Context, f ReceiptFilter) ([]*ReceiptRow, error) {
	limit, err := listLimit(f.Limit)
	if err != nil {
		return nil, fmt.Errorf("list receipts: %w", err)
	}
	cond, args := where([][2]string{{"status", string(f.Status)}, {"dispatch_id", f.DispatchID}})
	args = append(args, limit)
	rows, err := s.q.Query(ctx, `SELECT `+receiptColumns+` FROM herald.receipts`+cond+
		fmt.Sprintf(` ORDER BY created_at DESC, id DESC LIMIT $%d`, len(args)), args...)
	if err != nil {
		return nil, fmt.Errorf("list receipts: %w", err)
	}
	rs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*ReceiptRow, error) { return scanReceipt(r) })
	if err != nil {
		return nil, fmt.Errorf("list receipts: %w", err)
	}
	return rs, nil
}
