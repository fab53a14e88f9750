-- The audit log: what an operator did to Herald's data (an erasure today; triggers and token use
-- later). A row names the actor and the action and holds counts and ids, never the personal data
-- the action was about.
CREATE TABLE IF NOT EXISTS herald.audit_log (
    id     bigserial   PRIMARY KEY,
    at     timestamptz NOT NULL DEFAULT now(),
    actor  text        NOT NULL DEFAULT '',
    action text        NOT NULL,
    detail jsonb       NOT NULL DEFAULT '{}'
);

-- The payload of a task held back for a worker that understands it (a payload of a newer major
-- version that no such worker took in time): kept so an operator can enqueue it again once the
-- fleet is upgraded. Payloads hold references and sealed secrets only. Nullable with no default:
-- adding it rewrites nothing, and older workers never write it.
-- The ALTER takes a brief ACCESS EXCLUSIVE lock: behind a long transaction it gives up rather than
-- queue every writer behind it (the worker's next start retries the migration).
SET LOCAL lock_timeout = '2s';
ALTER TABLE herald.rejected_tasks ADD COLUMN IF NOT EXISTS payload bytea;
