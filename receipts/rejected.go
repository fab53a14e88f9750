package receipts

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// RejectedTask is a task too broken to have a dispatch or receipt of its own (a malformed
// payload, a receipt id that does not exist). The payload itself is not kept — it may hold
// anything — only its size and digest.
type RejectedTask struct {
	ID            int64
	TaskType      string
	TaskID        string
	Queue         string
	Reason        string
	PayloadSize   int
	PayloadSHA256 string
	CreatedAt     time.Time
}

// RecordRejectedTask stores a rejected task.
func (s *Store) RecordRejectedTask(ctx context.Context, taskType, taskID, queue, reason string, payload []byte) error {
	sum := sha256.Sum256(payload)
	clean := func(s string) string { return strings.ReplaceAll(strings.ToValidUTF8(s, "?"), "\x00", "?") }
	taskType, taskID, queue, reason = clean(taskType), clean(taskID), clean(queue), clean(reason)
	_, err := s.q.Exec(ctx, `INSERT INTO herald.rejected_tasks (task_type, task_id, queue, reason, payload_size, payload_sha256)
		VALUES ($1, $2, $3, $4, $5, $6)`, taskType, taskID, queue, reason, len(payload), hex.EncodeToString(sum[:]))
	if err != nil {
		return fmt.Errorf("record rejected %s task %s: %w", taskType, taskID, err)
	}
	return nil
}

// ListRejectedTasks returns the newest rejected tasks first.
func (s *Store) ListRejectedTasks(ctx context.Context, limit int) ([]RejectedTask, error) {
	rows, err := s.q.Query(ctx, `SELECT id, task_type, task_id, queue, reason, payload_size, payload_sha256, created_at
		FROM herald.rejected_tasks ORDER BY id DESC LIMIT $1`, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []RejectedTask
	for rows.Next() {
		var t RejectedTask
		if err := rows.Scan(&t.ID, &t.TaskType, &t.TaskID, &t.Queue, &t.Reason, &t.PayloadSize, &t.PayloadSHA256, &t.CreatedAt); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}
