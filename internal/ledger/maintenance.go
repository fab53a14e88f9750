package ledger

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// The statements of the background work: what a promoter tick and a sweep read and change.
//
// Each works for one queue (DESIGN.md invariant 9): the rows of its queue, and the rows whose
// queue is "" — written before queues were recorded, by an older worker during a rolling deploy,
// or by SQL that names none — which any fleet takes, as before. A fleet's settings (horizon,
// secret retention, idempotency window) never act on another fleet's rows.
//
// Each costs what its due work costs, however much work waits in the future (DESIGN.md
// invariant 10): every branch is an ordered range scan of a partial index built for its shape
// and queue (migration 006) and takes a bounded batch. An OR of two shapes, or of two queues,
// would defeat the index, so each is its own branch, locked on its own (FOR UPDATE SKIP LOCKED is
// not allowed on a UNION); a row that the final LIMIT leaves out is locked only until the
// statement ends. The rows a statement changes are then found by primary key from an array
// (id = ANY (ARRAY(…))), not by a join that the planner may turn into a scan of the whole table
// when it cannot see the batch size (the generic plan of a prepared statement).
// TestBackgroundWorkCostsWhatItsDueWorkCosts measures each statement with EXPLAIN (ANALYZE,
// BUFFERS) on 300,000 deliveries due tomorrow, under custom and generic plans.

// errNoQueue is returned by the background statements when called without a queue.
var errNoQueue = errors.New("no queue: the promoter and the sweeper work for one queue")

// branch is a CTE locking, in order, up to limit rows of table in queue that match cond, and
// selecting cols of them. queue is a parameter ($n), or the empty string literal for rows of no
// known queue.
func branch(name, cols, table, queue, cond, order, limit string) string {
	return fmt.Sprintf(`%s AS (
		SELECT %s FROM herald.%s WHERE queue = %s AND %s
		ORDER BY %s LIMIT %s FOR UPDATE SKIP LOCKED)`, name, cols, table, queue, cond, order, limit)
}

// queueBranches is a branch for queue and one for rows of no known queue, named name_own and
// name_any, and a CTE name selecting the first limit ids of both in order.
func queueBranches(name, cols, table, queue, cond, order, limit string) string {
	return strings.Join([]string{
		branch(name+"_own", cols, table, queue, cond, order, limit),
		branch(name+"_any", cols, table, "''", cond, order, limit),
		fmt.Sprintf(`%[1]s AS (SELECT id FROM (SELECT * FROM %[1]s_own UNION ALL SELECT * FROM %[1]s_any) b
			ORDER BY %[2]s LIMIT %[3]s)`, name, order, limit),
	}, ",\n")
}

const holdsSecrets = "(sealed IS NOT NULL OR minted IS NOT NULL)" //nolint:gosec // a SQL condition, not a credential

// scrubOldSQL drops the secrets of up to $2 dispatches of queue $3 (or "") accepted longer than
// $1 ago.
var scrubOldSQL = `WITH ` + queueBranches("old", "id, accepted_at", "dispatches", "$3",
	holdsSecrets+" AND accepted_at < now() - $1::interval", "accepted_at", "$2") + `
	UPDATE herald.dispatches SET sealed = NULL, minted = NULL, scrubbed_at = now()
	WHERE id = ANY (ARRAY(SELECT id FROM old))`

// scrubSettledSQL looks at up to $1 settled dispatches of queue $2 (or "") that hold secrets and
// are due a check, least recently checked first. One with no open receipt loses its secrets; one
// with open receipts is looked at again when the latest of them is due (a reminder due in three
// days is not probed every minute), or at the next sweep when they are due already. Each probe is
// one descent of receipts_open_by_dispatch, however many receipts the dispatch has.
var scrubSettledSQL = `WITH ` + queueBranches("candidate", "id, scrub_check_at", "dispatches", "$2",
	holdsSecrets+" AND status IN ('fanned_out','failed','rejected','duplicate','canceled') AND scrub_check_at <= now()",
	"scrub_check_at", "$1") + `,
	checked AS (
		SELECT c.id, (SELECT max(r.due_at) FROM herald.receipts r
		              WHERE r.dispatch_id = c.id AND r.status IN ('scheduled','retrying','sending')) AS open_until
		FROM candidate c),
	done AS (
		UPDATE herald.dispatches d
		SET sealed = CASE WHEN k.open_until IS NULL THEN NULL ELSE d.sealed END,
		    minted = CASE WHEN k.open_until IS NULL THEN NULL ELSE d.minted END,
		    scrubbed_at = CASE WHEN k.open_until IS NULL THEN now() ELSE d.scrubbed_at END,
		    scrub_check_at = GREATEST(k.open_until, now())
		FROM checked k WHERE d.id = ANY (ARRAY(SELECT id FROM checked)) AND d.id = k.id
		RETURNING k.open_until IS NULL AS scrubbed)
	SELECT count(*) FILTER (WHERE scrubbed) FROM done`

// ScrubSecrets drops the sealed and minted values of queue's dispatches (and those of no known
// queue) that need them no more: a settled dispatch (fanned out, failed, rejected, duplicate or
// canceled) with no open receipt, and any dispatch accepted longer than maxAge ago. It takes at
// most limit dispatches of each kind and returns how many it scrubbed: when that reaches limit,
// more may be waiting.
func (s *Store) ScrubSecrets(ctx context.Context, queue string, maxAge time.Duration, limit int) (int64, error) {
	if queue == "" {
		return 0, fmt.Errorf("scrub secrets: %w", errNoQueue)
	}
	tag, err := s.q.Exec(ctx, scrubOldSQL, maxAge, limit, queue)
	if err != nil {
		return 0, fmt.Errorf("scrub secrets older than %v of queue %q: %w", maxAge, queue, err)
	}
	var settled int64
	if err := s.q.QueryRow(ctx, scrubSettledSQL, limit, queue).Scan(&settled); err != nil {
		return 0, fmt.Errorf("scrub secrets of settled dispatches of queue %q: %w", queue, err)
	}
	return tag.RowsAffected() + settled, nil
}

// releaseKeysSQL frees up to $2 idempotency keys of dispatches of queue $3 (or "") accepted
// longer than $1 ago.
var releaseKeysSQL = `WITH ` + queueBranches("old", "id, accepted_at", "dispatches", "$3",
	"idempotency_key IS NOT NULL AND accepted_at < now() - $1::interval", "accepted_at", "$2") + `
	UPDATE herald.dispatches SET idempotency_key = NULL WHERE id = ANY (ARRAY(SELECT id FROM old))`

// ReleaseIdempotencyKeys frees up to limit keys of queue's dispatches (and those of no known
// queue) older than window, and returns how many it freed: when that reaches limit, more may be
// waiting.
func (s *Store) ReleaseIdempotencyKeys(ctx context.Context, queue string, window time.Duration, limit int) (int64, error) {
	if queue == "" {
		return 0, fmt.Errorf("release idempotency keys: %w", errNoQueue)
	}
	tag, err := s.q.Exec(ctx, releaseKeysSQL, window, limit, queue)
	if err != nil {
		return 0, fmt.Errorf("release idempotency keys of queue %q: %w", queue, err)
	}
	return tag.RowsAffected(), nil
}
