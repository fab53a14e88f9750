-- When the retention of a final dispatch starts counting, when that is later than updated_at
-- (receipts/retention.go): the sweep deletes a dispatch once GREATEST(updated_at, retention_from)
-- is older than the retention and no receipt of it is left.
--   - A dispatch past the retention that still has receipts is pushed forward to the earliest time
--     they can all have gone as far as one probe tells (a reminder due in 45 days: then), so the
--     next sweeps skip it instead of probing it again (DESIGN.md invariant 10).
--   - A cancel tombstone (event_id '', written for a dispatch whose task still waits in Redis) is
--     kept until its task meets it, which sets this column: before, its task may still run.
-- NULL: from updated_at. Nullable with no default: adding it rewrites nothing, and older workers
-- never read or write it. Its index is built CONCURRENTLY by the next migration.
-- The ALTER takes a brief ACCESS EXCLUSIVE lock: behind a long transaction it gives up rather than
-- queue every writer behind it (the worker's next start retries the migration).
SET LOCAL lock_timeout = '2s';
ALTER TABLE herald.dispatches ADD COLUMN IF NOT EXISTS retention_from timestamptz;
