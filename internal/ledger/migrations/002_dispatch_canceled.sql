-- A dispatch can be canceled at any stage before its fan-out finished (DESIGN.md). The new CHECK
-- is added NOT VALID (instant: it holds for new rows) and validated by the next migration, in a
-- transaction of its own, where the scan takes a lock that does not stop the workers. Old workers
-- treat a canceled row as busy (they never claim a state they do not know), so they keep working
-- during a rolling deploy.
ALTER TABLE herald.dispatches DROP CONSTRAINT IF EXISTS dispatches_status_check;
ALTER TABLE herald.dispatches ADD CONSTRAINT dispatches_status_check
    CHECK (status IN ('accepted','fanning_out','fanned_out','retrying','failed','rejected','duplicate','canceled')) NOT VALID;
