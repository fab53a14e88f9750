// Package ledger owns Herald's SQL: the embedded migrations of the herald schema, dispatches
// and receipts with their state machines (one transition table, see status.go), rejected tasks
// and the development mailbox.
//
// Postgres owns the truth once a worker has seen a dispatch. Every state change goes through a
// guarded UPDATE (… WHERE status = ANY(allowed predecessors)), claims take a lease and bump the
// attempt, and final updates are fenced on the attempt so a stale worker cannot overwrite a
// newer one.
//
// The public package receipts re-exports the row types and the reading half; the claims,
// fences and maintenance statements are the engine's alone. It must not import asynq or any
// transport.
package ledger
