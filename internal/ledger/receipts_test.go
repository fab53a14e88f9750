package ledger_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/events"
	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/ledger/ledgertest"
	"github.com/heraldhq/herald/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func newID() string { return uuid.Must(uuid.NewV7()).String() }

func insertDispatch(t *testing.T, s *ledger.Store, key, fp string) string {
	t.Helper()
	id := newID()
	res, err := s.InsertDispatch(t.Context(), ledger.NewDispatch{ID: id, EventID: "a.b", IdempotencyKey: key, Fingerprint: fp,
		Refs: []events.Ref{{Name: "user", Resource: "users", ID: "1"}}, Vars: json.RawMessage(`{"n": 1.50}`)}, time.Hour)
	if err != nil || res.Outcome != ledger.Inserted {
		t.Fatalf("insert: %+v %v", res, err)
	}
	return id
}

func insertReceipt(t *testing.T, s *ledger.Store, dispatchID string, due time.Time) string {
	t.Helper()
	id := newID()
	if err := s.InsertReceipts(t.Context(), []ledger.NewReceipt{{ID: id, DispatchID: dispatchID, EventID: "a.b",
		ChannelKey: "email", Transport: "email", RecipientID: "1", Recipient: ledger.Recipient{Address: "a@example.net"},
		MaxAttempts: 3, DueAt: due, ExpiresAt: due.Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestTransitionTableWalk puts a row in every state and tries every move; the database must
// accept exactly the moves the table allows.
func TestTransitionTableWalk(t *testing.T) {
	t.Parallel()
	pool := testenv.DB(t)
	s := ledger.New(pool)
	ctx := t.Context()
	for _, kind := range []ledger.Kind{ledger.KindDispatch, ledger.KindReceipt} {
		for _, from := range ledger.States(kind) {
			for _, to := range ledger.States(kind) {
				did := insertDispatch(t, s, "", "")
				id := did
				table := "herald.dispatches"
				if kind == ledger.KindReceipt {
					id = insertReceipt(t, s, did, time.Now())
					table = "herald.receipts"
				}
				if _, err := pool.Exec(ctx, "UPDATE "+table+" SET status = $2 WHERE id = $1", id, string(from)); err != nil {
					t.Fatal(err)
				}
				err := s.SetStatus(ctx, kind, id, to, "walk")
				allowed := ledger.CanTransition(kind, from, to)
				if allowed && err != nil {
					t.Errorf("%s %s → %s allowed by the table but refused: %v", kind, from, to, err)
				}
				if !allowed && !errors.Is(err, ledger.ErrTransition) {
					t.Errorf("%s %s → %s not in the table but err = %v", kind, from, to, err)
				}
				got, _ := s.Status(ctx, kind, id)
				if want := map[bool]ledger.Status{true: to, false: from}[allowed]; got != want {
					t.Errorf("%s %s → %s: status %s, want %s", kind, from, to, got, want)
				}
			}
		}
	}
	// Every final state is reachable and has no way out; every state is reachable from an initial one.
	for kind, initial := range ledger.InitialStates {
		reach := map[ledger.Status]bool{}
		var walk func(ledger.Status)
		walk = func(s ledger.Status) {
			if reach[s] {
				return
			}
			reach[s] = true
			for _, n := range ledger.Transitions[kind][s] {
				walk(n)
			}
		}
		for _, s := range initial {
			walk(s)
		}
		for _, st := range ledger.States(kind) {
			if !reach[st] {
				t.Errorf("%s state %s is unreachable", kind, st)
			}
		}
	}
}

func TestClaimOutcomesAndFence(t *testing.T) {
	t.Parallel()
	db := testenv.DB(t)
	s := ledger.New(db)
	ctx := t.Context()
	did := insertDispatch(t, s, "", "")
	later := insertReceipt(t, s, did, time.Now().Add(time.Hour))
	if _, out, err := s.ClaimReceipt(ctx, later, time.Minute); err != nil || out != ledger.ClaimNotDue {
		t.Fatalf("future receipt: %v %v", out, err)
	}
	if _, out, err := s.ClaimReceipt(ctx, newID(), time.Minute); err != nil || out != ledger.ClaimMissing {
		t.Fatalf("missing receipt: %v %v", out, err)
	}
	id := insertReceipt(t, s, insertDispatch(t, s, "", ""), time.Now().Add(-time.Second))
	c, out, err := s.ClaimReceipt(ctx, id, time.Minute)
	if err != nil || out != ledger.Claimed || c.Receipt.Attempt != 1 || c.Reclaimed {
		t.Fatalf("claim: %+v %v %v", c, out, err)
	}
	if _, out, _ := s.ClaimReceipt(ctx, id, time.Minute); out != ledger.ClaimBusy {
		t.Fatalf("second claim under a live lease: %v", out)
	}
	// The lease expires (a crashed worker): a reclaim takes over and is in doubt.
	expire(t, db, id)
	c2, out, err := s.ClaimReceipt(ctx, id, time.Minute)
	if err != nil || out != ledger.Claimed || c2.Receipt.Attempt != 2 || !c2.Reclaimed || !c2.Receipt.InDoubt {
		t.Fatalf("reclaim: %+v %v %v", c2, out, err)
	}
	// The stale worker's ordinary outcomes are fenced off…
	for _, st := range []ledger.Status{ledger.ReceiptRetrying, ledger.ReceiptFailed} {
		if _, err := s.FinishReceipt(ctx, id, 1, ledger.Outcome{Status: st, DueAt: time.Now()}); !errors.Is(err, ledger.ErrTransition) {
			t.Fatalf("stale finish as %s: %v", st, err)
		}
	}
	// …but a send the transport confirmed beats the lease: it lands on the later attempt's row.
	if f, err := s.FinishReceipt(ctx, id, 1, ledger.Outcome{Status: ledger.ReceiptSent, MessageID: "<x@y>"}); err != nil || !f.Overtaken {
		t.Fatalf("stale confirmed send: %+v %v", f, err)
	}
	if still, err := s.StillClaimed(ctx, id, 2); err != nil || still {
		t.Fatalf("attempt 2 still claimed after the confirmed send landed: %v %v", still, err)
	}
	if _, err := s.FinishReceipt(ctx, id, 2, ledger.Outcome{Status: ledger.ReceiptSent, MessageID: "<x@y>"}); !errors.Is(err, ledger.ErrTransition) {
		t.Fatalf("a second sent on a sent receipt: %v", err)
	}
	if _, out, _ := s.ClaimReceipt(ctx, id, time.Minute); out != ledger.ClaimBusy {
		t.Fatalf("claim of a sent receipt: %v", out)
	}
	n, _ := s.CountInDoubt(ctx)
	if n != 1 {
		t.Fatalf("in doubt = %d", n)
	}
}

// TestReclaimedOnlyWhenTheLeaseWasSending: after one real reclaim the receipt stays in_doubt, but
// an ordinary retry's claim is not a reclaim (it must not be counted again).
func TestReclaimedOnlyWhenTheLeaseWasSending(t *testing.T) {
	t.Parallel()
	db := testenv.DB(t)
	s := ledger.New(db)
	ctx := t.Context()
	id := insertReceipt(t, s, insertDispatch(t, s, "", ""), time.Now().Add(-time.Second))
	if _, _, err := s.ClaimReceipt(ctx, id, time.Minute); err != nil {
		t.Fatal(err)
	}
	expire(t, db, id)
	c, _, err := s.ClaimReceipt(ctx, id, time.Minute)
	if err != nil || !c.Reclaimed {
		t.Fatalf("reclaim: %+v %v", c, err)
	}
	if _, err := s.FinishReceipt(ctx, id, 2, ledger.Outcome{Status: ledger.ReceiptRetrying, DueAt: time.Now().Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	c, out, err := s.ClaimReceipt(ctx, id, time.Minute)
	if err != nil || out != ledger.Claimed {
		t.Fatalf("retry claim: %v %v", out, err)
	}
	if c.Reclaimed || !c.Receipt.InDoubt || c.Receipt.Attempt != 3 {
		t.Fatalf("an ordinary retry's claim: reclaimed %v, in_doubt %v, attempt %d", c.Reclaimed, c.Receipt.InDoubt, c.Receipt.Attempt)
	}
}

func expire(t *testing.T, db ledger.Querier, id string) {
	t.Helper()
	if err := ledgertest.ExpireLease(t.Context(), db, id); err != nil {
		t.Fatal(err)
	}
}

func TestRacingClaimsOneWinner(t *testing.T) {
	t.Parallel()
	s := ledger.New(testenv.DB(t))
	did := insertDispatch(t, s, "", "")
	id := insertReceipt(t, s, did, time.Now())
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 8 {
		wg.Go(func() {
			_, out, err := s.ClaimReceipt(context.Background(), id, time.Minute)
			if err != nil {
				t.Error(err)
			}
			if out == ledger.Claimed {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d claims won, want 1", wins)
	}
}

func TestIdempotentInsert(t *testing.T) {
	t.Parallel()
	s := ledger.New(testenv.DB(t))
	ctx := t.Context()
	first := insertDispatch(t, s, "k1", "fp1")
	nd := ledger.NewDispatch{ID: newID(), EventID: "a.b", IdempotencyKey: "k1", Fingerprint: "fp1"}
	res, err := s.InsertDispatch(ctx, nd, time.Hour)
	if err != nil || res.Outcome != ledger.Duplicate || res.Of != first {
		t.Fatalf("same key same fingerprint: %+v %v", res, err)
	}
	nd.Fingerprint = "fp2"
	res, err = s.InsertDispatch(ctx, nd, time.Hour)
	if err != nil || res.Outcome != ledger.Conflict || res.Of != first {
		t.Fatalf("same key other fingerprint: %+v %v", res, err)
	}
	if err := s.InsertSettled(ctx, nd, res); err != nil {
		t.Fatal(err)
	}
	d, err := s.GetDispatch(ctx, nd.ID)
	if err != nil || d.Status != ledger.DispatchRejected || d.DuplicateOf != first {
		t.Fatalf("settled row: %+v %v", d, err)
	}
	// Same id again (a replayed task): Exists.
	res, err = s.InsertDispatch(ctx, ledger.NewDispatch{ID: first, EventID: "a.b"}, time.Hour)
	if err != nil || res.Outcome != ledger.Exists {
		t.Fatalf("replay: %+v %v", res, err)
	}
	// Outside the window the key is free again.
	res, err = s.InsertDispatch(ctx, ledger.NewDispatch{ID: newID(), EventID: "a.b", IdempotencyKey: "k1", Fingerprint: "fp9"}, time.Nanosecond)
	if err != nil || res.Outcome != ledger.Inserted {
		t.Fatalf("expired key: %+v %v", res, err)
	}
	// Exact JSON numbers are kept.
	got, _ := s.GetDispatch(ctx, first)
	if string(got.Vars) != `{"n": 1.50}` {
		t.Fatalf("vars = %s", got.Vars)
	}
}

func TestScrubAndPromoterQueries(t *testing.T) {
	t.Parallel()
	pool := testenv.DB(t)
	s := ledger.New(pool)
	ctx := t.Context()
	id := newID()
	if _, err := s.InsertDispatch(ctx, ledger.NewDispatch{ID: id, EventID: "a.b", Sealed: map[string]string{"t": "v1.k.x"}}, time.Hour); err != nil {
		t.Fatal(err)
	}
	due, err := s.Due(ctx, ledger.KindDispatch, "q", time.Minute, time.Hour, 10)
	if err != nil || len(due) != 1 || due[0].ID != id {
		t.Fatalf("due dispatches: %+v %v", due, err)
	}
	if again, _ := s.Due(ctx, ledger.KindDispatch, "q", time.Minute, time.Hour, 10); len(again) != 0 {
		t.Fatalf("enqueued dispatch returned again within regrace: %+v", again)
	}
	d, out, err := s.ClaimDispatch(ctx, id, time.Minute)
	if err != nil || out != ledger.Claimed || d.Attempt != 1 || d.Sealed["t"] != "v1.k.x" {
		t.Fatalf("claim dispatch: %+v %v %v", d, out, err)
	}
	rid := insertReceipt(t, s, id, time.Now())
	if err := s.FinishDispatch(ctx, id, 1, ledger.DispatchFannedOut, time.Time{}, ""); err != nil {
		t.Fatal(err)
	}
	if n, _ := s.ScrubSecrets(ctx, "q", 24*time.Hour, 100); n != 0 {
		t.Fatalf("scrubbed while a receipt is open")
	}
	rs, _ := s.Due(ctx, ledger.KindReceipt, "q", time.Minute, time.Hour, 10)
	if len(rs) != 1 || rs[0].ID != rid {
		t.Fatalf("due receipts: %+v", rs)
	}
	c, _, _ := s.ClaimReceipt(ctx, rid, time.Minute)
	if _, err := s.FinishReceipt(ctx, rid, c.Receipt.Attempt, ledger.Outcome{Status: ledger.ReceiptSent}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.ScrubSecrets(ctx, "q", 24*time.Hour, 100); n != 1 || err != nil {
		t.Fatalf("scrub after all final: %d %v", n, err)
	}
	got, _ := s.GetDispatch(ctx, id)
	if got.Sealed != nil || got.ScrubbedAt == nil {
		t.Fatalf("not scrubbed: %+v", got)
	}
}

func TestRejectedTasksAndMailbox(t *testing.T) {
	t.Parallel()
	s := ledger.New(testenv.DB(t))
	ctx := t.Context()
	if err := s.RecordRejectedTask(ctx, "herald:deliver", "deliver:x:1", "q", "malformed payload", []byte("{")); err != nil {
		t.Fatal(err)
	}
	rt, err := s.ListRejectedTasks(ctx, 10)
	if err != nil || len(rt) != 1 || rt[0].PayloadSize != 1 || rt[0].Reason != "malformed payload" {
		t.Fatalf("%+v %v", rt, err)
	}
	for i := range 3 {
		if _, err := s.InsertMail(ctx, ledger.Mail{MessageID: fmt.Sprint(i), From: "a", To: "b", Subject: "s"}); err != nil {
			t.Fatal(err)
		}
	}
	ms, err := s.ListMail(ctx, 2)
	if err != nil || len(ms) != 2 || ms[0].MessageID != "2" {
		t.Fatalf("%+v %v", ms, err)
	}
}

func TestInsertClaimed(t *testing.T) {
	t.Parallel()
	s := ledger.New(testenv.DB(t))
	ctx := t.Context()
	res, err := s.InsertDispatch(ctx, ledger.NewDispatch{ID: newID(), EventID: "a.b", ClaimFor: time.Minute}, time.Hour)
	if err != nil || res.Row == nil || res.Row.Status != ledger.DispatchFanningOut || res.Row.Attempt != 1 || res.Row.LeaseUntil == nil {
		t.Fatalf("first sight, due: %+v %v", res.Row, err)
	}
	if _, out, _ := s.ClaimDispatch(ctx, res.Row.ID, time.Minute); out != ledger.ClaimBusy {
		t.Fatalf("a second claim of a dispatch inserted claimed: %v", out)
	}
	future := time.Now().Add(time.Hour)
	res, err = s.InsertDispatch(ctx, ledger.NewDispatch{ID: newID(), EventID: "a.b", ClaimFor: time.Minute, AcceptedAt: future}, time.Hour)
	if err != nil || res.Row.Status != ledger.DispatchAccepted || res.Row.Attempt != 0 {
		t.Fatalf("first sight, not yet due, must not be claimed: %+v %v", res.Row, err)
	}

	did := insertDispatch(t, s, "", "")
	rid := newID()
	now := time.Now()
	if err := s.InsertReceipts(ctx, []ledger.NewReceipt{{ID: rid, DispatchID: did, EventID: "a.b", ChannelKey: "email",
		Transport: "email", RecipientID: "1", Status: ledger.ReceiptSending, ClaimFor: time.Minute, MaxAttempts: 3,
		DueAt: now, ExpiresAt: now.Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	r, _ := s.GetReceipt(ctx, rid)
	if r.Status != ledger.ReceiptSending || r.Attempt != 1 || r.LeaseUntil == nil || r.InDoubt {
		t.Fatalf("receipt inserted claimed: %+v", r)
	}
	if _, err := s.FinishReceipt(ctx, rid, 1, ledger.Outcome{Status: ledger.ReceiptSent}); err != nil {
		t.Fatalf("finish the inline claim: %v", err)
	}
	if err := s.InsertReceipts(ctx, []ledger.NewReceipt{{ID: newID(), DispatchID: did, EventID: "a.b", ChannelKey: "x",
		Transport: "email", RecipientID: "1", Status: ledger.ReceiptSending, MaxAttempts: 3, DueAt: now, ExpiresAt: now}}); err == nil {
		t.Fatal("a receipt inserted as sending without a lease")
	}
}
