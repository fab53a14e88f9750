package receipts

import (
	"context"

	"github.com/heraldhq/herald/internal/ledger"
)

// Querier is what a Reader needs: a *pgxpool.Pool, a *pgx.Conn or a pgx.Tx.
type Querier = ledger.Querier

// DispatchRow is a row of herald.dispatches: one occurrence of an event, its references and
// variables (secrets sealed, scrubbed once every delivery is final), its state and its fan-out
// attempt.
type DispatchRow = ledger.DispatchRow

// ReceiptRow is a row of herald.receipts: one delivery (dispatch, channel key, recipient id),
// its state, attempts, due time and the transport's reply.
type ReceiptRow = ledger.ReceiptRow

// Recipient is the stored form of a recipient: address, display name, locale.
type Recipient = ledger.Recipient

// Status is the state of a dispatch or a receipt; Kind names the state machine (KindDispatch,
// KindReceipt). States lists a machine's states and Final says whether one is final.
type (
	Status = ledger.Status
	Kind   = ledger.Kind
)

// The two state machines.
const (
	KindDispatch = ledger.KindDispatch
	KindReceipt  = ledger.KindReceipt
)

// Dispatch states: accepted → fanning_out → fanned_out | retrying | failed | rejected |
// duplicate, and canceled from every state that is not final.
const (
	DispatchAccepted   = ledger.DispatchAccepted
	DispatchFanningOut = ledger.DispatchFanningOut
	DispatchFannedOut  = ledger.DispatchFannedOut
	DispatchRetrying   = ledger.DispatchRetrying
	DispatchFailed     = ledger.DispatchFailed
	DispatchRejected   = ledger.DispatchRejected
	DispatchDuplicate  = ledger.DispatchDuplicate
	DispatchCanceled   = ledger.DispatchCanceled
)

// Receipt states: scheduled → sending → sent | retrying | failed | expired | skipped, and
// canceled from scheduled or retrying.
const (
	ReceiptScheduled = ledger.ReceiptScheduled
	ReceiptSending   = ledger.ReceiptSending
	ReceiptSent      = ledger.ReceiptSent
	ReceiptRetrying  = ledger.ReceiptRetrying
	ReceiptFailed    = ledger.ReceiptFailed
	ReceiptExpired   = ledger.ReceiptExpired
	ReceiptSkipped   = ledger.ReceiptSkipped
	ReceiptCanceled  = ledger.ReceiptCanceled
)

// States lists the states of one machine, in the order of the transition table.
func States(kind Kind) []Status { return ledger.States(kind) }

// Final reports whether s is a final state of kind: one no worker moves on from.
func Final(kind Kind, s Status) bool { return ledger.Final(kind, s) }

// ErrNotFound is returned when a dispatch or receipt does not exist.
var ErrNotFound = ledger.ErrNotFound

// DispatchFilter selects dispatches for FindDispatches; ReceiptFilter receipts for
// FindReceipts. Zero fields match everything; Limit defaults to DefaultListLimit and is at most
// MaxListLimit.
type (
	DispatchFilter = ledger.DispatchFilter
	ReceiptFilter  = ledger.ReceiptFilter
)

// List bounds.
const (
	DefaultListLimit = ledger.DefaultListLimit
	MaxListLimit     = ledger.MaxListLimit
)

// Reader reads dispatches and receipts. It is safe for concurrent use when its Querier is (a
// pool is).
type Reader struct{ l *ledger.Store }

// NewReader returns a Reader on q: a pool, a connection or a transaction (to read your own
// uncommitted DispatchTx).
func NewReader(q Querier) *Reader { return &Reader{l: ledger.New(q)} }

// Dispatch returns one dispatch, or an error wrapping ErrNotFound.
func (r *Reader) Dispatch(ctx context.Context, id string) (*DispatchRow, error) {
	return r.l.GetDispatch(ctx, id)
}

// Receipt returns one receipt, or an error wrapping ErrNotFound.
func (r *Reader) Receipt(ctx context.Context, id string) (*ReceiptRow, error) {
	return r.l.GetReceipt(ctx, id)
}

// ReceiptsOf returns every receipt of a dispatch, by due time, channel key and recipient.
func (r *Reader) ReceiptsOf(ctx context.Context, dispatchID string) ([]*ReceiptRow, error) {
	return r.l.ListReceipts(ctx, dispatchID)
}

// FindDispatches lists dispatches, newest first.
func (r *Reader) FindDispatches(ctx context.Context, f DispatchFilter) ([]*DispatchRow, error) {
	return r.l.FindDispatches(ctx, f)
}

// FindReceipts lists receipts, newest first.
func (r *Reader) FindReceipts(ctx context.Context, f ReceiptFilter) ([]*ReceiptRow, error) {
	return r.l.FindReceipts(ctx, f)
}
