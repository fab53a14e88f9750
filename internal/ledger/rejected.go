package ledger

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// RejectedTask is a task that has no dispatch or receipt of its own to record its end: a
// malformed payload or a row that does not exist (only the payload's size and digest are kept —
// such a payload may hold anything), or a task held back for a worker that understands its newer
// payload version, none of which took it in time (its payload is kept, so it can be enqueued
// again once the fleet is upgraded; payloads hold references and sealed secrets only).
type RejectedTask struct {
	ID            int64
	TaskType      string
	TaskID        string
	Queue         string
	Reason        string
	PayloadSize   int
	PayloadSHA256 string
	// Requeueable reports that the payload was kept: the task can be enqueued again.
	Requeueable bool
	CreatedAt   time.Time
}

// ErrNoPayload is returned by TakeRejectedPayload for a rejected task that kept no payload.
var ErrNoPayload = errors.New("kept no payload")

// RecordRejectedTask stores a rejected task. The payload is not kept, only its size and digest.
func (s *Store) RecordRejectedTask(ctx context.Context, taskType, taskID, queue, reason string, payload []byte) error {
	_, err := s.insertRejected(ctx, taskType, taskID, queue, reason, payload, false)
	return err
}

// HoldRejectedTask stores a task held back for a worker that understands its payload, with the
// payload kept for TakeRejectedPayload, and returns the row's id. Only a payload Herald itself
// wrote belongs here (references and sealed secrets), never one too broken to be read.
//
// Holding is idempotent: a task (same queue, task id and payload) held again — its worker was
// killed after the hold and before asynq heard of it, and the spare try holds it once more —
// returns the row already there.
func (s *Store) HoldRejectedTask(ctx context.Context, taskType, taskID, queue, reason string, payload []byte) (int64, error) {
	taskID, queue = cleanText(taskID), cleanText(queue) // as insertRejected stores them
	if taskID != "" {
		sum := sha256.Sum256(payload)
		var id int64
		err := s.q.QueryRow(ctx, `SELECT id FROM herald.rejected_tasks
			WHERE queue = $1 AND payload IS NOT NULL AND task_id = $2 AND payload_sha256 = $3 ORDER BY id LIMIT 1`,
			queue, taskID, hex.EncodeToString(sum[:])).Scan(&id)
		switch {
		case err == nil:
			return id, nil
		case !errors.Is(err, pgx.ErrNoRows):
			return 0, fmt.Errorf("record rejected %s task %s: %w", taskType, taskID, err)
		}
	}
	return s.insertRejected(ctx, taskType, taskID, queue, reason, payload, true)
}

func (s *Store) insertRejected(ctx context.Context, taskType, taskID, queue, reason string, payload []byte, keep bool) (int64, error) {
	sum := sha256.Sum256(payload)
	taskType, taskID, queue, reason = cleanText(taskType), cleanText(taskID), cleanText(queue), cleanText(reason)
	var kept []byte // NULL unless kept
	if keep {
		kept = append([]byte{}, payload...) // an empty payload is kept as empty, not NULL
	}
	var id int64
	err := s.q.QueryRow(ctx, `INSERT INTO herald.rejected_tasks (task_type, task_id, queue, reason, payload_size, payload_sha256, payload)
		VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`,
		taskType, taskID, queue, reason, len(payload), hex.EncodeToString(sum[:]), kept).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("record rejected %s task %s: %w", taskType, taskID, err)
	}
	return id, nil
}

// cleanText makes s storable as PostgreSQL text: invalid UTF-8 and NUL bytes become "?".
func cleanText(s string) string { return strings.ReplaceAll(strings.ToValidUTF8(s, "?"), "\x00", "?") }

// ListRejectedTasks returns the newest rejected tasks first.
func (s *Store) ListRejectedTasks(ctx context.Context, limit int) ([]RejectedTask, error) {
	rows, err := s.q.Query(ctx, `SELECT id, task_type, task_id, queue, reason, payload_size, payload_sha256,
		payload IS NOT NULL, created_at FROM herald.rejected_tasks ORDER BY id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []RejectedTask
	for rows.Next() {
		var t RejectedTask
		if err := rows.Scan(&t.ID, &t.TaskType, &t.TaskID, &t.Queue, &t.Reason, &t.PayloadSize, &t.PayloadSHA256,
			&t.Requeueable, &t.CreatedAt); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// TakeRejectedPayload hands the kept payload of rejected task id to requeue, and deletes the
// row if requeue returns nil. The row is locked and deleted in a transaction that commits only
// after requeue succeeded: a failed requeue leaves the row in place, and two operators taking the
// same row at once requeue it once (the second waits for the first, then finds no row). A row
// that is gone is ErrNotFound; one that kept no payload is ErrNoPayload, and stays.
//
// The store's Querier must be able to begin a transaction (a pool, a connection, or a pgx.Tx,
// where it is a savepoint).
func (s *Store) TakeRejectedPayload(ctx context.Context, id int64, requeue func(t RejectedTask, payload []byte) error) error {
	b, ok := s.q.(interface {
		Begin(ctx context.Context) (pgx.Tx, error)
	})
	if !ok {
		return fmt.Errorf("take rejected task %d: the store's %T cannot begin a transaction; use a pool", id, s.q)
	}
	tx, err := b.Begin(ctx)
	if err != nil {
		return fmt.Errorf("take rejected task %d: %w", id, err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck // after Commit it is a no-op
	var t RejectedTask
	var payload []byte
	err = tx.QueryRow(ctx, `SELECT id, task_type, task_id, queue, reason, payload_size, payload_sha256, created_at, payload
		FROM herald.rejected_tasks WHERE id = $1 FOR UPDATE`, id).
		Scan(&t.ID, &t.TaskType, &t.TaskID, &t.Queue, &t.Reason, &t.PayloadSize, &t.PayloadSHA256, &t.CreatedAt, &payload)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("rejected task %d: %w", id, ErrNotFound)
	case err != nil:
		return fmt.Errorf("take rejected task %d: %w", id, err)
	case payload == nil:
		return fmt.Errorf("rejected task %d: %w", id, ErrNoPayload)
	}
	t.Requeueable = true
	if err := requeue(t, payload); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM herald.rejected_tasks WHERE id = $1`, id); err != nil {
		return fmt.Errorf("rejected task %d was enqueued again but its row could not be deleted: %w", id, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("rejected task %d was enqueued again but its row could not be deleted: %w", id, err)
	}
	return nil
}

// heldPayloadsExpiredSQL drops the kept payloads of up to $2 held tasks of queue $3 (or "") held
// longer than $1 ago, recording why in their reason.
var heldPayloadsExpiredSQL = `WITH ` + queueBranches("old", "id, created_at", "rejected_tasks", "$3",
	"payload IS NOT NULL AND created_at < now() - $1::interval", "created_at", "$2") + `
	UPDATE herald.rejected_tasks SET payload = NULL,
		reason = reason || ' [payload dropped after ' || $4 || ' (HERALD_SECRET_RETENTION): it may hold sealed secrets; nothing is left to requeue]'
	WHERE id = ANY (ARRAY(SELECT id FROM old))`

// DropExpiredHeldPayloads drops the kept payloads of up to limit tasks of queue (and of no known
// queue) held longer than retention ago — the secret retention: a payload may hold sealed
// secrets, which Herald keeps no longer than that anywhere — and returns how many it dropped. The
// rows stay, with their size, digest and reason, until the rejected-task retention.
func (s *Store) DropExpiredHeldPayloads(ctx context.Context, queue string, retention time.Duration, limit int) (int64, error) {
	if queue == "" {
		return 0, fmt.Errorf("drop expired held payloads: %w", errNoQueue)
	}
	tag, err := s.q.Exec(ctx, heldPayloadsExpiredSQL, retention, limit, queue, retention.String())
	if err != nil {
		return 0, fmt.Errorf("drop held payloads of queue %q older than %v: %w", queue, retention, err)
	}
	return tag.RowsAffected(), nil
}
