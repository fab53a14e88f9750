package ledger_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/testenv"
)

// retentionCase is one dispatch of the retention table and its receipt (none when receipt is "").
type retentionCase struct {
	dispatch, receipt             string // ids
	dStatus, rStatus              ledger.Status
	dOld, rOld                    bool
	queue                         string
	wantReceiptGone, wantDispGone bool
}

func (c retentionCase) String() string {
	age := func(old bool) string { return map[bool]string{true: "old", false: "new"}[old] }
	if c.receipt == "" {
		return fmt.Sprintf("%s %s dispatch of queue %q, no receipt", age(c.dOld), c.dStatus, c.queue)
	}
	return fmt.Sprintf("%s %s dispatch of queue %q with a %s %s receipt", age(c.dOld), c.dStatus, c.queue, age(c.rOld), c.rStatus)
}

const (
	retentionAge = 5 * 24 * time.Hour
	oldAge       = 10 * 24 * time.Hour // last changed before the retention
	newAge       = 24 * time.Hour      // within it
)

// seedRetention writes every combination of dispatch state × receipt state (or none) × age of
// each × queue ("mine", "", "theirs"), and says what the retention of queue "mine" must delete:
// a final receipt that is old, of a final dispatch, of its queue or none; then a final dispatch
// that is old, of its queue or none, and has no receipt left.
func seedRetention(ctx context.Context, t *testing.T, pool *pgxpool.Pool) []retentionCase {
	t.Helper()
	var cases []retentionCase
	mineOrNone := func(q string) bool { return q == "mine" || q == "" }
	for _, ds := range ledger.States(ledger.KindDispatch) {
		for _, rs := range append([]ledger.Status{""}, ledger.States(ledger.KindReceipt)...) {
			for _, q := range []string{"mine", "", "theirs"} {
				for _, dOld := range []bool{true, false} {
					for _, rOld := range []bool{true, false} {
						if rs == "" && !rOld {
							continue // one case without a receipt per dispatch age
						}
						c := retentionCase{dispatch: newID(), dStatus: ds, rStatus: rs, dOld: dOld, rOld: rOld, queue: q}
						dFinal := ledger.Final(ledger.KindDispatch, ds)
						if rs != "" {
							c.receipt = newID()
							c.wantReceiptGone = ledger.Final(ledger.KindReceipt, rs) && rOld && dFinal && mineOrNone(q)
						}
						c.wantDispGone = dFinal && dOld && mineOrNone(q) && (rs == "" || c.wantReceiptGone)
						cases = append(cases, c)
					}
				}
			}
		}
	}
	var dIDs, dStatuses, dQueues, rIDs, rDispatches, rStatuses, rQueues []string
	var dAges, rAges []time.Duration
	age := func(old bool) time.Duration { return map[bool]time.Duration{true: oldAge, false: newAge}[old] }
	for _, c := range cases {
		dIDs, dStatuses, dQueues, dAges = append(dIDs, c.dispatch), append(dStatuses, string(c.dStatus)), append(dQueues, c.queue),
			append(dAges, age(c.dOld))
		if c.receipt != "" {
			rIDs, rDispatches, rStatuses, rQueues, rAges = append(rIDs, c.receipt), append(rDispatches, c.dispatch),
				append(rStatuses, string(c.rStatus)), append(rQueues, c.queue), append(rAges, age(c.rOld))
		}
	}
	if _, err := pool.Exec(ctx, `INSERT INTO herald.dispatches (id, event_id, status, accepted_at, updated_at, queue)
		SELECT u.id, 'retention.test', u.status, now() - u.age - interval '1 hour', now() - u.age, u.queue
		FROM unnest($1::uuid[], $2::text[], $3::interval[], $4::text[]) AS u(id, status, age, queue)`,
		dIDs, dStatuses, dAges, dQueues); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO herald.receipts (id, dispatch_id, event_id, channel_key, transport, recipient_id,
			status, due_at, expires_at, created_at, updated_at, queue)
		SELECT u.id, u.dispatch_id, 'retention.test', 'email', 'email', u.id::text, u.status, now() - u.age, now(),
		       now() - u.age, now() - u.age, u.queue
		FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::interval[], $5::text[]) AS u(id, dispatch_id, status, age, queue)`,
		rIDs, rDispatches, rStatuses, rAges, rQueues); err != nil {
		t.Fatal(err)
	}
	return cases
}

// rowStates returns id → status and last change of every row of table.
func rowStates(ctx context.Context, t *testing.T, pool *pgxpool.Pool, table string) map[string]string {
	t.Helper()
	rows, err := pool.Query(ctx, `SELECT id::text, status || ' ' || updated_at::text FROM herald.`+table)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, st string
		if err := rows.Scan(&id, &st); err != nil {
			t.Fatal(err)
		}
		out[id] = st
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// drain runs del with limit until a batch comes back short (the rows it deleted, and the
// dispatches it pushed forward, fewer than limit), checking each batch against the limit and
// against the rows that actually went, and returns how many it deleted in all.
func drain(ctx context.Context, t *testing.T, pool *pgxpool.Pool, table string, limit int, del func(limit int) (deleted, pushed int64, err error)) int64 {
	t.Helper()
	count := func() int64 {
		var n int64
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM herald.`+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	var total int64
	for range 1000 {
		before := count()
		n, pushed, err := del(limit)
		if err != nil {
			t.Fatal(err)
		}
		if n+pushed > int64(limit) {
			t.Fatalf("%s: a batch of limit %d deleted %d and pushed %d", table, limit, n, pushed)
		}
		if gone := before - count(); gone != n {
			t.Fatalf("%s: a batch reported %d deleted, %d went", table, n, gone)
		}
		total += n
		if n+pushed < int64(limit) {
			return total
		}
	}
	t.Fatalf("%s: batches never came back short", table)
	return 0
}

// only is a delete that pushes nothing forward, for drain.
func only(n int64, err error) (int64, int64, error) { return n, 0, err }

// TestRetentionDeletesOnlySettledOldRowsOfItsQueue (issue 7): the retention of queue "mine"
// deletes final receipts that last changed before the retention, once their dispatch is final,
// then final dispatches that last changed before it and have no receipt left — of its queue and of
// no known queue, never another's. A row that is not final is never deleted or changed, however
// old; a dispatch goes only once its receipts have gone; batches respect their limit.
func TestRetentionDeletesOnlySettledOldRowsOfItsQueue(t *testing.T) {
	t.Parallel()
	pool := testenv.DB(t)
	ctx := t.Context()
	cases := seedRetention(ctx, t, pool)
	s := ledger.New(pool)
	dispatchesBefore, receiptsBefore := rowStates(ctx, t, pool, "dispatches"), rowStates(ctx, t, pool, "receipts")

	// Before the receipts go, only the dispatches that never had one may go.
	n := drain(ctx, t, pool, "dispatches", 7, func(limit int) (int64, int64, error) {
		return s.DeleteExpiredDispatches(ctx, "mine", retentionAge, limit)
	})
	var wantFirst int64
	for _, c := range cases {
		if c.wantDispGone && c.receipt == "" {
			wantFirst++
		}
	}
	if n != wantFirst || wantFirst == 0 {
		t.Errorf("dispatches deleted before any receipt: %d, want the %d that never had a receipt", n, wantFirst)
	}

	var wantReceipts, wantDispatches int64
	for _, c := range cases {
		if c.wantReceiptGone {
			wantReceipts++
		}
		if c.wantDispGone {
			wantDispatches++
		}
	}
	if n, err := s.DeleteExpiredReceipts(ctx, "mine", retentionAge, 7); err != nil || n != 7 || wantReceipts <= 7 {
		t.Fatalf("a batch of 7 of %d expired receipts deleted %d (%v)", wantReceipts, n, err)
	}
	if n := 7 + drain(ctx, t, pool, "receipts", 7, func(limit int) (int64, int64, error) {
		return only(s.DeleteExpiredReceipts(ctx, "mine", retentionAge, limit))
	}); n != wantReceipts {
		t.Errorf("deleted %d receipts, want %d", n, wantReceipts)
	}
	if n := wantFirst + drain(ctx, t, pool, "dispatches", 7, func(limit int) (int64, int64, error) {
		return s.DeleteExpiredDispatches(ctx, "mine", retentionAge, limit)
	}); n != wantDispatches {
		t.Errorf("deleted %d dispatches, want %d", n, wantDispatches)
	}

	dispatchesAfter, receiptsAfter := rowStates(ctx, t, pool, "dispatches"), rowStates(ctx, t, pool, "receipts")
	for _, c := range cases {
		if _, kept := dispatchesAfter[c.dispatch]; kept == c.wantDispGone {
			t.Errorf("%v: dispatch kept %v, want %v", c, kept, !c.wantDispGone)
		} else if kept && dispatchesAfter[c.dispatch] != dispatchesBefore[c.dispatch] {
			t.Errorf("%v: dispatch changed from %s to %s", c, dispatchesBefore[c.dispatch], dispatchesAfter[c.dispatch])
		}
		if c.receipt == "" {
			continue
		}
		if _, kept := receiptsAfter[c.receipt]; kept == c.wantReceiptGone {
			t.Errorf("%v: receipt kept %v, want %v", c, kept, !c.wantReceiptGone)
		} else if kept && receiptsAfter[c.receipt] != receiptsBefore[c.receipt] {
			t.Errorf("%v: receipt changed from %s to %s", c, receiptsBefore[c.receipt], receiptsAfter[c.receipt])
		}
	}
	for _, del := range []func() (int64, error){
		func() (int64, error) { return s.DeleteExpiredReceipts(ctx, "", retentionAge, 7) },
		func() (int64, error) { n, _, err := s.DeleteExpiredDispatches(ctx, "", retentionAge, 7); return n, err },
		func() (int64, error) { return s.DeleteExpiredRejectedTasks(ctx, "", retentionAge, 7) },
	} {
		if _, err := del(); err == nil {
			t.Error("a retention statement ran without a queue")
		}
	}
}

// TestParallelRetentionDeletesEachRowOnce: sweepers of one queue running at once, in small
// batches, delete every expired row once between them (FOR UPDATE SKIP LOCKED), with no error,
// and leave the rest.
func TestParallelRetentionDeletesEachRowOnce(t *testing.T) {
	t.Parallel()
	pool := testenv.DB(t)
	ctx := t.Context()
	cases := seedRetention(ctx, t, pool)
	var want int64
	for _, c := range cases {
		if c.wantReceiptGone {
			want++
		}
		if c.wantDispGone {
			want++
		}
	}
	var total int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			s := ledger.New(pool)
			for _, del := range []func() (int64, int64, error){
				func() (int64, int64, error) { return only(s.DeleteExpiredReceipts(ctx, "mine", retentionAge, 5)) },
				func() (int64, int64, error) { return s.DeleteExpiredDispatches(ctx, "mine", retentionAge, 5) },
			} {
				for {
					n, pushed, err := del()
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					total += n
					mu.Unlock()
					if n+pushed == 0 {
						break
					}
				}
			}
		})
	}
	wg.Wait()
	// A sweeper may reach the dispatches while another still deletes their receipts: one more
	// pass of each, alone, finishes.
	s := ledger.New(pool)
	for _, del := range []func() (int64, error){
		func() (int64, error) { return s.DeleteExpiredReceipts(ctx, "mine", retentionAge, 1000) },
		func() (int64, error) {
			n, _, err := s.DeleteExpiredDispatches(ctx, "mine", retentionAge, 1000)
			return n, err
		},
	} {
		n, err := del()
		if err != nil {
			t.Fatal(err)
		}
		total += n
	}
	var left int64
	if err := pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM herald.dispatches) + (SELECT count(*) FROM herald.receipts)`).
		Scan(&left); err != nil {
		t.Fatal(err)
	}
	var all int64
	for _, c := range cases {
		all++
		if c.receipt != "" {
			all++
		}
	}
	if total != want || left != all-want {
		t.Errorf("sweepers deleted %d rows (%d left of %d), want %d", total, left, all, want)
	}
}

// TestRetentionOfRejectedTasksAndMail: rejected tasks go by age, of their queue and of no known
// queue; captured mail goes by age, whatever worker sweeps (the mailbox records no queue).
func TestRetentionOfRejectedTasksAndMail(t *testing.T) {
	t.Parallel()
	pool := testenv.DB(t)
	ctx := t.Context()
	s := ledger.New(pool)
	if _, err := pool.Exec(ctx, `
		INSERT INTO herald.rejected_tasks (task_type, task_id, queue, reason, created_at, payload)
		SELECT 'herald:deliver', q || '-' || a || '-' || i, q, 'missing row', now() - a::interval, CASE WHEN i = 1 THEN '\x7b7d'::bytea END
		FROM unnest(ARRAY['mine', '', 'theirs']) q, unnest(ARRAY['10 days', '1 day']) a, generate_series(1, 4) i;
		INSERT INTO herald.dev_mailbox (message_id, mail_from, rcpt_to, subject, html_body, text_body, created_at)
		SELECT a || '-' || i, 'a@example.net', 'b@example.net', 's', 'h', 't', now() - a::interval
		FROM unnest(ARRAY['10 days', '1 day']) a, generate_series(1, 5) i`); err != nil {
		t.Fatal(err)
	}
	if n := drain(ctx, t, pool, "rejected_tasks", 3, func(limit int) (int64, int64, error) {
		return only(s.DeleteExpiredRejectedTasks(ctx, "mine", retentionAge, limit))
	}); n != 8 {
		t.Errorf("deleted %d rejected tasks, want the 8 old ones of queue mine and of none", n)
	}
	left := func(sql string) []string {
		t.Helper()
		var out []string
		if err := pool.QueryRow(ctx, sql).Scan(&out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	got := left(`SELECT array_agg(DISTINCT queue || ' ' || (created_at < now() - interval '5 days')::text ORDER BY queue || ' ' || (created_at < now() - interval '5 days')::text) FROM herald.rejected_tasks`)
	if want := []string{" false", "mine false", "theirs false", "theirs true"}; !slices.Equal(got, want) {
		t.Errorf("rejected tasks left (queue, old): %q, want %q", got, want)
	}
	if n := drain(ctx, t, pool, "dev_mailbox", 2, func(limit int) (int64, int64, error) {
		return only(s.DeleteExpiredMail(ctx, retentionAge, limit))
	}); n != 5 {
		t.Errorf("deleted %d messages, want the 5 old ones", n)
	}
	if got := left(`SELECT array_agg(message_id ORDER BY message_id) FROM herald.dev_mailbox`); !slices.Equal(got,
		[]string{"1 day-1", "1 day-2", "1 day-3", "1 day-4", "1 day-5"}) {
		t.Errorf("mail left: %q", got)
	}
}
