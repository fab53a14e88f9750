package engine

import (
	"context"
	"errors"

	"github.com/hibiken/asynq"

	"github.com/heraldhq/herald/tasks"
)

// Undecodable answers a payload tasks.DecodeDispatch or tasks.DecodeDeliver refused: one of a
// newer version waits for a worker that understands it (holdNewer); a malformed one is rejected.
func (w *Worker) Undecodable(ctx context.Context, t *asynq.Task, err error) error {
	var newer *tasks.NewerPayloadError
	if errors.As(err, &newer) {
		return w.holdNewer(ctx, t, newer)
	}
	return w.reject(ctx, t, err.Error())
}

// reject records a task too broken to have a row of its own, then revokes it. Its payload is not
// kept (see ledger.RejectedTask).
func (w *Worker) reject(ctx context.Context, t *asynq.Task, reason string) error {
	id, _ := asynq.GetTaskID(ctx)
	q, _ := asynq.GetQueueName(ctx)
	if err := w.store.RecordRejectedTask(ctx, t.Type(), id, q, reason, t.Payload()); err != nil {
		return err
	}
	w.metrics.rejected.WithLabelValues(t.Type()).Inc()
	w.log.Warn().Str("task_type", t.Type()).Str("task_id", id).Str("reason", reason).Msg("task rejected")
	return asynq.RevokeTask
}

func (w *Worker) rejectID(ctx context.Context, typ, taskID, reason string) error {
	if id, ok := asynq.GetTaskID(ctx); ok {
		taskID = id
	}
	q, _ := asynq.GetQueueName(ctx)
	if err := w.store.RecordRejectedTask(ctx, typ, taskID, q, reason, nil); err != nil {
		return err
	}
	w.metrics.rejected.WithLabelValues(typ).Inc()
	w.log.Warn().Str("task_type", typ).Str("task_id", taskID).Str("reason", reason).Msg("task rejected")
	return asynq.RevokeTask
}
