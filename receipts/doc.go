// Package receipts reads what Herald recorded: dispatches (one occurrence of an event) and
// receipts (one delivery each), with their states, and applies the herald schema's migrations.
//
// Postgres owns the truth once a worker has seen a dispatch. The rows are written by the worker
// only; applications read them here (a Reader on a pool, a connection or a transaction) and run
// the migrations with Migrate, or take the SQL files from Migrations for their own tool.
//
// The claim and fence SQL that drives deliveries is not part of this package's API: it lives in
// the engine (internal/ledger).
package receipts
