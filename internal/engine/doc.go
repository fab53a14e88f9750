// Package tasks is Herald's asynq glue: the stable task types (herald:dispatch, herald:deliver),
// their payload codecs, the producer Client (Dispatch over Redis, DispatchTx inside the
// application's transaction), the fan-out and deliver handlers, the promoter/sweeper, and the
// construction of the asynq server.
//
// Postgres owns the truth; asynq only wakes workers. Task ids are deterministic and carry the
// attempt ("dispatch:<id>:<attempt>", "deliver:<receipt>:<attempt>"), so re-enqueueing the same
// work is a harmless conflict. Retry schedules live in Postgres; asynq's own retries only
// recover crashed workers and database outages.
//
// It is the only public package below the root that imports asynq.
package engine
