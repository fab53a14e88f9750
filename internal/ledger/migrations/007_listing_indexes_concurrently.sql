---- tern: disable-tx ----
-- Indexes for the operator's listings (`enqueue dispatches`, `enqueue receipts list`, newest
-- first, optionally only the failed ones; receipts.FindDispatches/FindReceipts). Without them each
-- listing reads the whole table. The "failed" ones hold failed rows only, so writes barely pay for
-- them. Built CONCURRENTLY (workers keep writing); an interrupted build is dropped and redone.
DROP INDEX CONCURRENTLY IF EXISTS herald.dispatches_accepted;
CREATE INDEX CONCURRENTLY dispatches_accepted ON herald.dispatches (accepted_at);

DROP INDEX CONCURRENTLY IF EXISTS herald.dispatches_failed;
CREATE INDEX CONCURRENTLY dispatches_failed ON herald.dispatches (accepted_at) WHERE status = 'failed';

DROP INDEX CONCURRENTLY IF EXISTS herald.receipts_created;
CREATE INDEX CONCURRENTLY receipts_created ON herald.receipts (created_at);

DROP INDEX CONCURRENTLY IF EXISTS herald.receipts_failed;
CREATE INDEX CONCURRENTLY receipts_failed ON herald.receipts (created_at) WHERE status = 'failed';

