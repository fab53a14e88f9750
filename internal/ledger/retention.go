package ledger

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Retention: the sweeper deletes what Herald no longer needs, a small batch per statement, for
// one queue and the rows of no known queue, like the rest of the background work (see
// maintenance.go for the pattern and why each queue is its own branch):
//   - final receipts that last changed longer ago than the retention, once their dispatch is
//     final too (a dispatch still fanning out may write its receipts again);
//   - final dispatches that last changed longer ago than the retention and have no receipt left
//     (one whose receipts are kept is pushed forward, see expiredDispatchesSQL), except a cancel
//     tombstone whose task has not met it yet;
//   - rejected tasks, and messages of the development mailbox (which has no queue), by age.
//
// Age is counted from updated_at, which every change of a dispatch's or a receipt's status sets
// (for a dispatch, from retention_from when the sweep pushed it later, or its task met it).
// A row that is not final is never deleted, however old: it is work still to be done.
//
// Each statement is an ordered range scan of an index built for it (migrations 009 and 011), so a
// batch costs what its expired rows cost however many rows are kept
// (TestBackgroundWorkCostsWhatItsDueWorkCosts and TestDeleteExpiredDispatchesCostWithFutureReminders
// measure it). The dispatch of a receipt and the receipts of a dispatch are looked up by key in
// scalar subqueries, evaluated row by row on the rows the range scan yields: a join or an
// anti-join there could be planned as a scan of the whole other table (the generic plan of a
// prepared statement cannot see the batch size).

// inList writes states as an SQL list of literals. The final states written this way are the
// predicates of the partial indexes of migrations 009 and 011, so the planner can prove a statement may
// use them.
func inList(states []string) string { return "('" + strings.Join(states, "','") + "')" }

var (
	finalReceipt  = "status IN " + inList(finalStrings(KindReceipt))
	finalDispatch = "status IN " + inList(finalStrings(KindDispatch))
)

// expiredReceiptsSQL deletes up to $2 final receipts of queue $3 (or "") that last changed longer
// than $1 ago and whose dispatch is final.
var expiredReceiptsSQL = `WITH ` + queueBranches("old", "id, updated_at", "receipts", "$3",
	finalReceipt+` AND updated_at < now() - $1::interval
	AND (SELECT d.`+finalDispatch+` FROM herald.dispatches d WHERE d.id = receipts.dispatch_id)`,
	"updated_at", "$2") + `
	DELETE FROM herald.receipts WHERE id = ANY (ARRAY(SELECT id FROM old))`

// retentionFrom is when a dispatch's retention counts from: its last change, or later when the
// sweep pushed it (migration 010). The index dispatches_final_age (migration 011) is on it.
const retentionFrom = "GREATEST(updated_at, retention_from)"

// notWaitingTombstone leaves out a cancel tombstone (no event id, see CancelDispatch) that its task
// has not met yet: the task may still wait in Redis, and without the row it would send. Its first
// sight marks it (MeetTombstone); a tombstone whose task never comes (deleted from Redis) is kept,
// a small row.
const notWaitingTombstone = "(event_id <> '' OR retention_from IS NOT NULL)"

// expiredDispatchesSQL looks at up to $2 final dispatches of queue $3 (or "") whose retention
// counts from longer than $1 ago, oldest first. One with no receipt left is deleted. One whose
// receipts are kept (a reminder still scheduled, a delivery settled after its dispatch) is pushed
// forward to the earliest time they can all have gone as far as one probe tells, so the next
// sweeps skip it instead of reading it and probing its receipts again (DESIGN.md invariant 10):
//   - an open receipt (scheduled, retrying, sending) settles at its due time at the earliest, so
//     the dispatch waits for the latest due time of its open receipts, or now when that is past
//     (one descent of receipts_open_by_dispatch);
//   - a final receipt goes one retention after it last changed, so the dispatch waits for the last
//     change of the receipt the probe found (one descent of the receipts' unique index). When that
//     is past already, the receipts' statement of this sweep deletes the receipt (the sweeper runs
//     it first), and the dispatch is not pushed beyond it: it goes at the next sweep. A receipt of
//     another fleet, which this sweeper never deletes, pushes it a day at least.
//
// A dispatch is thus read about once per receipt it outlives, not once per sweep. Its deletion may
// come later than its receipts' (a scheduled delivery canceled before its due time): never sooner.
//
// The foreign key of receipts makes the probe safe against a receipt inserted meanwhile: its
// check locks the dispatch row (FOR KEY SHARE), so the branch skips that row, or the insert fails;
// and only a fan-out inserts receipts, which a final dispatch no longer runs.
var expiredDispatchesSQL = `WITH ` + queueBranches("old", "id, "+retentionFrom+" AS since", "dispatches", "$3",
	finalDispatch+" AND "+notWaitingTombstone+" AND "+retentionFrom+" < now() - $1::interval",
	"since", "$2") + `,
	checked AS (
		SELECT o.id,
		       (SELECT CASE WHEN r.queue IN ($3, '') THEN r.updated_at
		                    ELSE GREATEST(r.updated_at, now() - $1::interval + interval '1 day') END
		        FROM herald.receipts r WHERE r.dispatch_id = o.id LIMIT 1) AS kept,
		       (SELECT GREATEST(r.due_at, now()) FROM herald.receipts r
		        WHERE r.dispatch_id = o.id AND r.status IN ('scheduled','retrying','sending')
		        ORDER BY r.due_at DESC LIMIT 1) AS open_until
		FROM old o),
	gone AS (
		DELETE FROM herald.dispatches WHERE id = ANY (ARRAY(SELECT id FROM checked WHERE kept IS NULL))
		RETURNING 1),
	pushed AS (
		UPDATE herald.dispatches d SET retention_from = GREATEST(c.kept, c.open_until)
		FROM checked c
		WHERE d.id = ANY (ARRAY(SELECT id FROM checked WHERE kept IS NOT NULL)) AND d.id = c.id
		  AND GREATEST(c.kept, c.open_until) > GREATEST(d.updated_at, d.retention_from)
		RETURNING 1)
	SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM pushed)`

// expiredRejectedSQL deletes up to $2 rejected tasks of queue $3 (or "") recorded longer than $1
// ago.
var expiredRejectedSQL = `WITH ` + queueBranches("old", "id, created_at", "rejected_tasks", "$3",
	"created_at < now() - $1::interval", "created_at", "$2") + `
	DELETE FROM herald.rejected_tasks WHERE id = ANY (ARRAY(SELECT id FROM old))`

// expiredMailSQL deletes up to $2 messages of the development mailbox stored longer than $1 ago.
// The mailbox records no queue: any worker's sweeper may delete old mail.
const expiredMailSQL = `WITH old AS (
		SELECT id FROM herald.dev_mailbox WHERE created_at < now() - $1::interval
		ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)
	DELETE FROM herald.dev_mailbox WHERE id = ANY (ARRAY(SELECT id FROM old))`

// DeleteExpiredReceipts deletes up to limit final receipts (sent, failed, expired, skipped,
// canceled) of queue (and of no known queue) that last changed longer than retention ago and whose
// dispatch is final, and returns how many it deleted: when that reaches limit, more may be
// waiting. A receipt that is not final, or whose dispatch is still at work, is never deleted.
func (s *Store) DeleteExpiredReceipts(ctx context.Context, queue string, retention time.Duration, limit int) (int64, error) {
	return s.deleteExpired(ctx, "receipts", expiredReceiptsSQL, queue, retention, limit)
}

// DeleteExpiredDispatches looks at up to limit final dispatches (fanned out, failed, rejected,
// duplicate, canceled) of queue (and of no known queue) past their retention: last changed longer
// than retention ago, or pushed forward since. It deletes those with no receipt left, pushes
// forward those whose receipts are kept (they are looked at again when those can have gone), and
// returns how many it deleted and how many it pushed: when the two reach limit, more may be
// waiting. A cancel tombstone whose task has not met it yet is kept. Delete the expired receipts
// first: a dispatch goes once its last receipt has gone.
func (s *Store) DeleteExpiredDispatches(ctx context.Context, queue string, retention time.Duration, limit int) (deleted, pushed int64, err error) {
	if queue == "" {
		return 0, 0, fmt.Errorf("delete expired dispatches: %w", errNoQueue)
	}
	if err := s.q.QueryRow(ctx, expiredDispatchesSQL, retention, limit, queue).Scan(&deleted, &pushed); err != nil {
		return 0, 0, fmt.Errorf("delete dispatches of queue %q older than %v: %w", queue, retention, err)
	}
	return deleted, pushed, nil
}

// DeleteExpiredRejectedTasks deletes up to limit rejected tasks of queue (and of no known queue)
// recorded longer than retention ago, and returns how many it deleted.
func (s *Store) DeleteExpiredRejectedTasks(ctx context.Context, queue string, retention time.Duration, limit int) (int64, error) {
	return s.deleteExpired(ctx, "rejected tasks", expiredRejectedSQL, queue, retention, limit)
}

// DeleteExpiredMail deletes up to limit messages of the development mailbox stored longer than
// retention ago, and returns how many it deleted. The mailbox records no queue: any worker may
// delete old mail.
func (s *Store) DeleteExpiredMail(ctx context.Context, retention time.Duration, limit int) (int64, error) {
	tag, err := s.q.Exec(ctx, expiredMailSQL, retention, limit)
	if err != nil {
		return 0, fmt.Errorf("delete mailbox messages older than %v: %w", retention, err)
	}
	return tag.RowsAffected(), nil
}

func (s *Store) deleteExpired(ctx context.Context, what, sql, queue string, retention time.Duration, limit int) (int64, error) {
	if queue == "" {
		return 0, fmt.Errorf("delete expired %s: %w", what, errNoQueue)
	}
	tag, err := s.q.Exec(ctx, sql, retention, limit, queue)
	if err != nil {
		return 0, fmt.Errorf("delete %s of queue %q older than %v: %w", what, queue, retention, err)
	}
	return tag.RowsAffected(), nil
}
