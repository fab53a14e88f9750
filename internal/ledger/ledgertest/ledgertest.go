// Package ledgertest holds test hooks on Herald's tables that production code never needs. It
// is for tests only: depguard and internal/archtest keep it out of production code.
package ledgertest

import (
	"context"

	"github.com/heraldhq/herald/internal/ledger"
)

// ExpireLease moves a receipt's lease into the past, as if its worker had crashed.
func ExpireLease(ctx context.Context, q ledger.Querier, receiptID string) error {
	_, err := q.Exec(ctx, `UPDATE herald.receipts SET lease_until = now() - interval '1 second' WHERE id = $1`, receiptID)
	return err
}
