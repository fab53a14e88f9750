package ledger_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/testenv"
)

// TestFindDispatchesAndReceipts checks the filters, the newest-first order and the limits.
func TestFindDispatchesAndReceipts(t *testing.T) {
	t.Parallel()
	pool := testenv.DB(t)
	s := ledger.New(pool)
	ctx := t.Context()
	base := time.Now().Add(-time.Hour)
	var ds []string // oldest first
	for i, ev := range []string{"a.b", "a.b", "c.d", "a.b"} {
		id := newID()
		res, err := s.InsertDispatch(ctx, ledger.NewDispatch{ID: id, EventID: ev, AcceptedAt: base.Add(time.Duration(i) * time.Minute)}, time.Hour)
		if err != nil || res.Outcome != ledger.Inserted {
			t.Fatalf("insert: %+v %v", res, err)
		}
		ds = append(ds, id)
	}
	fail := func(kind ledger.Kind, id string, via ledger.Status) {
		t.Helper()
		to := map[ledger.Kind]ledger.Status{ledger.KindDispatch: ledger.DispatchFailed, ledger.KindReceipt: ledger.ReceiptFailed}[kind]
		if err := s.SetStatus(ctx, kind, id, via, ""); err != nil {
			t.Fatal(err)
		}
		if err := s.SetStatus(ctx, kind, id, to, "broken"); err != nil {
			t.Fatal(err)
		}
	}
	fail(ledger.KindDispatch, ds[0], ledger.DispatchFanningOut)
	fail(ledger.KindDispatch, ds[2], ledger.DispatchFanningOut)

	var rs []string // oldest first: created one by one
	for _, key := range []string{"x", "y", "z"} {
		id := newID()
		due := time.Now()
		if err := s.InsertReceipts(ctx, []ledger.NewReceipt{{ID: id, DispatchID: ds[3], EventID: "a.b", ChannelKey: key, Transport: "email",
			RecipientID: "1", MaxAttempts: 3, DueAt: due, ExpiresAt: due.Add(time.Hour)}}); err != nil {
			t.Fatal(err)
		}
		rs = append(rs, id)
	}
	other := insertReceipt(t, s, ds[1], time.Now())
	fail(ledger.KindReceipt, rs[0], ledger.ReceiptSending)
	fail(ledger.KindReceipt, rs[2], ledger.ReceiptSending)
	fail(ledger.KindReceipt, other, ledger.ReceiptSending)

	dispatchIDs := func(f ledger.DispatchFilter) []string {
		t.Helper()
		got, err := s.FindDispatches(ctx, f)
		if err != nil {
			t.Fatalf("%+v: %v", f, err)
		}
		var ids []string
		for _, d := range got {
			ids = append(ids, d.ID)
		}
		return ids
	}
	receiptIDs := func(f ledger.ReceiptFilter) []string {
		t.Helper()
		got, err := s.FindReceipts(ctx, f)
		if err != nil {
			t.Fatalf("%+v: %v", f, err)
		}
		var ids []string
		for _, r := range got {
			ids = append(ids, r.ID)
		}
		return ids
	}
	for _, tc := range []struct {
		f    ledger.DispatchFilter
		want []string
	}{
		{ledger.DispatchFilter{}, []string{ds[3], ds[2], ds[1], ds[0]}},
		{ledger.DispatchFilter{Status: ledger.DispatchFailed}, []string{ds[2], ds[0]}},
		{ledger.DispatchFilter{EventID: "a.b"}, []string{ds[3], ds[1], ds[0]}},
		{ledger.DispatchFilter{EventID: "a.b", Status: ledger.DispatchFailed}, []string{ds[0]}},
		{ledger.DispatchFilter{EventID: "a.b", Limit: 2}, []string{ds[3], ds[1]}},
		{ledger.DispatchFilter{Status: ledger.DispatchCanceled}, nil},
	} {
		if got := dispatchIDs(tc.f); !slices.Equal(got, tc.want) {
			t.Errorf("FindDispatches(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}
	for _, tc := range []struct {
		f    ledger.ReceiptFilter
		want []string
	}{
		{ledger.ReceiptFilter{DispatchID: ds[3]}, []string{rs[2], rs[1], rs[0]}},
		{ledger.ReceiptFilter{Status: ledger.ReceiptFailed}, []string{other, rs[2], rs[0]}},
		{ledger.ReceiptFilter{Status: ledger.ReceiptFailed, DispatchID: ds[3]}, []string{rs[2], rs[0]}},
		{ledger.ReceiptFilter{Limit: 1}, []string{other}},
		{ledger.ReceiptFilter{Status: ledger.ReceiptSent}, nil},
	} {
		if got := receiptIDs(tc.f); !slices.Equal(got, tc.want) {
			t.Errorf("FindReceipts(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}
	for _, n := range []int{-1, ledger.MaxListLimit + 1} {
		if _, err := s.FindDispatches(ctx, ledger.DispatchFilter{Limit: n}); err == nil {
			t.Errorf("FindDispatches limit %d: no error", n)
		}
		if _, err := s.FindReceipts(ctx, ledger.ReceiptFilter{Limit: n}); err == nil {
			t.Errorf("FindReceipts limit %d: no error", n)
		}
	}
}

// recorder is a Querier that remembers the last query it ran, for EXPLAIN.
type recorder struct {
	ledger.Querier
	sql  string
	args []any
}

func (r *recorder) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	r.sql, r.args = sql, args
	return r.Querier.Query(ctx, sql, args...)
}

// TestFindQueriesStopAtTheLimit runs each listing on analysed tables of 20,000 dispatches and
// receipts, with the indexes the report proposes created in this test's own database, and
// checks that each reads a bounded number of buffers: the ORDER BY … LIMIT shape lets
// PostgreSQL stop early instead of sorting the table.
func TestFindQueriesStopAtTheLimit(t *testing.T) {
	t.Parallel()
	pool := testenv.DB(t)
	ctx := t.Context()
	for _, q := range []string{
		`INSERT INTO herald.dispatches (id, event_id, status, accepted_at)
		 SELECT gen_random_uuid(), CASE WHEN i % 100 = 0 THEN 'rare.event' ELSE 'a.b' END,
		        CASE WHEN i % 500 = 0 THEN 'failed' ELSE 'fanned_out' END, now() - i * interval '1 second'
		 FROM generate_series(1, 20000) i`,
		`INSERT INTO herald.receipts (id, dispatch_id, event_id, channel_key, transport, recipient_id, status, due_at, expires_at, created_at)
		 SELECT gen_random_uuid(), (SELECT id FROM herald.dispatches ORDER BY accepted_at DESC LIMIT 1), 'a.b', 'email', 'email', i::text,
		        CASE WHEN i % 500 = 0 THEN 'failed' ELSE 'sent' END, now(), now() + interval '1 hour', now() - i * interval '1 second'
		 FROM generate_series(1, 20000) i`,
		`ANALYZE herald.dispatches`, `ANALYZE herald.receipts`,
	} {
		if _, err := pool.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	rec := &recorder{Querier: pool}
	s := ledger.New(rec)
	for _, tc := range []struct {
		name string
		run  func() error
	}{
		{"dispatches", func() error { _, err := s.FindDispatches(ctx, ledger.DispatchFilter{}); return err }},
		{"failed dispatches", func() error {
			_, err := s.FindDispatches(ctx, ledger.DispatchFilter{Status: ledger.DispatchFailed})
			return err
		}},
		{"receipts", func() error { _, err := s.FindReceipts(ctx, ledger.ReceiptFilter{}); return err }},
		{"failed receipts", func() error {
			_, err := s.FindReceipts(ctx, ledger.ReceiptFilter{Status: ledger.ReceiptFailed})
			return err
		}},
	} {
		if err := tc.run(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var plan []struct {
			Plan map[string]any `json:"Plan"`
		}
		var raw []byte
		if err := pool.QueryRow(ctx, "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "+rec.sql, rec.args...).Scan(&raw); err != nil {
			t.Fatalf("%s: explain: %v", tc.name, err)
		}
		if err := json.Unmarshal(raw, &plan); err != nil || len(plan) != 1 {
			t.Fatalf("%s: plan %s: %v", tc.name, raw, err)
		}
		p := plan[0].Plan
		buffers := p["Shared Hit Blocks"].(float64) + p["Shared Read Blocks"].(float64)
		// A sequential scan of either table reads well over 150 blocks; the index path a few dozen.
		if buffers > 60 {
			t.Errorf("%s: %v buffers read, want a bounded index scan; plan:\n%s", tc.name, buffers, fmt.Sprint(string(raw)))
		}
	}
}
