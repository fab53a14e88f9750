package ledger_test

import (
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/testenv"
)

// TestParallelPromotersTakeEachRowOnce: promoters of one queue running at once, each taking small
// batches, hand out every due row of their queue (and of no known queue) exactly once within the
// regrace, and never a row of another queue: the branches lock their rows on their own, and a row
// another promoter enqueued meanwhile is checked again and left out.
func TestParallelPromotersTakeEachRowOnce(t *testing.T) {
	t.Parallel()
	pool := testenv.DB(t)
	ctx := t.Context()
	if _, err := pool.Exec(ctx, `
		INSERT INTO herald.dispatches (id, event_id, status, attempt, due_at, lease_until, queue)
		SELECT gen_random_uuid(), 'a.b', CASE WHEN i % 3 = 0 THEN 'fanning_out' ELSE 'accepted' END, 1,
		       now() - interval '1 minute', now() - interval '1 second', (ARRAY['mine','','theirs'])[i % 4 % 3 + 1]
		FROM generate_series(1, 1200) i;
		INSERT INTO herald.receipts (id, dispatch_id, event_id, channel_key, transport, recipient_id, status, attempt,
		                             due_at, expires_at, lease_until, queue)
		SELECT gen_random_uuid(), d.id, 'a.b', 'email', 'email', 'r' || i, CASE WHEN i % 3 = 0 THEN 'sending' ELSE 'scheduled' END,
		       1, now() - interval '1 minute', now() + interval '1 hour', now() - interval '1 second', d.queue
		FROM (SELECT id, queue FROM herald.dispatches LIMIT 1) d, generate_series(1, 1200) i;
		UPDATE herald.receipts SET queue = (ARRAY['mine','','theirs'])[abs(hashtext(recipient_id)) % 3 + 1];`); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		table string
		due   func(*ledger.Store) ([]ledger.DueTask, error)
	}{
		{"dispatches", func(s *ledger.Store) ([]ledger.DueTask, error) {
			return s.Due(ctx, ledger.KindDispatch, "mine", time.Minute, time.Hour, 37)
		}},
		{"receipts", func(s *ledger.Store) ([]ledger.DueTask, error) {
			return s.Due(ctx, ledger.KindReceipt, "mine", time.Minute, time.Hour, 37)
		}},
	} {
		var want int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM herald.`+tc.table+` WHERE queue IN ('mine', '')`).Scan(&want); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		seen := map[string]int{}
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				s := ledger.New(pool)
				for {
					ds, err := tc.due(s)
					if err != nil {
						t.Error(err)
						return
					}
					if len(ds) == 0 {
						return
					}
					mu.Lock()
					for _, d := range ds {
						seen[d.ID]++
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		var other int
		if err := pool.QueryRow(ctx, `SELECT count(*) FROM herald.`+tc.table+` WHERE id = ANY($1) AND queue = 'theirs'`,
			keys(seen)).Scan(&other); err != nil {
			t.Fatal(err)
		}
		if len(seen) != want || other != 0 {
			t.Errorf("%s: promoters took %d distinct rows, %d of another queue; want the %d of their queue and of none", tc.table, len(seen), other, want)
		}
		for id, n := range seen {
			if n != 1 {
				t.Errorf("%s: row %s handed out %d times within the regrace", tc.table, id, n)
			}
		}
	}
}

func keys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
