-- Where a fan-out committed in chunks has got to (channel, recipient page or offset), so that an
-- interrupted or time-sliced fan-out resumes instead of starting over. Nullable with no default:
-- adding it rewrites nothing, and old workers never read it.
ALTER TABLE herald.dispatches ADD COLUMN IF NOT EXISTS fanout_progress jsonb;
