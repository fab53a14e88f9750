package receipts_test

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/heraldhq/herald/internal/ledger"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/receipts"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestReaderReadsWhatTheEngineWrote checks the public reading half against rows written by the
// engine's own SQL: one dispatch, two receipts, the filters and not-found.
func TestReaderReadsWhatTheEngineWrote(t *testing.T) {
	t.Parallel()
	pool := testenv.DB(t)
	ctx := t.Context()
	id := uuid.NewString()
	if _, err := ledger.New(pool).InsertDispatch(ctx, ledger.NewDispatch{ID: id, EventID: "a.b", Queue: "q"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	var rids []string
	for _, who := range []string{"u1", "u2"} {
		rid := uuid.NewString()
		rids = append(rids, rid)
		if err := ledger.New(pool).InsertReceipts(ctx, []ledger.NewReceipt{{ID: rid, DispatchID: id, EventID: "a.b", ChannelKey: "email",
			Transport: "email", Audience: "user", RecipientID: who, Recipient: ledger.Recipient{Address: who + "@example.com"},
			Status: ledger.ReceiptScheduled, MaxAttempts: 3, DueAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour), Queue: "q"}}); err != nil {
			t.Fatal(err)
		}
	}
	r := receipts.NewReader(pool)
	d, err := r.Dispatch(ctx, id)
	if err != nil || d.EventID != "a.b" || d.Status != receipts.DispatchAccepted || receipts.Final(receipts.KindDispatch, d.Status) {
		t.Fatalf("dispatch %+v %v", d, err)
	}
	rs, err := r.ReceiptsOf(ctx, id)
	if err != nil || len(rs) != 2 || rs[0].RecipientID != "u1" || rs[1].Recipient.Address != "u2@example.com" {
		t.Fatalf("receipts of %s: %+v %v", id, rs, err)
	}
	one, err := r.Receipt(ctx, rids[1])
	if err != nil || one.ID != rids[1] || one.Status != receipts.ReceiptScheduled {
		t.Fatalf("receipt %+v %v", one, err)
	}
	found, err := r.FindReceipts(ctx, receipts.ReceiptFilter{DispatchID: id, Limit: 1})
	if err != nil || len(found) != 1 {
		t.Fatalf("find receipts: %d %v", len(found), err)
	}
	ds, err := r.FindDispatches(ctx, receipts.DispatchFilter{EventID: "a.b", Status: receipts.DispatchAccepted})
	if err != nil || len(ds) != 1 || ds[0].ID != id {
		t.Fatalf("find dispatches: %+v %v", ds, err)
	}
	if _, err := r.Receipt(ctx, uuid.NewString()); !errors.Is(err, receipts.ErrNotFound) {
		t.Fatalf("missing receipt: %v, want ErrNotFound", err)
	}
	if _, err := r.FindReceipts(ctx, receipts.ReceiptFilter{Limit: receipts.MaxListLimit + 1}); err == nil {
		t.Fatal("a limit above MaxListLimit was taken")
	}
}
