package ledger

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// MentionsAddress, AddressPattern and RedactAddresses expose the erasure's address matching, in
// Go and in SQL, to the tests of package receipts_test.
func MentionsAddress(addrs []string, s string) bool {
	var t terms
	t.setAddresses(addrs)
	return t.mentions(s, false)
}

func AddressPattern(addrs []string) string {
	var t terms
	t.setAddresses(addrs)
	return t.addrPattern()
}

// RedactAddresses runs the SQL an erasure redacts a text column with over s.
func RedactAddresses(ctx context.Context, q Querier, addrs []string, s string) (string, error) {
	e := &eraser{}
	e.terms.setAddresses(addrs)
	var out string
	err := q.QueryRow(ctx, `SELECT `+redactSQL("@s::text"), e.args(pgx.NamedArgs{"s": s})).Scan(&out)
	return out, err
}
