package ledger_test

import (
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/testenv"
)

// TestHoldRejectedTaskIsIdempotent: the same task (queue, task id, payload) held twice — its
// worker killed after the hold, the spare try holding it again — is one row; another payload,
// another queue or no task id at all is another row.
func TestHoldRejectedTaskIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := testenv.DB(t)
	s := ledger.New(pool)
	hold := func(taskID, queue, payload string) int64 {
		t.Helper()
		id, err := s.HoldRejectedTask(ctx, "herald:dispatch", taskID, queue, "newer", []byte(payload))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	first := hold("t1", "q", `{"v":2}`)
	if again := hold("t1", "q", `{"v":2}`); again != first {
		t.Fatalf("the same task held twice: rows %d and %d", first, again)
	}
	others := map[int64]bool{first: true}
	for _, id := range []int64{hold("t1", "q", `{"v":2,"x":1}`), hold("t1", "q2", `{"v":2}`), hold("", "q", `{"v":2}`), hold("", "q", `{"v":2}`)} {
		if others[id] {
			t.Fatalf("a different task shares row %d", id)
		}
		others[id] = true
	}
	// A row whose payload was dropped is no longer the held task: holding it again keeps it anew.
	if _, err := pool.Exec(ctx, `UPDATE herald.rejected_tasks SET payload = NULL WHERE id = $1`, first); err != nil {
		t.Fatal(err)
	}
	if again := hold("t1", "q", `{"v":2}`); again == first {
		t.Fatal("a row without its payload was taken for the held task")
	}
}

// TestHeldPayloadsDroppedAfterSecretRetention: a held payload may hold sealed secrets, so it is
// kept no longer than the secret retention: older ones are dropped (the row stays, saying why),
// newer ones and other queues' are left.
func TestHeldPayloadsDroppedAfterSecretRetention(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := testenv.DB(t)
	s := ledger.New(pool)
	var old, young, other int64
	for _, h := range []struct {
		id    *int64
		queue string
		age   time.Duration
	}{{&old, "q", 8 * 24 * time.Hour}, {&young, "q", time.Hour}, {&other, "q2", 8 * 24 * time.Hour}} {
		id, err := s.HoldRejectedTask(ctx, "herald:dispatch", "t"+h.age.String(), h.queue, "newer", []byte(`{"v":2,"secrets":{"k":"v1.sealed"}}`))
		if err != nil {
			t.Fatal(err)
		}
		*h.id = id
		if _, err := pool.Exec(ctx, `UPDATE herald.rejected_tasks SET created_at = now() - $2::interval WHERE id = $1`, id, h.age); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.DropExpiredHeldPayloads(ctx, "q", 7*24*time.Hour, 100)
	if err != nil || n != 1 {
		t.Fatalf("DropExpiredHeldPayloads = %d, %v; want 1", n, err)
	}
	rows, err := s.ListRejectedTasks(ctx, 10)
	if err != nil || len(rows) != 3 {
		t.Fatalf("rejected tasks: %d rows (%v), want 3", len(rows), err)
	}
	for _, r := range rows {
		switch r.ID {
		case old:
			if r.Requeueable || !strings.Contains(r.Reason, "payload dropped after 168h0m0s (HERALD_SECRET_RETENTION)") {
				t.Errorf("the expired hold: requeueable %v, reason %q", r.Requeueable, r.Reason)
			}
		case young, other:
			if !r.Requeueable {
				t.Errorf("hold %d (queue %s) lost its payload", r.ID, r.Queue)
			}
		}
	}
}

// TestHoldWithUncleanTaskID: a task id or queue holding a NUL byte or invalid UTF-8 (asynq
// accepts NUL in ids), which PostgreSQL refuses as text, is held all the same — as
// RecordRejectedTask keeps it, cleaned — and holding it again finds that row. The lookup of
// the idempotent hold sent the raw id, failed on every try, and the task was never kept.
func TestHoldWithUncleanTaskID(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := ledger.New(testenv.DB(t))
	for _, c := range []struct{ taskID, queue string }{{"t\x00x", "q"}, {"t\xffx", "q"}, {"t", "q\x00"}, {"t2", "q\xff"}} {
		first, err := s.HoldRejectedTask(ctx, "herald:dispatch", c.taskID, c.queue, "newer", []byte(`{"v":2}`))
		if err != nil {
			t.Fatalf("hold of task %q in queue %q: %v", c.taskID, c.queue, err)
		}
		again, err := s.HoldRejectedTask(ctx, "herald:dispatch", c.taskID, c.queue, "newer", []byte(`{"v":2}`))
		if err != nil || again != first {
			t.Fatalf("second hold of task %q in queue %q: row %d (%v), want %d", c.taskID, c.queue, again, err, first)
		}
	}
}
