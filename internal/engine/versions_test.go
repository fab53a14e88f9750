package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/engine"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/tasks"
)

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// fixture reads a payload from tasks/testdata/payloads.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "tasks", "testdata", "payloads", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixtureDispatchID is the dispatch id of the first-sight fixtures (their sealed secret is bound to it).
const fixtureDispatchID = "01a222c4-ded2-7010-bd50-2279530f342e"

// acceptedNow returns a first-sight dispatch fixture accepted now, every other field (unknown
// ones included) as written: the fixture's own accepted_at is long past the event's max age.
func acceptedNow(t testing.TB, name string) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(fixture(t, name), &m); err != nil {
		t.Fatal(err)
	}
	m["accepted_at"], _ = json.Marshal(time.Now().UTC())
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// enqueueRaw enqueues a task with this exact payload on the test's queue.
func (b *bundle) enqueueRaw(t testing.TB, typ, taskID string, payload []byte, opts ...asynq.Option) {
	t.Helper()
	ac := asynq.NewClient(b.redis)
	defer ac.Close()
	opts = append([]asynq.Option{asynq.Queue(b.queue), asynq.TaskID(taskID)}, opts...)
	if _, err := ac.EnqueueContext(t.Context(), asynq.NewTask(typ, payload, opts...)); err != nil {
		t.Fatal(err)
	}
}

// TestFutureMinorPayloadDelivered: a v1 dispatch written by a newer release, with fields this
// worker does not know (top level and inside a reference), is delivered end to end: one email,
// a sent receipt, the producer's sealed secret used, nothing rejected.
func TestFutureMinorPayloadDelivered(t *testing.T) {
	t.Parallel()
	b := setup(t).start()
	b.enqueueRaw(t, tasks.TypeDispatch, tasks.DispatchTaskID(fixtureDispatchID, 0), acceptedNow(t, "dispatch_v1_future_minor.json"))
	waitFor(t, 15*time.Second, "the dispatch to be sent (or rejected)", func() bool {
		if rt, _ := b.store.ListRejectedTasks(t.Context(), 1); len(rt) > 0 {
			t.Fatalf("the payload was rejected: %s", rt[0].Reason)
		}
		for _, r := range b.receipts(fixtureDispatchID) {
			if r.Status == ledger.ReceiptSent {
				return true
			}
		}
		return false
	})
	b.waitIdle()
	msgs := b.smtp.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d emails, want 1", len(msgs))
	}
	if !strings.Contains(msgs[0].Text, "tok-fixture-secret") {
		t.Errorf("the producer's sealed reset token is not in the email:\n%s", msgs[0].Text)
	}
	if rt, _ := b.store.ListRejectedTasks(t.Context(), 10); len(rt) != 0 {
		t.Fatalf("rejected: %+v", rt)
	}
}

// TestFutureMinorDeliverPayloadDelivered: the same for a herald:deliver task.
func TestFutureMinorDeliverPayloadDelivered(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *engine.Config) {
		c.DisableInline = true
		c.RequeueAfter = time.Hour // the promoter leaves the receipt to the task below
	}))
	id := b.dispatchTx(t, "42")
	b.fanOutNow(t, id) // enqueues the deliver task; the worker is not running yet
	r := b.receipts(id)[0]
	// The task a newer release wrote takes the place of the one this release wrote.
	taskID := tasks.DeliverTaskID(r.ID, r.Attempt)
	insp := asynq.NewInspector(b.redis)
	defer insp.Close()
	if err := insp.DeleteTask(b.queue, taskID); err != nil {
		t.Fatalf("delete the fan-out's deliver task %s: %v", taskID, err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(fixture(t, "deliver_v1_future_minor.json"), &m); err != nil {
		t.Fatal(err)
	}
	m["receipt_id"], _ = json.Marshal(r.ID)
	m["attempt"], _ = json.Marshal(r.Attempt)
	b.enqueueRaw(t, tasks.TypeDeliver, taskID, []byte(mustJSON(t, m)))
	b.start()
	b.waitReceipt(id, ledger.ReceiptSent, 15*time.Second)
	b.waitIdle()
	if n := len(b.smtp.Messages()); n != 1 {
		t.Fatalf("%d emails, want 1", n)
	}
	if rt, _ := b.store.ListRejectedTasks(t.Context(), 10); len(rt) != 0 {
		t.Fatalf("rejected: %+v", rt)
	}
}

// keptPayload reads the payload kept in rejected task row id (nil when none was kept).
func (b *bundle) keptPayload(t testing.TB, id int64) []byte {
	t.Helper()
	var p []byte
	if err := b.pool.QueryRow(t.Context(), `SELECT payload FROM herald.rejected_tasks WHERE id = $1`, id).Scan(&p); err != nil {
		t.Fatal(err)
	}
	return p
}

// newerWorker is a test stand-in for a worker of the next release: an asynq server on the
// test's queue that understands payload version 2 and reports every task it takes.
func (b *bundle) newerWorker(t testing.TB) <-chan *asynq.Task {
	t.Helper()
	taken := make(chan *asynq.Task, 10)
	handle := func(_ context.Context, task *asynq.Task) error {
		var env struct{ V int }
		if err := json.Unmarshal(task.Payload(), &env); err != nil || env.V != 2 {
			t.Errorf("the newer worker got a payload it was not written for: %s", task.Payload())
		}
		taken <- task
		return nil
	}
	mux := asynq.NewServeMux()
	mux.HandleFunc(tasks.TypeDispatch, handle)
	mux.HandleFunc(tasks.TypeDeliver, handle)
	srv := asynq.NewServer(b.redis, asynq.Config{Queues: map[string]int{b.queue: 1}, Concurrency: 2,
		TaskCheckInterval: 50 * time.Millisecond, DelayedTaskCheckInterval: 200 * time.Millisecond, LogLevel: asynq.ErrorLevel})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return taken
}

// TestNewerPayloadHeldThenRequeued: a v2 task (dispatch and deliver) is not rejected on sight: it
// is retried for about NewerPayloadFor (warn-level logs naming the versions, counted), then held
// in herald.rejected_tasks with its payload and a reason, never delivered and never logged as an
// error. Once the fleet is upgraded, RequeueRejected hands the kept payload to a newer worker and
// the row is gone.
func TestNewerPayloadHeldThenRequeued(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	b := setup(t, withMetrics(reg), withConfig(func(c *engine.Config) {
		c.NewerPayloadFor = time.Second // two retries half a second apart
	}))
	if got := countersBy(t, reg, "herald_newer_payloads_total", "task_type"); len(got) != 2 || got[tasks.TypeDispatch] != 0 || got[tasks.TypeDeliver] != 0 {
		t.Fatalf("herald_newer_payloads_total at start-up: %v, want both task types at 0", got)
	}
	b.start()
	payloads := map[string][]byte{tasks.TypeDispatch: fixture(t, "dispatch_v2.json"), tasks.TypeDeliver: fixture(t, "deliver_v2.json")}
	for typ, p := range payloads {
		b.enqueueRaw(t, typ, "v2-"+typ, p, asynq.MaxRetry(3)) // two retries waiting, the third the spare
	}
	var rows []ledger.RejectedTask
	waitFor(t, 30*time.Second, "both v2 tasks to be held", func() bool {
		rows, _ = b.store.ListRejectedTasks(t.Context(), 10)
		return len(rows) == 2
	})
	b.waitIdle()
	for _, r := range rows {
		if !r.Requeueable || r.Queue != b.queue || r.TaskID != "v2-"+r.TaskType {
			t.Errorf("held row %+v", r)
		}
		for _, want := range []string{"payload version 2 is newer than this worker understands (version 1)", "3 tries",
			"enqueue rejected requeue ID"} {
			if !strings.Contains(r.Reason, want) {
				t.Errorf("%s: reason %q does not say %q", r.TaskType, r.Reason, want)
			}
		}
		if kept := b.keptPayload(t, r.ID); !bytes.Equal(kept, payloads[r.TaskType]) {
			t.Errorf("%s: kept payload %q, want %q", r.TaskType, kept, payloads[r.TaskType])
		}
	}
	// Three runs each: two handed back to asynq, the last one held.
	if got := countersBy(t, reg, "herald_newer_payloads_total", "task_type"); got[tasks.TypeDispatch] != 3 || got[tasks.TypeDeliver] != 3 {
		t.Errorf("herald_newer_payloads_total = %v, want 3 runs of each task type", got)
	}
	logs := b.logs.String()
	if strings.Contains(logs, `"level":"error"`) {
		t.Errorf("a newer payload was logged as an error:\n%s", logs)
	}
	if !strings.Contains(logs, `"payload_version":2`) || !strings.Contains(logs, `"understood_version":1`) ||
		!strings.Contains(logs, "handed back to asynq for a newer worker") {
		t.Errorf("the retries were not logged with the versions:\n%s", logs)
	}
	if n := len(b.smtp.Messages()); n != 0 {
		t.Fatalf("%d emails sent", n)
	}
	var dispatches int
	if err := b.pool.QueryRow(t.Context(), `SELECT count(*) FROM herald.dispatches`).Scan(&dispatches); err != nil || dispatches != 0 {
		t.Fatalf("a v2 dispatch was recorded by a v1 worker: %d rows (%v)", dispatches, err)
	}

	// The fleet is upgraded: the old worker stops, a newer one runs, the operator requeues.
	b.worker.Shutdown()
	taken := b.newerWorker(t)
	c := b.requeueClient(t)
	requeued := map[string]bool{}
	for _, r := range rows {
		taskID, err := c.RequeueRejected(t.Context(), r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if taskID == r.TaskID || requeued[taskID] {
			t.Errorf("requeue of %d reused task id %q", r.ID, taskID)
		}
		requeued[taskID] = true
	}
	for range rows {
		select {
		case task := <-taken:
			if !bytes.Equal(task.Payload(), payloads[task.Type()]) {
				t.Errorf("the newer worker got %s %q, want %q", task.Type(), task.Payload(), payloads[task.Type()])
			}
			delete(payloads, task.Type())
		case <-time.After(30 * time.Second):
			t.Fatal("timed out waiting for the newer worker to take the requeued tasks")
		}
	}
	if rt, _ := b.store.ListRejectedTasks(t.Context(), 10); len(rt) != 0 {
		t.Fatalf("rows left after requeue: %+v", rt)
	}
	if _, err := c.RequeueRejected(t.Context(), rows[0].ID); !errors.Is(err, ledger.ErrNotFound) {
		t.Fatalf("second requeue of %d: %v, want ledger.ErrNotFound", rows[0].ID, err)
	}
}

// requeueClient is a producer client with PostgreSQL, as RequeueRejected needs.
func (b *bundle) requeueClient(t testing.TB) *engine.Client {
	t.Helper()
	c, err := engine.NewClient(engine.Config(herald.Config{Redis: b.redis, DB: b.pool, SecretKeys: secretKeys, Queue: b.queue}.WithDefaults()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestNewerWorkerTakesRetriedPayload: while an old worker retries a v2 task, a newer worker on
// the same queue takes it; nothing is held.
func TestNewerWorkerTakesRetriedPayload(t *testing.T) {
	t.Parallel()
	// Retries half a second apart, far fewer than the retries allow: the old worker never holds it.
	b := setup(t, withConfig(func(c *engine.Config) { c.NewerPayloadFor = 500 * time.Second })).start()
	payload := fixture(t, "dispatch_v2.json")
	b.enqueueRaw(t, tasks.TypeDispatch, "v2-rolling", payload, asynq.MaxRetry(1000))
	insp := asynq.NewInspector(b.redis)
	defer insp.Close()
	waitFor(t, 15*time.Second, "the old worker to hand the task back to asynq", func() bool {
		info, err := insp.GetTaskInfo(b.queue, "v2-rolling")
		return err == nil && info.Retried >= 1
	})
	taken := b.newerWorker(t)
	select {
	case task := <-taken:
		if !bytes.Equal(task.Payload(), payload) {
			t.Fatalf("the newer worker got %q, want %q", task.Payload(), payload)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("timed out waiting for the newer worker to take the task")
	}
	b.waitIdle()
	if rt, _ := b.store.ListRejectedTasks(t.Context(), 10); len(rt) != 0 {
		t.Fatalf("held or rejected although a newer worker took it: %+v", rt)
	}
	if logs := b.logs.String(); strings.Contains(logs, `"level":"error"`) {
		t.Errorf("error-level log:\n%s", logs)
	}
}

// TestNewerPayloadWithoutRetriesHeldAtOnce: a task that allows no retries (Herald's producers
// always set some) is held on its first run, payload kept.
func TestNewerPayloadWithoutRetriesHeldAtOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	payload := fixture(t, "deliver_v2.json")
	// Outside an asynq server there is no retry to wait for either.
	if err := tasks.NewServeMux(b.worker).ProcessTask(t.Context(), asynq.NewTask(tasks.TypeDeliver, payload)); !errors.Is(err, asynq.RevokeTask) {
		t.Fatalf("Deliver = %v, want asynq.RevokeTask", err)
	}
	rt, err := b.store.ListRejectedTasks(t.Context(), 10)
	if err != nil || len(rt) != 1 || !rt[0].Requeueable || !strings.Contains(rt[0].Reason, "at once") {
		t.Fatalf("rows %+v (%v)", rt, err)
	}
	if kept := b.keptPayload(t, rt[0].ID); !bytes.Equal(kept, payload) {
		t.Fatalf("kept %q", kept)
	}
}

// TestRequeueRejectedRefusals: a malformed payload is rejected without its payload, and requeuing
// it is a *NoPayloadError that leaves the row; a requeue whose enqueue fails leaves the row too.
func TestRequeueRejectedRefusals(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := t.Context()
	if err := tasks.NewServeMux(b.worker).ProcessTask(ctx, asynq.NewTask(tasks.TypeDispatch, []byte(`{"dispatch_id":"`+fixtureDispatchID+`"}`))); !errors.Is(err, asynq.RevokeTask) {
		t.Fatalf("FanOut = %v, want asynq.RevokeTask", err)
	}
	if err := tasks.NewServeMux(b.worker).ProcessTask(ctx, asynq.NewTask(tasks.TypeDispatch, fixture(t, "dispatch_v2.json"))); !errors.Is(err, asynq.RevokeTask) {
		t.Fatalf("FanOut = %v, want asynq.RevokeTask", err)
	}
	rt, err := b.store.ListRejectedTasks(ctx, 10)
	if err != nil || len(rt) != 2 {
		t.Fatalf("rows %+v (%v)", rt, err)
	}
	held, malformed := rt[0], rt[1] // newest first
	if malformed.Requeueable || !strings.Contains(malformed.Reason, "no payload version") || b.keptPayload(t, malformed.ID) != nil {
		t.Fatalf("malformed row %+v", malformed)
	}
	c := b.requeueClient(t)
	_, err = c.RequeueRejected(ctx, malformed.ID)
	var np *engine.NoPayloadError
	if !errors.As(err, &np) || np.ID != malformed.ID || !strings.Contains(err.Error(), "kept no payload") {
		t.Fatalf("requeue of a malformed row: %v, want a *NoPayloadError", err)
	}

	// Redis refuses: the held row stays, payload and all.
	down, err := engine.NewClient(engine.Config(herald.Config{Redis: asynq.RedisClientOpt{Addr: "127.0.0.1:1"}, DB: b.pool, SecretKeys: secretKeys}.WithDefaults()))
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	if _, err := down.RequeueRejected(ctx, held.ID); err == nil {
		t.Fatal("requeue through an unreachable Redis succeeded")
	}
	if rt, _ := b.store.ListRejectedTasks(ctx, 10); len(rt) != 2 || b.keptPayload(t, held.ID) == nil {
		t.Fatalf("a failed requeue changed the rows: %+v", rt)
	}
}

// TestNewerPayloadRetriesSpanNewerPayloadFor: the retries of a newer payload are spread over
// NewerPayloadFor: with five retries allowed (four spent waiting, the last one the spare) and an
// hour to wait, the next try is 15 minutes out.
func TestNewerPayloadRetriesSpanNewerPayloadFor(t *testing.T) {
	t.Parallel()
	b := setup(t, withConfig(func(c *engine.Config) { c.NewerPayloadFor = time.Hour })).start()
	b.enqueueRaw(t, tasks.TypeDeliver, "v2-spread", fixture(t, "deliver_v2.json"), asynq.MaxRetry(5))
	insp := asynq.NewInspector(b.redis)
	defer insp.Close()
	var info *asynq.TaskInfo
	waitFor(t, 15*time.Second, "the worker to hand the task back to asynq", func() bool {
		var err error
		info, err = insp.GetTaskInfo(b.queue, "v2-spread")
		return err == nil && info.State == asynq.TaskStateRetry
	})
	if in := time.Until(info.NextProcessAt); in < 14*time.Minute || in > 15*time.Minute {
		t.Fatalf("next try in %v, want 15m (NewerPayloadFor / (MaxRetry-1))", in)
	}
	if info.Retried != 1 || !strings.Contains(info.LastErr, "payload version 2 is newer") {
		t.Fatalf("retried %d, last error %q", info.Retried, info.LastErr)
	}
}
