package ledger_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/testenv"
)

// maxTickBuffers bounds the shared buffers (hit + read) one statement of the background work may
// touch on the plan test's data. The work it has to do is a few rows; the data in the future is
// 300,000 deliveries and 200,000 dispatches, whose scan costs thousands of buffers.
const maxTickBuffers = 200

// TestBackgroundWorkCostsWhatItsDueWorkCosts: a promoter tick and a sweep cost what their due work
// costs, however much work waits in the future (DESIGN.md invariant 10; issue 6, item 10). On
// analysed data holding 300,000 deliveries due tomorrow (and 200,000 dispatches, half due tomorrow,
// half fanned out with secrets their deliveries still need), and the past the retention keeps
// (100,000 dispatches settled yesterday with their 100,000 sent deliveries, 50,000 rejected tasks
// and 50,000 captured messages), each statement the promoter and the sweeper run is measured with
// EXPLAIN (ANALYZE, BUFFERS): the buffers it touches are bounded, no table is scanned, and the
// retention's statements use their indexes (issue 7), with the custom plans of the first
// executions and with the generic plan a prepared statement may switch to. The same data checks
// what each statement returns.
func TestBackgroundWorkCostsWhatItsDueWorkCosts(t *testing.T) {
	t.Parallel()
	pool := testenv.DB(t)
	ctx := t.Context()
	due := seedPlanData(ctx, t, pool)
	const (
		horizon, regrace = time.Minute, 30 * time.Second
		retention        = 7 * 24 * time.Hour
		window           = 24 * time.Hour
		keep             = 30 * 24 * time.Hour // the retention of final rows, rejected tasks and mail
		batch            = 500
	)
	work := []struct {
		name  string
		run   func(*ledger.Store) error
		index string // when set, the index the statement's range scan must use (migrations 009 and 011)
	}{
		{"DueDispatches", func(s *ledger.Store) error {
			_, err := s.Due(ctx, ledger.KindDispatch, "fleet_a", horizon, regrace, batch)
			return err
		}, ""},
		{"DueReceipts", func(s *ledger.Store) error {
			_, err := s.Due(ctx, ledger.KindReceipt, "fleet_a", horizon, regrace, batch)
			return err
		}, ""},
		{"ScrubSecrets", func(s *ledger.Store) error { _, err := s.ScrubSecrets(ctx, "fleet_a", retention, batch); return err }, ""},
		{"ReleaseIdempotencyKeys", func(s *ledger.Store) error {
			_, err := s.ReleaseIdempotencyKeys(ctx, "fleet_a", window, batch)
			return err
		}, ""},
		{"DeleteExpiredReceipts", func(s *ledger.Store) error {
			_, err := s.DeleteExpiredReceipts(ctx, "fleet_a", keep, batch)
			return err
		}, "receipts_final_age"},
		{"DeleteExpiredDispatches", func(s *ledger.Store) error {
			_, _, err := s.DeleteExpiredDispatches(ctx, "fleet_a", keep, batch)
			return err
		}, "dispatches_final_age"},
		{"DeleteExpiredRejectedTasks", func(s *ledger.Store) error {
			_, err := s.DeleteExpiredRejectedTasks(ctx, "fleet_a", keep, batch)
			return err
		}, "rejected_tasks_age"},
		{"DeleteExpiredMail", func(s *ledger.Store) error { _, err := s.DeleteExpiredMail(ctx, keep, batch); return err },
			"dev_mailbox_age"},
		{"DropExpiredHeldPayloads", func(s *ledger.Store) error {
			_, err := s.DropExpiredHeldPayloads(ctx, "fleet_a", retention, batch)
			return err
		}, "rejected_tasks_held"},
	}

	t.Run("buffers", func(t *testing.T) {
		for _, generic := range []bool{false, true} {
			for _, w := range work {
				e := &explainer{generic: generic}
				inTx(ctx, t, pool, func(tx pgx.Tx) {
					e.tx = tx
					if err := w.run(ledger.New(e)); err != nil {
						t.Fatalf("%s: %v", w.name, err)
					}
				})
				if len(e.plans) == 0 {
					t.Fatalf("%s ran no statement", w.name)
				}
				for _, p := range e.plans {
					t.Logf("%s (generic plan %v): %d shared buffers", w.name, generic, p.buffers)
					if p.buffers >= maxTickBuffers {
						t.Errorf("%s (generic plan %v) touched %d shared buffers, want < %d: it reads the future\n%s\n%s",
							w.name, generic, p.buffers, maxTickBuffers, p.sql, p.plan)
					}
					if strings.Contains(p.plan, "Seq Scan") {
						t.Errorf("%s (generic plan %v) scans a table:\n%s", w.name, generic, p.plan)
					}
					if w.index != "" && !strings.Contains(p.plan, " "+w.index+" ") {
						t.Errorf("%s (generic plan %v) does not use %s:\n%s", w.name, generic, w.index, p.plan)
					}
				}
			}
		}
	})

	t.Run("results", func(t *testing.T) {
		inTx(ctx, t, pool, func(tx pgx.Tx) {
			s := ledger.New(tx)
			ds, err := s.Due(ctx, ledger.KindDispatch, "fleet_a", horizon, regrace, batch)
			if err != nil {
				t.Fatal(err)
			}
			if got := dueIDs(ds); !slices.Equal(got, due.dispatches) {
				t.Errorf("due dispatches of fleet_a: %v, want %v", got, due.dispatches)
			}
			if again, _ := s.Due(ctx, ledger.KindDispatch, "fleet_a", horizon, regrace, batch); len(again) != 0 {
				t.Errorf("due dispatches returned again within regrace: %v", dueIDs(again))
			}
			rs, err := s.Due(ctx, ledger.KindReceipt, "fleet_a", horizon, regrace, batch)
			if err != nil {
				t.Fatal(err)
			}
			if got := dueIDs(rs); !slices.Equal(got, due.receipts) {
				t.Errorf("due receipts of fleet_a: %v, want %v", got, due.receipts)
			}
			if again, _ := s.Due(ctx, ledger.KindReceipt, "fleet_a", horizon, regrace, batch); len(again) != 0 {
				t.Errorf("due receipts returned again within regrace: %v", dueIDs(again))
			}
			n, err := s.ScrubSecrets(ctx, "fleet_a", retention, batch)
			if err != nil || n != int64(len(due.scrubbed)) {
				t.Errorf("scrubbed %d dispatches (%v), want %d", n, err, len(due.scrubbed))
			}
			for _, id := range append(slices.Clone(due.scrubbed), due.kept...) {
				d, err := s.GetDispatch(ctx, id)
				if err != nil {
					t.Fatal(err)
				}
				if scrubbed := d.Sealed == nil && d.ScrubbedAt != nil; scrubbed != slices.Contains(due.scrubbed, id) {
					t.Errorf("dispatch %s of queue %q: scrubbed %v, sealed %v", id, d.Queue, scrubbed, d.Sealed)
				}
			}
			var next string
			if err := tx.QueryRow(ctx, `SELECT CASE WHEN scrub_check_at > now() + interval '23 hours' THEN 'tomorrow'
				ELSE scrub_check_at::text END FROM herald.dispatches WHERE id = $1`, due.kept[0]).Scan(&next); err != nil {
				t.Fatal(err)
			}
			if next != "tomorrow" {
				t.Errorf("a dispatch whose delivery is due tomorrow is checked again at %s, want when it is due", next)
			}
			if n, _ := s.ScrubSecrets(ctx, "fleet_a", retention, batch); n != 0 {
				t.Errorf("second sweep scrubbed %d", n)
			}
			n, err = s.ReleaseIdempotencyKeys(ctx, "fleet_a", window, batch)
			if err != nil || n != int64(due.oldKeys) {
				t.Errorf("released %d keys (%v), want %d", n, err, due.oldKeys)
			}
		})
	})

	t.Run("retention", func(t *testing.T) {
		want := due.expired
		inTx(ctx, t, pool, func(tx pgx.Tx) {
			s := ledger.New(tx)
			gone := func(table string, ids []string) []string {
				t.Helper()
				var present []string
				if err := tx.QueryRow(ctx, `SELECT COALESCE(array_agg(id::text ORDER BY id), '{}') FROM herald.`+table+
					` WHERE id = ANY($1::uuid[])`, ids).Scan(&present); err != nil {
					t.Fatal(err)
				}
				var out []string
				for _, id := range ids {
					if !slices.Contains(present, id) {
						out = append(out, id)
					}
				}
				return out
			}
			all := func(a, b []string) []string { return slices.Sorted(slices.Values(append(slices.Clone(a), b...))) }
			// A dispatch goes once its receipts have gone: before, none of them goes. One whose
			// receipts are kept is looked at again when they can have gone: a delivery due
			// tomorrow, tomorrow; a delivery sent yesterday, yesterday (plus the retention).
			if n, _, err := s.DeleteExpiredDispatches(ctx, "fleet_a", keep, batch); err != nil || n != 1 {
				t.Errorf("dispatches deleted before their receipts: %d (%v), want 1 (the one that never had any)", n, err)
			}
			for name, want := range map[string]string{"x-d-sched": "tomorrow", "x-d-young": "yesterday"} {
				var from string
				if err := tx.QueryRow(ctx, `SELECT CASE
					WHEN retention_from BETWEEN now() + interval '23 hours' AND now() + interval '25 hours' THEN 'tomorrow'
					WHEN retention_from BETWEEN now() - interval '25 hours' AND now() - interval '23 hours' THEN 'yesterday'
					ELSE COALESCE(retention_from::text, 'not pushed') END
					FROM herald.dispatches WHERE id = $1`, planID(name)).Scan(&from); err != nil {
					t.Fatal(err)
				}
				if from != want {
					t.Errorf("%s: its retention counts from %s, want %s (when its receipt can have gone)", name, from, want)
				}
			}
			n, err := s.DeleteExpiredReceipts(ctx, "fleet_a", keep, batch)
			if err != nil || n != int64(len(want.receipts)) {
				t.Errorf("deleted %d receipts (%v), want %d", n, err, len(want.receipts))
			}
			if got := gone("receipts", all(want.receipts, want.keptReceipts)); !slices.Equal(got, want.receipts) {
				t.Errorf("receipts deleted: %v, want %v", got, want.receipts)
			}
			n, _, err = s.DeleteExpiredDispatches(ctx, "fleet_a", keep, batch)
			if err != nil || n != int64(len(want.dispatches)-1) {
				t.Errorf("deleted %d dispatches (%v), want %d", n, err, len(want.dispatches)-1)
			}
			if got := gone("dispatches", all(want.dispatches, want.keptDispatch)); !slices.Equal(got, want.dispatches) {
				t.Errorf("dispatches deleted: %v, want %v", got, want.dispatches)
			}
			for _, again := range []func() (int64, error){
				func() (int64, error) { return s.DeleteExpiredReceipts(ctx, "fleet_a", keep, batch) },
				func() (int64, error) {
					n, pushed, err := s.DeleteExpiredDispatches(ctx, "fleet_a", keep, batch)
					return n + pushed, err
				},
			} {
				if n, err := again(); err != nil || n != 0 {
					t.Errorf("second sweep deleted or pushed %d (%v)", n, err)
				}
			}
			var before int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM herald.rejected_tasks`).Scan(&before); err != nil {
				t.Fatal(err)
			}
			n, err = s.DeleteExpiredRejectedTasks(ctx, "fleet_a", keep, batch)
			if err != nil || n != int64(len(want.rejectedTasks)) {
				t.Errorf("deleted %d rejected tasks (%v), want %d", n, err, len(want.rejectedTasks))
			}
			var left []string
			if err := tx.QueryRow(ctx, `SELECT COALESCE(array_agg(task_id ORDER BY task_id), '{}') FROM herald.rejected_tasks
				WHERE task_id LIKE 'old-%'`).Scan(&left); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(left, []string{"old-b"}) {
				t.Errorf("rejected tasks left: %v, want only another fleet's", left)
			}
			n, err = s.DeleteExpiredMail(ctx, keep, batch)
			if err != nil || n != int64(want.mail) {
				t.Errorf("deleted %d messages (%v), want %d", n, err, want.mail)
			}
		})
	})
}

// planDue is what the plan data holds that is due now, as the queries must answer.
type planDue struct {
	dispatches, receipts []string // due for fleet_a, sorted
	scrubbed             []string // dispatches whose secrets must go
	kept                 []string // dispatches whose secrets stay: a future delivery needs them, or another fleet's
	oldKeys              int      // idempotency keys past the window
	expired              expiredRows
}

// expiredRows is what fleet_a's retention (30 days) must delete, and what it must keep.
type expiredRows struct {
	receipts, dispatches       []string // deleted, sorted
	keptReceipts, keptDispatch []string // kept, sorted
	rejectedTasks              []string // task ids of the rejected tasks deleted
	mail                       int      // captured messages deleted
}

func seedPlanData(ctx context.Context, t *testing.T, pool *pgxpool.Pool) planDue {
	t.Helper()
	id := planID
	// The future, bulk-loaded: each index but the keys is dropped first and built again after,
	// from its own definition, and the foreign key is added back and validated (seconds, not
	// tens of seconds, on a shared 2-core machine).
	var idx []string
	rows, err := pool.Query(ctx, `SELECT format('DROP INDEX herald.%I', i.indexname), i.indexdef FROM pg_indexes i
		WHERE i.schemaname = 'herald' AND i.tablename IN ('dispatches','receipts')
		  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)`)
	if err != nil {
		t.Fatal(err)
	}
	var drops []string
	for rows.Next() {
		var drop, def string
		if err := rows.Scan(&drop, &def); err != nil {
			t.Fatal(err)
		}
		drops, idx = append(drops, drop), append(idx, def)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	steps := append(drops, `ALTER TABLE herald.receipts DROP CONSTRAINT receipts_dispatch_id_fkey`)
	steps = append(steps,
		// The future: 100,000 fanned-out dispatches holding secrets (the sweeper last looked at
		// them and will again when their deliveries are due), their 300,000 deliveries due tomorrow,
		// and 100,000 dispatches accepted for tomorrow; all with idempotency keys still held.
		`INSERT INTO herald.dispatches (id, event_id, sealed, idempotency_key, status, attempt, due_at, accepted_at,
			queue, scrub_check_at)
		 SELECT ('10000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'plan.event', '{"t":"v1.k.x"}', 'key-' || i, 'fanned_out', 1,
		        now() - interval '1 hour', now() - interval '1 hour', (ARRAY['fleet_a','fleet_b'])[i % 2 + 1],
		        now() + interval '1 day'
		 FROM generate_series(1, 100000) i`,
		`INSERT INTO herald.receipts (id, dispatch_id, event_id, channel_key, transport, recipient_id, status, due_at,
			expires_at, queue)
		 SELECT ('20000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid,
		        ('10000000-0000-4000-8000-' || lpad(to_hex((i - 1) / 3 + 1), 12, '0'))::uuid, 'plan.event', 'reminder', 'email',
		        'u' || i, 'scheduled', now() + interval '1 day', now() + interval '2 days',
		        (ARRAY['fleet_a','fleet_b'])[((i - 1) / 3 + 1) % 2 + 1]
		 FROM generate_series(1, 300000) i`,
		`INSERT INTO herald.dispatches (id, event_id, idempotency_key, status, due_at, accepted_at, queue)
		 SELECT ('30000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'plan.event', 'key-t-' || i, 'accepted', now() + interval '1 day',
		        now() + interval '1 day', (ARRAY['fleet_a','fleet_b'])[i % 2 + 1]
		 FROM generate_series(1, 100000) i`,
		// The kept past: 100,000 dispatches that settled yesterday, each with a delivery sent
		// yesterday — final rows the retention keeps, in the indexes the retention scans.
		`INSERT INTO herald.dispatches (id, event_id, status, attempt, due_at, accepted_at, updated_at, queue)
		 SELECT ('40000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'plan.event', 'fanned_out', 1,
		        now() - interval '1 day', now() - interval '1 day', now() - interval '1 day', (ARRAY['fleet_a','fleet_b'])[i % 2 + 1]
		 FROM generate_series(1, 100000) i`,
		`INSERT INTO herald.receipts (id, dispatch_id, event_id, channel_key, transport, recipient_id, status, attempt, due_at,
			expires_at, updated_at, sent_at, queue)
		 SELECT ('50000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid,
		        ('40000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'plan.event', 'email', 'email', 'u' || i, 'sent', 1,
		        now() - interval '1 day', now(), now() - interval '1 day', now() - interval '1 day', (ARRAY['fleet_a','fleet_b'])[i % 2 + 1]
		 FROM generate_series(1, 100000) i`,
		// And 50,000 rejected tasks and 50,000 captured messages of yesterday.
		`INSERT INTO herald.rejected_tasks (task_type, task_id, queue, reason, created_at)
		 SELECT 'herald:deliver', 'kept-' || i, (ARRAY['fleet_a','fleet_b'])[i % 2 + 1], 'missing row', now() - interval '1 day'
		 FROM generate_series(1, 50000) i`,
		`INSERT INTO herald.dev_mailbox (message_id, mail_from, rcpt_to, subject, html_body, text_body, created_at)
		 SELECT 'kept-' || i, 'a@example.net', 'b@example.net', 's', 'h', 't', now() - interval '1 day'
		 FROM generate_series(1, 50000) i`)
	steps = append(steps, idx...)
	steps = append(steps,
		`ALTER TABLE herald.receipts ADD CONSTRAINT receipts_dispatch_id_fkey FOREIGN KEY (dispatch_id)
			REFERENCES herald.dispatches (id) NOT VALID`,
		`ALTER TABLE herald.receipts VALIDATE CONSTRAINT receipts_dispatch_id_fkey`,
		// Due now. Dispatches: two of fleet_a, one of fleet_b, one legacy (queue ''), a fan-out of
		// fleet_a whose lease expired, and one of fleet_a enqueued a moment ago (within regrace).
		fmt.Sprintf(`INSERT INTO herald.dispatches (id, event_id, status, attempt, due_at, lease_until, enqueued_at, queue) VALUES
		 ('%s', 'plan.event', 'accepted', 0, now() - interval '1 second', NULL, NULL, 'fleet_a'),
		 ('%s', 'plan.event', 'retrying', 1, now() + interval '30 seconds', NULL, NULL, 'fleet_a'),
		 ('%s', 'plan.event', 'accepted', 0, now(), NULL, NULL, 'fleet_b'),
		 ('%s', 'plan.event', 'accepted', 0, now(), NULL, NULL, ''),
		 ('%s', 'plan.event', 'fanning_out', 1, now() - interval '5 minutes', now() - interval '1 second', now() - interval '5 minutes', 'fleet_a'),
		 ('%s', 'plan.event', 'accepted', 0, now(), NULL, now(), 'fleet_a'),
		 ('%s', 'plan.event', 'fanning_out', 1, now(), now() + interval '1 minute', NULL, 'fleet_a')`,
			id("d-a1"), id("d-a2"), id("d-b1"), id("d-legacy"), id("d-a-lease"), id("d-a-enq"), id("d-a-live")),
		// Receipts (of a fanned-out dispatch of fleet_a): the same cases.
		fmt.Sprintf(`INSERT INTO herald.receipts (id, dispatch_id, event_id, channel_key, transport, recipient_id, status,
			attempt, due_at, expires_at, lease_until, enqueued_at, queue)
		 SELECT v.id::uuid, '10000000-0000-4000-8000-000000000001'::uuid, 'plan.event', 'email', 'email', v.id, v.status, v.attempt, now() + v.due,
		        now() + interval '1 day', now() + v.lease, now() + v.enq, v.queue
		 FROM (VALUES
		   ('%s', 'scheduled', 0, interval '-1 second', NULL::interval, NULL::interval, 'fleet_a'),
		   ('%s', 'retrying', 1, interval '59 seconds', NULL, NULL, 'fleet_a'),
		   ('%s', 'scheduled', 0, interval '0', NULL, NULL, 'fleet_b'),
		   ('%s', 'scheduled', 0, interval '0', NULL, NULL, ''),
		   ('%s', 'sending', 1, interval '-5 minutes', interval '-1 second', interval '-5 minutes', 'fleet_a'),
		   ('%s', 'scheduled', 0, interval '0', NULL, interval '0', 'fleet_a'),
		   ('%s', 'sending', 1, interval '0', interval '1 minute', NULL, 'fleet_a'),
		   ('%s', 'scheduled', 0, interval '90 seconds', NULL, NULL, 'fleet_a') -- beyond the horizon, with room for a slow run
		 ) AS v(id, status, attempt, due, lease, enq, queue)`,
			id("r-a1"), id("r-a2"), id("r-b1"), id("r-legacy"), id("r-a-lease"), id("r-a-enq"), id("r-a-live"), id("r-a-later")),
		// Secrets: a settled dispatch whose deliveries are all final, a failed one of no known
		// queue, one accepted longer ago than the retention, one whose only delivery is due
		// tomorrow, and two of another fleet (settled, and old) that fleet_a's sweeper leaves alone.
		fmt.Sprintf(`INSERT INTO herald.dispatches (id, event_id, sealed, status, attempt, due_at, accepted_at, queue) VALUES
		 ('%s', 'plan.event', '{"t":"v1.k.x"}', 'fanned_out', 1, now(), now() - interval '1 minute', 'fleet_a'),
		 ('%s', 'plan.event', '{"t":"v1.k.x"}', 'failed', 1, now(), now() - interval '1 minute', ''),
		 ('%s', 'plan.event', '{"t":"v1.k.x"}', 'accepted', 0, now() + interval '1 day', now() - interval '8 days', 'fleet_a'),
		 ('%s', 'plan.event', '{"t":"v1.k.x"}', 'fanned_out', 1, now(), now() - interval '1 minute', 'fleet_a'),
		 ('%s', 'plan.event', '{"t":"v1.k.x"}', 'failed', 1, now(), now() - interval '1 minute', 'fleet_b'),
		 ('%s', 'plan.event', '{"t":"v1.k.x"}', 'accepted', 0, now() + interval '1 day', now() - interval '8 days', 'fleet_b')`,
			id("s-final"), id("s-failed"), id("s-old"), id("s-kept"), id("s-other"), id("s-other-old")),
		fmt.Sprintf(`INSERT INTO herald.receipts (id, dispatch_id, event_id, channel_key, transport, recipient_id, status,
			due_at, expires_at, queue) VALUES
		 ('%s', '%s', 'plan.event', 'email', 'email', '1', 'sent', now(), now() + interval '1 day', 'fleet_a'),
		 ('%s', '%s', 'plan.event', 'email', 'email', '1', 'scheduled', now() + interval '1 day', now() + interval '2 days', 'fleet_a')`,
			id("s-final-r"), id("s-final"), id("s-kept-r"), id("s-kept")),
		// Idempotency keys past the window: fleet_a's, one of no known queue, and another fleet's.
		fmt.Sprintf(`INSERT INTO herald.dispatches (id, event_id, idempotency_key, status, due_at, accepted_at, queue) VALUES
		 ('%s', 'plan.event', 'old-1', 'fanned_out', now(), now() - interval '2 days', 'fleet_a'),
		 ('%s', 'plan.event', 'old-2', 'fanned_out', now(), now() - interval '2 days', ''),
		 ('%s', 'plan.event', 'old-3', 'fanned_out', now(), now() - interval '2 days', 'fleet_b')`, id("k-1"), id("k-2"), id("k-3")),
		// Retention (30 days): settled rows of fleet_a and of no known queue that last changed 40
		// days ago go, a dispatch once its receipts have gone; another fleet's, a receipt of a
		// dispatch still at work, a receipt changed yesterday, a delivery still scheduled and the
		// dispatches they belong to stay.
		fmt.Sprintf(`INSERT INTO herald.dispatches (id, event_id, status, attempt, due_at, accepted_at, updated_at, queue) VALUES
		 ('%s', 'plan.event', 'fanned_out', 1, now(), now() - interval '41 days', now() - interval '40 days', 'fleet_a'),
		 ('%s', 'plan.event', 'failed', 1, now(), now() - interval '41 days', now() - interval '40 days', ''),
		 ('%s', 'plan.event', 'rejected', 0, now(), now() - interval '41 days', now() - interval '40 days', 'fleet_a'),
		 ('%s', 'plan.event', 'fanned_out', 1, now(), now() - interval '41 days', now() - interval '40 days', 'fleet_b'),
		 ('%s', 'plan.event', 'retrying', 3, now() + interval '1 day', now() - interval '41 days', now() - interval '40 days', 'fleet_a'),
		 ('%s', 'plan.event', 'fanned_out', 1, now(), now() - interval '41 days', now() - interval '40 days', 'fleet_a'),
		 ('%s', 'plan.event', 'fanned_out', 1, now(), now() - interval '41 days', now() - interval '40 days', 'fleet_a'),
		 ('%s', 'plan.event', 'duplicate', 0, now(), now() - interval '1 day', now() - interval '1 day', 'fleet_a')`,
			id("x-d-a"), id("x-d-legacy"), id("x-d-empty"), id("x-d-b"), id("x-d-open"), id("x-d-young"), id("x-d-sched"), id("x-d-recent")),
		fmt.Sprintf(`INSERT INTO herald.receipts (id, dispatch_id, event_id, channel_key, transport, recipient_id, status,
			attempt, due_at, expires_at, updated_at, queue) VALUES
		 ('%s', '%s', 'plan.event', 'email', 'email', '1', 'sent', 1, now(), now(), now() - interval '40 days', 'fleet_a'),
		 ('%s', '%s', 'plan.event', 'email', 'email', '2', 'failed', 1, now(), now(), now() - interval '40 days', 'fleet_a'),
		 ('%s', '%s', 'plan.event', 'email', 'email', '1', 'expired', 1, now(), now(), now() - interval '40 days', ''),
		 ('%s', '%s', 'plan.event', 'email', 'email', '1', 'sent', 1, now(), now(), now() - interval '40 days', 'fleet_b'),
		 ('%s', '%s', 'plan.event', 'email', 'email', '1', 'sent', 1, now(), now(), now() - interval '40 days', 'fleet_a'),
		 ('%s', '%s', 'plan.event', 'email', 'email', '1', 'sent', 1, now(), now(), now() - interval '1 day', 'fleet_a'),
		 ('%s', '%s', 'plan.event', 'email', 'email', '1', 'scheduled', 0, now() + interval '1 day', now() + interval '2 days',
		  now() - interval '40 days', 'fleet_a')`,
			id("x-r-a1"), id("x-d-a"), id("x-r-a2"), id("x-d-a"), id("x-r-legacy"), id("x-d-legacy"), id("x-r-b"), id("x-d-b"),
			id("x-r-open"), id("x-d-open"), id("x-r-young"), id("x-d-young"), id("x-r-sched"), id("x-d-sched")),
		`INSERT INTO herald.rejected_tasks (task_type, task_id, queue, reason, created_at) VALUES
		 ('herald:deliver', 'old-a', 'fleet_a', 'missing row', now() - interval '40 days'),
		 ('herald:deliver', 'old-legacy', '', 'missing row', now() - interval '40 days'),
		 ('herald:deliver', 'old-b', 'fleet_b', 'missing row', now() - interval '40 days')`,
		`INSERT INTO herald.dev_mailbox (message_id, mail_from, rcpt_to, subject, html_body, text_body, created_at) VALUES
		 ('old-1', 'a@example.net', 'b@example.net', 's', 'h', 't', now() - interval '40 days'),
		 ('old-2', 'a@example.net', 'b@example.net', 's', 'h', 't', now() - interval '40 days')`,
		`ANALYZE herald.dispatches`,
		`ANALYZE herald.receipts`,
		`ANALYZE herald.rejected_tasks`,
		`ANALYZE herald.dev_mailbox`,
	)
	for _, sql := range steps {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatalf("seed: %v\n%s", err, sql)
		}
	}
	sorted := func(names ...string) []string {
		var out []string
		for _, n := range names {
			out = append(out, id(n))
		}
		slices.Sort(out)
		return out
	}
	return planDue{
		dispatches: sorted("d-a1", "d-a2", "d-legacy", "d-a-lease"),
		receipts:   sorted("r-a1", "r-a2", "r-legacy", "r-a-lease"),
		scrubbed:   sorted("s-final", "s-failed", "s-old"),
		kept:       []string{id("s-kept"), id("s-other"), id("s-other-old")},
		oldKeys:    2,
		expired: expiredRows{
			receipts:      sorted("x-r-a1", "x-r-a2", "x-r-legacy"),
			dispatches:    sorted("x-d-a", "x-d-legacy", "x-d-empty"),
			keptReceipts:  sorted("x-r-b", "x-r-open", "x-r-young", "x-r-sched"),
			keptDispatch:  sorted("x-d-b", "x-d-open", "x-d-young", "x-d-sched", "x-d-recent"),
			rejectedTasks: []string{"old-a", "old-legacy"},
			mail:          2,
		},
	}
}

// planID is the id of the plan data's row named name.
func planID(name string) string { return uuid.NewSHA1(uuid.NameSpaceOID, []byte(name)).String() }

func dueIDs(ds []ledger.DueTask) []string {
	var ids []string
	for _, d := range ds {
		ids = append(ids, d.ID)
	}
	slices.Sort(ids)
	return ids
}

// inTx runs f in a transaction that is rolled back: EXPLAIN ANALYZE runs the statements.
func inTx(ctx context.Context, t *testing.T, pool *pgxpool.Pool, f func(pgx.Tx)) {
	t.Helper()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	f(tx)
}

// explainer is a ledger.Querier that runs each statement under EXPLAIN (ANALYZE, BUFFERS) and
// records the shared buffers its plan touched. Its Query returns no rows, its QueryRow zeros. With
// generic, the statement is prepared and executed under plan_cache_mode = force_generic_plan:
// the plan PostgreSQL may settle on for a statement pgx has prepared once it ran five times.
type explainer struct {
	tx      pgx.Tx
	generic bool
	plans   []explained
}

type explained struct {
	sql     string
	buffers int64
	plan    string
}

func (e *explainer) explain(ctx context.Context, sql string, args ...any) error {
	stmt := "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql
	if e.generic {
		name := fmt.Sprintf("plan_%d", len(e.plans))
		if _, err := e.tx.Exec(ctx, "SET LOCAL plan_cache_mode = force_generic_plan"); err != nil {
			return err
		}
		if _, err := e.tx.Exec(ctx, "PREPARE "+name+" AS "+sql); err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
		lits := make([]string, len(args))
		for i, a := range args {
			lits[i] = literal(a)
		}
		stmt, args = "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE "+name+"("+strings.Join(lits, ", ")+")", nil
		defer func() { _, _ = e.tx.Exec(context.WithoutCancel(ctx), "DEALLOCATE "+name) }()
	}
	var out []struct {
		Plan map[string]any `json:"Plan"`
	}
	var raw []byte
	if err := e.tx.QueryRow(ctx, stmt, args...).Scan(&raw); err != nil {
		return fmt.Errorf("explain: %w\n%s", err, stmt)
	}
	if err := json.Unmarshal(raw, &out); err != nil || len(out) != 1 {
		return fmt.Errorf("explain output %s: %w", raw, err)
	}
	var b strings.Builder
	outline(&b, out[0].Plan, 0)
	e.plans = append(e.plans, explained{sql: sql, buffers: buffers(out[0].Plan), plan: b.String()})
	return nil
}

// buffers is the shared buffers (hit + read) a plan node touched, its children's included.
func buffers(node map[string]any) int64 {
	hit, _ := node["Shared Hit Blocks"].(float64)
	read, _ := node["Shared Read Blocks"].(float64)
	return int64(hit + read)
}

// outline writes a plan as one line per node: type, index or relation, rows, buffers.
func outline(b *strings.Builder, node map[string]any, depth int) {
	fmt.Fprintf(b, "%s%v", strings.Repeat("  ", depth), node["Node Type"])
	for _, k := range []string{"Index Name", "Relation Name", "CTE Name"} {
		if v, ok := node[k]; ok {
			fmt.Fprintf(b, " %v", v)
		}
	}
	fmt.Fprintf(b, " (rows %v, actual %v, buffers %d)\n", node["Plan Rows"], node["Actual Rows"], buffers(node))
	children, _ := node["Plans"].([]any)
	for _, c := range children {
		if m, ok := c.(map[string]any); ok {
			outline(b, m, depth+1)
		}
	}
}

// literal writes an argument of the store's statements as SQL.
func literal(a any) string {
	switch v := a.(type) {
	case time.Duration:
		return fmt.Sprintf("'%d microseconds'::interval", v.Microseconds())
	case int:
		return fmt.Sprint(v)
	case string:
		return "'" + strings.ReplaceAll(v, "'", "''") + "'"
	case []string:
		q := make([]string, len(v))
		for i, s := range v {
			q[i] = literal(s)
		}
		return "ARRAY[" + strings.Join(q, ",") + "]::text[]"
	default:
		panic(fmt.Sprintf("literal: %T", a))
	}
}

func (e *explainer) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return pgconn.NewCommandTag("UPDATE 0"), e.explain(ctx, sql, args...)
}

func (e *explainer) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if err := e.explain(ctx, sql, args...); err != nil {
		return nil, err
	}
	return e.tx.Query(ctx, `SELECT NULL::text, 0, now() WHERE false`)
}

func (e *explainer) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if err := e.explain(ctx, sql, args...); err != nil {
		return errRow{err}
	}
	return zeroRow{}
}

// zeroRow is a row of zeros, as many as Scan asks for.
type zeroRow struct{}

func (zeroRow) Scan(dest ...any) error {
	for _, d := range dest {
		p, ok := d.(*int64)
		if !ok {
			return fmt.Errorf("explainer: scan into %T", d)
		}
		*p = 0
	}
	return nil
}

func (e *explainer) SendBatch(context.Context, *pgx.Batch) pgx.BatchResults {
	panic("explainer: batches are not explained")
}

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// TestDeleteExpiredDispatchesCostWithFutureReminders: 100,000 dispatches of fleet_a settled 40
// days ago, each with a reminder due tomorrow (a "your trial ends in 45 days" channel), and a
// retention of 30 days. Nothing is deletable. The first sweep looks at each dispatch once, in
// batches that cost what their rows cost, and pushes it to when its reminder is due; then a
// sweep batch costs what its expired rows cost (none), under custom and generic plans.
func TestDeleteExpiredDispatchesCostWithFutureReminders(t *testing.T) {
	t.Parallel()
	pool := testenv.DB(t)
	ctx := t.Context()
	const (
		n         = 100000
		retention = 30 * 24 * time.Hour
		batch     = 1000
		perRow    = 40 // shared buffers a pushed dispatch may cost: its heap and index entries, two probes
	)
	for _, sql := range []string{
		`INSERT INTO herald.dispatches (id, event_id, status, attempt, due_at, accepted_at, updated_at, queue)
		 SELECT ('60000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'plan.event', 'fanned_out', 1,
		        now() - interval '40 days', now() - interval '40 days', now() - interval '40 days', 'fleet_a'
		 FROM generate_series(1, 100000) i`,
		`INSERT INTO herald.receipts (id, dispatch_id, event_id, channel_key, transport, recipient_id, status, due_at, expires_at, queue)
		 SELECT ('70000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid,
		        ('60000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'plan.event', 'trial_end', 'email',
		        'u' || i, 'scheduled', now() + interval '1 day', now() + interval '2 days', 'fleet_a'
		 FROM generate_series(1, 100000) i`,
		`ANALYZE herald.dispatches`, `ANALYZE herald.receipts`,
	} {
		if _, err := pool.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string, e *explainer, limit int64) {
		t.Helper()
		for _, p := range e.plans {
			t.Logf("%s (generic plan %v): %d shared buffers", what, e.generic, p.buffers)
			if p.buffers >= limit {
				t.Errorf("%s (generic plan %v) touched %d shared buffers, want < %d\n%s", what, e.generic, p.buffers, limit, p.plan)
			}
			if !strings.Contains(p.plan, " dispatches_final_age ") || strings.Contains(p.plan, "Seq Scan") {
				t.Errorf("%s (generic plan %v) does not range-scan dispatches_final_age:\n%s", what, e.generic, p.plan)
			}
		}
	}
	for _, generic := range []bool{false, true} {
		e := &explainer{generic: generic}
		inTx(ctx, t, pool, func(tx pgx.Tx) {
			e.tx = tx
			if _, _, err := ledger.New(e).DeleteExpiredDispatches(ctx, "fleet_a", retention, batch); err != nil {
				t.Fatal(err)
			}
		})
		check("the first batch, pushing 1,000 dispatches", e, perRow*batch)
	}
	// The first sweep, committed; then the vacuum that follows 100,000 updated rows (autovacuum
	// runs on a table a fifth of which changed) clears the index entries they left behind.
	s := ledger.New(pool)
	var deleted, pushed int64
	for range n/batch + 1 {
		d, p, err := s.DeleteExpiredDispatches(ctx, "fleet_a", retention, batch)
		if err != nil {
			t.Fatal(err)
		}
		deleted, pushed = deleted+d, pushed+p
		if d+p < batch {
			break
		}
	}
	if deleted != 0 || pushed != n {
		t.Fatalf("the first sweep deleted %d and pushed %d dispatches, want 0 and %d", deleted, pushed, n)
	}
	if _, err := pool.Exec(ctx, `VACUUM herald.dispatches`); err != nil {
		t.Fatal(err)
	}
	inTx(ctx, t, pool, func(tx pgx.Tx) {
		var tomorrow int
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM herald.dispatches
			WHERE retention_from BETWEEN now() + interval '23 hours' AND now() + interval '25 hours'`).Scan(&tomorrow); err != nil {
			t.Fatal(err)
		}
		if tomorrow != n {
			t.Errorf("%d dispatches wait for their reminder due tomorrow, want %d", tomorrow, n)
		}
		for _, generic := range []bool{false, true} {
			e := &explainer{generic: generic, tx: tx}
			if d, p, err := ledger.New(e).DeleteExpiredDispatches(ctx, "fleet_a", retention, batch); err != nil || d+p != 0 {
				t.Fatalf("the next sweep: %d %d %v", d, p, err)
			}
			check("the next sweep", e, maxTickBuffers)
		}
	})
}
