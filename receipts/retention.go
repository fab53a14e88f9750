package receipts

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
//   - final dispatches that last changed longer ago than the retention and have no receipt left;
//   - rejected tasks, and messages of the development mailbox (which has no queue), by age.
//
// Age is counted from updated_at, which every change of a dispatch's or a receipt's status sets.
// A row that is not final is never deleted, however old: it is work still to be done.
//
// Each statement is an ordered range scan of an index built for it (migration 009), so a batch
// costs what its expired rows cost however many rows are kept
// (TestBackgroundWorkCostsWhatItsDueWorkCosts measures it). The dispatch of a receipt and the receipts of a dispatch are looked up by key in
// scalar subqueries, evaluated row by row on the rows the range scan yields: a join or an
// anti-join there could be planned as a scan of the whole other table (the generic plan of a
// prepared statement cannot see the batch size).

// inList writes states as an SQL list of literals. The final states written this way are the
// predicates of the partial indexes of migration 009, so the planner can prove a statement may
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

// expiredDispatchesSQL deletes up to $2 final dispatches of queue $3 (or "") that last changed
// longer than $1 ago and have no receipt left. The probe is one descent of the receipts'
// (dispatch_id, channel_key, recipient_id) unique index. The foreign key of receipts makes the
// probe safe against a receipt inserted meanwhile: its check locks the dispatch row (FOR KEY
// SHARE), so the branch skips that row, or the insert fails; and only a fan-out inserts receipts,
// which a final dispatch no longer runs.
//
// A dispatch past the retention whose receipts are kept (a reminder still scheduled, a delivery
// settled after its dispatch) is read, and its receipts probed, by every batch until they go:
// that cost grows with the deliveries that outlive their dispatch's retention, not with the rows
// kept.
var expiredDispatchesSQL = `WITH ` + queueBranches("old", "id, updated_at", "dispatches", "$3",
	finalDispatch+` AND updated_at < now() - $1::interval
	AND (SELECT true FROM herald.receipts r WHERE r.dispatch_id = dispatches.id LIMIT 1) IS NULL`,
	"updated_at", "$2") + `
	DELETE FROM herald.dispatches WHERE id = ANY (ARRAY(SELECT id FROM old))`

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

// DeleteExpiredDispatches deletes up to limit final dispatches (fanned out, failed, rejected,
// duplicate, canceled) of queue (and of no known queue) that last changed longer than retention
// ago and have no receipt left, and returns how many it deleted: when that reaches limit, more may
// be waiting. Delete the expired receipts first: a dispatch goes once its last receipt has gone.
func (s *Store) DeleteExpiredDispatches(ctx context.Context, queue string, retention time.Duration, limit int) (int64, error) {
	return s.deleteExpired(ctx, "dispatches", expiredDispatchesSQL, queue, retention, limit)
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
