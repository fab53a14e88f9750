-- Validates the CHECK added NOT VALID by the previous migration: a scan under SHARE UPDATE
-- EXCLUSIVE, which lets the workers read and write meanwhile.
ALTER TABLE herald.dispatches VALIDATE CONSTRAINT dispatches_status_check;
