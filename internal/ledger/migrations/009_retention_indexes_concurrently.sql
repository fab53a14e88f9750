---- tern: disable-tx ----
-- Indexes for the retention sweep (receipts/retention.go): the final receipts, the rejected tasks
-- and the captured mail of a queue by age, so that a sweep costs what its expired rows cost however
-- many rows are kept (DESIGN.md invariant 10; receipts/plan_test.go proves it). Partial on the final
-- states: a receipt enters the index when it settles. Built CONCURRENTLY (workers keep writing); an
-- interrupted build is dropped and redone. The dispatches' index is on a column that migration 010
-- adds: migration 011 builds it.
DROP INDEX CONCURRENTLY IF EXISTS herald.receipts_final_age;
CREATE INDEX CONCURRENTLY receipts_final_age ON herald.receipts (queue, updated_at)
    WHERE status IN ('sent','failed','expired','skipped','canceled');

DROP INDEX CONCURRENTLY IF EXISTS herald.rejected_tasks_age;
CREATE INDEX CONCURRENTLY rejected_tasks_age ON herald.rejected_tasks (queue, created_at);

DROP INDEX CONCURRENTLY IF EXISTS herald.dev_mailbox_age;
CREATE INDEX CONCURRENTLY dev_mailbox_age ON herald.dev_mailbox (created_at);

-- The tasks held for a newer worker (their payload kept), by age: the sweep drops their payloads
-- after HERALD_SECRET_RETENTION (they may hold sealed secrets), by age; and a repeated hold finds
-- the row it already wrote by task id, among the held rows only.
DROP INDEX CONCURRENTLY IF EXISTS herald.rejected_tasks_held;
CREATE INDEX CONCURRENTLY rejected_tasks_held ON herald.rejected_tasks (queue, created_at)
    WHERE payload IS NOT NULL;
DROP INDEX CONCURRENTLY IF EXISTS herald.rejected_tasks_held_task;
CREATE INDEX CONCURRENTLY rejected_tasks_held_task ON herald.rejected_tasks (queue, task_id)
    WHERE payload IS NOT NULL;
