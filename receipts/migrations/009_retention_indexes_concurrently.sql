---- tern: disable-tx ----
-- Indexes for the retention sweep (receipts/retention.go): the final rows of a queue by age, so
-- that a sweep costs what its expired rows cost however many rows are kept (DESIGN.md invariant
-- 10; receipts/plan_test.go proves it). Partial on the final states: a row enters the index when
-- it settles. Built CONCURRENTLY (workers keep writing); an interrupted build is dropped and redone.
DROP INDEX CONCURRENTLY IF EXISTS herald.dispatches_final_age;
CREATE INDEX CONCURRENTLY dispatches_final_age ON herald.dispatches (queue, updated_at)
    WHERE status IN ('fanned_out','failed','rejected','duplicate','canceled');

DROP INDEX CONCURRENTLY IF EXISTS herald.receipts_final_age;
CREATE INDEX CONCURRENTLY receipts_final_age ON herald.receipts (queue, updated_at)
    WHERE status IN ('sent','failed','expired','skipped','canceled');

DROP INDEX CONCURRENTLY IF EXISTS herald.rejected_tasks_age;
CREATE INDEX CONCURRENTLY rejected_tasks_age ON herald.rejected_tasks (queue, created_at);

DROP INDEX CONCURRENTLY IF EXISTS herald.dev_mailbox_age;
CREATE INDEX CONCURRENTLY dev_mailbox_age ON herald.dev_mailbox (created_at);
