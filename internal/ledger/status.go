package ledger

import "slices"

// Status is the state of a dispatch or a receipt.
type Status string

// Dispatch states.
const (
	DispatchAccepted   Status = "accepted"    // known to Postgres, waiting for fan-out
	DispatchFanningOut Status = "fanning_out" // claimed by a worker (lease)
	DispatchFannedOut  Status = "fanned_out"  // receipts exist for every delivery
	DispatchRetrying   Status = "retrying"    // fan-out failed temporarily; due_at says when again
	DispatchFailed     Status = "failed"      // fan-out failed for good; last_error says why
	DispatchRejected   Status = "rejected"    // refused before fan-out (idempotency conflict)
	DispatchDuplicate  Status = "duplicate"   // same idempotency key and arguments as duplicate_of
	DispatchCanceled   Status = "canceled"    // canceled by an operator before its fan-out finished
)

// Receipt states.
const (
	ReceiptScheduled Status = "scheduled" // waiting for due_at
	ReceiptSending   Status = "sending"   // claimed by a worker (lease)
	ReceiptSent      Status = "sent"      // the transport confirmed
	ReceiptRetrying  Status = "retrying"  // temporary failure; due_at says when again
	ReceiptFailed    Status = "failed"    // permanent failure or attempts exhausted
	ReceiptExpired   Status = "expired"   // past the event's max age after due_at
	ReceiptSkipped   Status = "skipped"   // a preference or policy said no
	ReceiptCanceled  Status = "canceled"  // canceled before sending
)

// Kind names one of the two state machines.
type Kind string

const (
	KindDispatch Kind = "dispatch"
	KindReceipt  Kind = "receipt"
)

// Transitions is the one table of allowed state changes: kind → from → allowed targets.
// A target equal to its source is a reclaim (a lease that expired). Every UPDATE of a status in
// this package takes its allowed predecessors from here.
var Transitions = map[Kind]map[Status][]Status{
	KindDispatch: {
		DispatchAccepted:   {DispatchFanningOut, DispatchCanceled},
		DispatchFanningOut: {DispatchFanningOut, DispatchFannedOut, DispatchRetrying, DispatchFailed, DispatchCanceled},
		DispatchRetrying:   {DispatchFanningOut, DispatchFailed, DispatchCanceled},
		DispatchFannedOut:  nil,
		DispatchCanceled:   nil,
		DispatchFailed:     nil,
		DispatchRejected:   nil,
		DispatchDuplicate:  nil,
	},
	KindReceipt: {
		ReceiptScheduled: {ReceiptSending, ReceiptCanceled},
		ReceiptSending:   {ReceiptSending, ReceiptSent, ReceiptRetrying, ReceiptFailed, ReceiptExpired, ReceiptSkipped},
		ReceiptRetrying:  {ReceiptSending, ReceiptCanceled},
		ReceiptSent:      nil,
		ReceiptFailed:    nil,
		ReceiptExpired:   nil,
		ReceiptSkipped:   nil,
		ReceiptCanceled:  nil,
	},
}

// InitialStates are the states a row may be created in. A worker inserts a dispatch it sees
// first already claimed (fanning_out), and the one delivery of a fan-out it delivers inline
// already claimed (sending): the same claims, one round trip fewer.
var InitialStates = map[Kind][]Status{
	KindDispatch: {DispatchAccepted, DispatchFanningOut, DispatchRejected, DispatchDuplicate, DispatchCanceled},
	KindReceipt:  {ReceiptScheduled, ReceiptSending, ReceiptSkipped, ReceiptFailed},
}

// CanTransition reports whether kind may move from → to.
func CanTransition(kind Kind, from, to Status) bool {
	return slices.Contains(Transitions[kind][from], to)
}

// From returns the states from which kind may move to to, as strings for SQL.
func From(kind Kind, to Status) []string {
	var out []string
	for from, tos := range Transitions[kind] {
		if slices.Contains(tos, to) {
			out = append(out, string(from))
		}
	}
	slices.Sort(out)
	return out
}

// Final reports whether s has no way out.
func Final(kind Kind, s Status) bool {
	tos, ok := Transitions[kind][s]
	return ok && len(tos) == 0
}

// States returns every state of kind, sorted.
func States(kind Kind) []Status {
	var out []Status
	for s := range Transitions[kind] {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

func finalStrings(kind Kind) []string {
	var out []string
	for _, s := range States(kind) {
		if Final(kind, s) {
			out = append(out, string(s))
		}
	}
	return out
}
