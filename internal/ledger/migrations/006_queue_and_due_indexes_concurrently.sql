---- tern: disable-tx ----
-- One index per query shape of the background work, so that a promoter tick or a sweep costs what
-- it costs with nothing in the future (DESIGN.md invariant 10; receipts/plan_test.go proves it):
--   dispatches_due, receipts_due      waiting rows of a queue, by due time (DueDispatches/DueReceipts)
--   dispatches_lease, receipts_lease  claimed rows of a queue, by lease end (reclaims)
--   receipts_open_by_dispatch         the latest open receipt of a dispatch (ScrubSecrets)
--   dispatches_scrub                  settled dispatches of a queue holding secrets, by next check
--   dispatches_secrets_age            dispatches of a queue holding secrets, by age (ScrubSecrets)
--   dispatches_key_age                held idempotency keys of a queue, by age (ReleaseIdempotencyKeys)
-- The indexes of 001 that no query uses any more go.
--
-- Built CONCURRENTLY, so workers keep writing during the build; that needs no transaction, hence
-- the marker on the first line. Each index is dropped first if it exists: a build that was
-- interrupted leaves an INVALID index, which IF NOT EXISTS would keep; until it completes, this
-- file runs again as a whole at the next start.
DROP INDEX CONCURRENTLY IF EXISTS herald.dispatches_due;
CREATE INDEX CONCURRENTLY dispatches_due ON herald.dispatches (queue, due_at)
    WHERE status IN ('accepted','retrying');

DROP INDEX CONCURRENTLY IF EXISTS herald.dispatches_lease;
CREATE INDEX CONCURRENTLY dispatches_lease ON herald.dispatches (queue, lease_until)
    WHERE status = 'fanning_out';

DROP INDEX CONCURRENTLY IF EXISTS herald.receipts_due;
CREATE INDEX CONCURRENTLY receipts_due ON herald.receipts (queue, due_at)
    WHERE status IN ('scheduled','retrying');

DROP INDEX CONCURRENTLY IF EXISTS herald.receipts_lease;
CREATE INDEX CONCURRENTLY receipts_lease ON herald.receipts (queue, lease_until)
    WHERE status = 'sending';

DROP INDEX CONCURRENTLY IF EXISTS herald.receipts_open_by_dispatch;
CREATE INDEX CONCURRENTLY receipts_open_by_dispatch ON herald.receipts (dispatch_id, due_at)
    WHERE status IN ('scheduled','retrying','sending');

DROP INDEX CONCURRENTLY IF EXISTS herald.dispatches_scrub;
CREATE INDEX CONCURRENTLY dispatches_scrub ON herald.dispatches (queue, scrub_check_at)
    WHERE (sealed IS NOT NULL OR minted IS NOT NULL)
      AND status IN ('fanned_out','failed','rejected','duplicate','canceled');

DROP INDEX CONCURRENTLY IF EXISTS herald.dispatches_secrets_age;
CREATE INDEX CONCURRENTLY dispatches_secrets_age ON herald.dispatches (queue, accepted_at)
    WHERE sealed IS NOT NULL OR minted IS NOT NULL;

DROP INDEX CONCURRENTLY IF EXISTS herald.dispatches_key_age;
CREATE INDEX CONCURRENTLY dispatches_key_age ON herald.dispatches (queue, accepted_at)
    WHERE idempotency_key IS NOT NULL;

DROP INDEX CONCURRENTLY IF EXISTS herald.dispatches_open;
DROP INDEX CONCURRENTLY IF EXISTS herald.receipts_open;
DROP INDEX CONCURRENTLY IF EXISTS herald.dispatches_with_secrets;
