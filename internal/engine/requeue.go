package engine

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/hibiken/asynq"

	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/tasks"
)

// A task whose payload has a newer major version than this worker understands belongs to a
// newer release of Herald (a rolling deploy: newer producers or workers are already running).
// The worker hands it back to asynq, so a newer worker on the same queue can take it; the retries
// count as failures, so asynq's retry limit bounds them, and they are spread so that together
// they last about Config.NewerPayloadFor. On the try before the last the task is held: recorded
// in herald.rejected_tasks with its payload kept, then revoked. The last try is the spare: a
// worker killed while holding (asynq archives a task whose lease expires on its last try, and
// its archive is capped) leaves one more try to hold it, and the hold is idempotent. A hold that
// fails is retried without using up a retry (holdFailed). Client.RequeueRejected enqueues the
// task again once the fleet is upgraded.

// newerPayloadRetry hands a task of a newer payload version back to asynq. Unlike waitDBError it
// counts as a failure: asynq's retry count is what ends the wait.
type newerPayloadRetry struct {
	err      *tasks.NewerPayloadError
	delay    time.Duration
	retried  int
	maxRetry int
}

func (e *newerPayloadRetry) Error() string {
	return fmt.Sprintf("waiting for a worker that understands it (retry %d of %d in %v): %v",
		e.retried+1, e.maxRetry, e.delay.Round(time.Millisecond), e.err)
}

func (e *newerPayloadRetry) Unwrap() error { return e.err }

// holdFailed hands a newer payload's task back to asynq when holding it failed (PostgreSQL
// refused or timed out): not a failure, so the hold is tried again however often it fails and
// the task, whose payload exists nowhere else, is never archived for it.
type holdFailed struct {
	err   error
	delay time.Duration
}

func (e *holdFailed) Error() string {
	return fmt.Sprintf("could not keep the task for a newer worker (retry in %v): %v", e.delay.Round(time.Millisecond), e.err)
}

func (e *holdFailed) Unwrap() error { return e.err }

// holdNewer answers a task whose payload is newer than this worker understands: handed back to
// asynq while it has more than one retry left, held in herald.rejected_tasks with its payload on
// the try before the last (the last is the spare, see above). A task allowed no retries
// (asynq.MaxRetry(0); Herald's producers set AsynqRetries, 8 by default) is held at once, as is
// one run outside an asynq server: if that hold fails, asynq archives the task.
func (w *Worker) holdNewer(ctx context.Context, t *asynq.Task, newer *tasks.NewerPayloadError) error {
	w.metrics.newerPayloads.WithLabelValues(t.Type()).Inc()
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	if retried < newerPayloadWaits(maxRetry) {
		return &newerPayloadRetry{err: newer, delay: w.newerPayloadDelay(maxRetry), retried: retried, maxRetry: maxRetry}
	}
	id, _ := asynq.GetTaskID(ctx)
	q, _ := asynq.GetQueueName(ctx)
	waited := "at once (the task allows no retries)"
	if maxRetry > 0 {
		waited = fmt.Sprintf("in about %v (%d tries)", w.newerPayloadDelay(maxRetry)*time.Duration(retried), retried+1)
	}
	reason := fmt.Sprintf("payload version %d is newer than this worker understands (version %d) and no worker that "+
		"understands it took the task %s; the payload is kept for HERALD_SECRET_RETENTION (it may hold sealed "+
		"secrets): `enqueue rejected requeue ID` (this row's id) re-enqueues it once the fleet is upgraded",
		newer.Version, newer.Understood, waited)
	rowID, err := w.store.HoldRejectedTask(holdContext(ctx), t.Type(), id, q, reason, t.Payload())
	if err != nil {
		return &holdFailed{err: fmt.Errorf("keep the %s task of payload version %d in herald.rejected_tasks: %w",
			t.Type(), newer.Version, err), delay: w.backoff.Delay(retried + 1)}
	}
	w.metrics.rejected.WithLabelValues(t.Type()).Inc()
	w.log.Warn().Str("task_type", t.Type()).Str("task_id", id).Int64("rejected_id", rowID).
		Int("payload_version", newer.Version).Int("understood_version", newer.Understood).
		Msg("no worker that understands this payload version took the task; kept in herald.rejected_tasks: " +
			"upgrade the fleet, then run `enqueue rejected requeue " + strconv.FormatInt(rowID, 10) + "`")
	return asynq.RevokeTask
}

// holdContext bounds the hold to half the time the task has left: a hold stuck behind a lock
// must fail as holdFailed, which asynq does not count, and not as the task's own deadline, which
// it counts (and, on the last try, archives the task for).
func holdContext(ctx context.Context) context.Context {
	deadline, ok := ctx.Deadline()
	if !ok {
		return ctx
	}
	hctx, cancel := context.WithTimeout(ctx, time.Until(deadline)/2)
	context.AfterFunc(hctx, cancel) // released when it expires or the task ends
	return hctx
}

// CheckAsynqRetries refuses a retry count that leaves a newer payload no retry to wait with
// and none spare (0 means the default, 8).
func CheckAsynqRetries(n int) error {
	if n == 1 || n < 0 {
		return fmt.Errorf("asynq retries %d: a task of a newer payload version waits with every retry but the last, kept spare; allow at least 2", n)
	}
	return nil
}

// newerPayloadWaits is how many of a task's maxRetry retries are spent waiting for a newer
// worker: all but the spare last one.
func newerPayloadWaits(maxRetry int) int {
	return max(maxRetry-1, 0)
}

// newerPayloadDelay spreads a newer payload's waiting retries over NewerPayloadFor.
func (w *Worker) newerPayloadDelay(maxRetry int) time.Duration {
	return w.cfg.NewerPayloadFor / time.Duration(max(newerPayloadWaits(maxRetry), 1))
}

// NoPayloadError is returned by RequeueRejected for a rejected task that kept no payload.
type NoPayloadError struct {
	ID int64 // the rejected task's id
}

func (e *NoPayloadError) Error() string {
	return fmt.Sprintf("rejected task %d kept no payload: it was malformed or named a dispatch or receipt that does "+
		"not exist, there is nothing to requeue", e.ID)
}

// RequeueRejected enqueues the kept payload of rejected task id again — a task held back for a
// newer worker, once the fleet is upgraded — and returns the new task's id. It is enqueued with
// its task type on the queue it was rejected from (the client's queue if none was recorded), with
// the client's retries and timeout, under a new task id; the row is deleted only once the task is
// enqueued. A row that kept no payload is a *NoPayloadError; a missing one wraps
// ledger.ErrNotFound. It needs both Redis and PostgreSQL (Config.Redis and Config.DB).
func (c *Client) RequeueRejected(ctx context.Context, id int64) (string, error) {
	if c.client == nil || c.cfg.DB == nil {
		return "", errors.New("herald client: RequeueRejected needs Redis and PostgreSQL (HERALD_REDIS_URL and HERALD_DATABASE_URL)")
	}
	var taskID string
	err := ledger.New(c.cfg.DB).TakeRejectedPayload(ctx, id, func(rt ledger.RejectedTask, payload []byte) error {
		if rt.TaskType != tasks.TypeDispatch && rt.TaskType != tasks.TypeDeliver {
			return fmt.Errorf("rejected task %d has task type %q, which Herald does not enqueue", id, rt.TaskType)
		}
		taskID = requeuedTaskID(rt)
		t := asynq.NewTask(rt.TaskType, payload, asynq.TaskID(taskID), asynq.Queue(cmpOr(rt.Queue, c.cfg.Queue)),
			asynq.MaxRetry(c.cfg.AsynqRetries), asynq.Timeout(c.cfg.TaskTimeout))
		_, err := c.client.EnqueueContext(ctx, t)
		if errors.Is(err, asynq.ErrTaskIDConflict) {
			return nil // an earlier requeue of this row enqueued it, then failed to delete the row
		}
		if err != nil {
			return fmt.Errorf("requeue rejected task %d: enqueue: %w", id, err)
		}
		return nil
	})
	if errors.Is(err, ledger.ErrNoPayload) {
		return "", &NoPayloadError{ID: id}
	}
	if err != nil {
		return "", err
	}
	return taskID, nil
}

// requeuedTaskID names the task that requeues rejected task rt: its old id, for whoever follows
// it in logs, and the row's id, which is never reused (so the id is new to asynq).
func requeuedTaskID(rt ledger.RejectedTask) string {
	if rt.TaskID == "" {
		return "requeued:" + strconv.FormatInt(rt.ID, 10)
	}
	return rt.TaskID + ":requeued:" + strconv.FormatInt(rt.ID, 10)
}
