---- tern: disable-tx ----
-- The index of the dispatch retention sweep (receipts/retention.go, DeleteExpiredDispatches): the
-- final dispatches of a queue by the time their retention counts from, GREATEST(updated_at,
-- retention_from) (migration 010), so that a sweep costs what its due rows cost however many are
-- kept (DESIGN.md invariant 10; receipts/plan_test.go proves it). Partial on the final states, and
-- without the cancel tombstones whose task has not met them yet (event_id '' and no
-- retention_from): the sweep never reads those. Built CONCURRENTLY (workers keep writing); an
-- interrupted build is dropped and redone.
DROP INDEX CONCURRENTLY IF EXISTS herald.dispatches_final_age;
CREATE INDEX CONCURRENTLY dispatches_final_age ON herald.dispatches (queue, (GREATEST(updated_at, retention_from)))
    WHERE status IN ('fanned_out','failed','rejected','duplicate','canceled')
      AND (event_id <> '' OR retention_from IS NOT NULL);
