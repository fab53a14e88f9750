-- Every dispatch and receipt remembers its queue (DESIGN.md invariant 9): a promoter and a sweeper
-- take only their own queue's rows, so fleets that share one PostgreSQL, each with its own
-- HERALD_QUEUE and events, never take each other's work. The producer's queue travels with the
-- row: DispatchTx stores its client's queue, a worker's first sight the queue the task came from,
-- and a fan-out gives its receipts the dispatch's queue.
--
-- '' means "queue not known": rows written before this migration, by a worker older than it (a
-- rolling deploy), or by SQL that names no queue. Any fleet's promoter takes them, as before the
-- upgrade; CHANGELOG.md says how to backfill them. A constant default makes each column instant to
-- add (no table rewrite) and keeps the inserts of old workers valid.
--
-- The indexes that serve the new queries are built CONCURRENTLY by the next migration.
SET LOCAL lock_timeout = '10s'; -- never queue every writer behind a long transaction: fail, and retry at the next start

ALTER TABLE herald.dispatches ADD COLUMN IF NOT EXISTS queue text NOT NULL DEFAULT '';
ALTER TABLE herald.receipts ADD COLUMN IF NOT EXISTS queue text NOT NULL DEFAULT '';

-- When the sweeper next checks whether a settled dispatch still needs its secrets: the latest due
-- time of its open receipts when it last looked. A dispatch whose deliveries are due tomorrow is
-- looked at tomorrow, not every minute ('-infinity': at the next sweep). Old workers never read it.
ALTER TABLE herald.dispatches ADD COLUMN IF NOT EXISTS scrub_check_at timestamptz NOT NULL DEFAULT '-infinity';
