package engine_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/heraldhq/herald/internal/engine"
	"github.com/heraldhq/herald/tasks"
)

// TestFailedHoldIsRetriedNotArchived: a newer payload whose hold fails (herald.rejected_tasks
// locked past the task's timeout) is tried again without using up its retries, and held once
// the table is free. It was archived in asynq — its payload in the capped archive only, no row
// anywhere — when the hold failed on the task's last try.
func TestFailedHoldIsRetriedNotArchived(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *engine.Config) { c.NewerPayloadFor = 100 * time.Millisecond })).start()
	ctx := t.Context()
	locker, err := b.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = locker.Rollback(ctx) }()
	if _, err := locker.Exec(ctx, "LOCK TABLE herald.rejected_tasks IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	payload := fixture(t, "dispatch_v2.json")
	b.enqueueRaw(t, tasks.TypeDispatch, "v2-locked", payload, asynq.MaxRetry(2), asynq.Timeout(2*time.Second))
	insp := asynq.NewInspector(b.redis)
	defer insp.Close()
	waitFor(t, 30*time.Second, "a hold to fail behind the lock", func() bool {
		info, err := insp.GetTaskInfo(b.queue, "v2-locked")
		return err == nil && strings.Contains(info.LastErr, "could not keep the task") || err == nil && info.State == asynq.TaskStateArchived
	})
	if err := locker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "the task to be held", func() bool {
		rows, _ := b.store.ListRejectedTasks(ctx, 10)
		_, err := insp.GetTaskInfo(b.queue, "v2-locked")
		return len(rows) == 1 && errors.Is(err, asynq.ErrTaskNotFound)
	})
	rows, _ := b.store.ListRejectedTasks(ctx, 10)
	if !rows[0].Requeueable || !bytes.Equal(b.keptPayload(t, rows[0].ID), payload) {
		t.Fatalf("held row %+v does not keep the payload", rows[0])
	}
	if strings.Contains(b.logs.String(), `"level":"error"`) {
		t.Errorf("a failed hold was logged as an error:\n%s", b.logs.String())
	}
}

// TestSweepDropsHeldPayloadsAfterSecretRetention: a held payload (it may hold sealed secrets) is
// kept no longer than HERALD_SECRET_RETENTION; the sweep drops it and the row says so.
func TestSweepDropsHeldPayloadsAfterSecretRetention(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	sealed := "v1.test1.zr9eKmOi4j4KzJlzNBwj0_yFlM0W2s4OinZGfT0LeHvvvWfEjB5S_v1QRlaWQQ"
	payload := []byte(`{"v":2,"dispatch_id":"` + fixtureDispatchID + `","secrets":{"reset_token":"` + sealed + `"}}`)
	if err := tasks.NewServeMux(b.worker).ProcessTask(ctx, asynq.NewTask(tasks.TypeDispatch, payload)); !errors.Is(err, asynq.RevokeTask) {
		t.Fatalf("FanOut = %v, want the task held and revoked", err)
	}
	if _, err := b.pool.Exec(ctx, `UPDATE herald.rejected_tasks SET created_at = now() - interval '30 days'`); err != nil {
		t.Fatal(err)
	}
	b.worker.Sweep(ctx)
	rows, err := b.store.ListRejectedTasks(ctx, 10)
	if err != nil || len(rows) != 1 {
		t.Fatalf("rejected tasks after the sweep: %v (%v)", rows, err)
	}
	if rows[0].Requeueable || bytes.Contains(b.keptPayload(t, rows[0].ID), []byte(sealed)) ||
		!strings.Contains(rows[0].Reason, "HERALD_SECRET_RETENTION") {
		t.Fatalf("30 days after the hold (secret retention 7 days): %+v", rows[0])
	}
}
