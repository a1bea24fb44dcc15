-- The index on (kind, observed_status, desired_state, operation) served no query of the
-- product (admission uses objects_running and, since 0003, the running counts), yet it
-- cost every write: a body change is never a HOT update, so each write inserted into it.
-- Worse, a prepared statement planned while the table was small took it for its lookups
-- by (kind, namespace, name) -- it matches on kind -- and then scanned every workspace's
-- entry on each execution until the next ANALYZE. Without it, such lookups can only use
-- the primary key (docs/adr/0011-ten-thousand-workspaces.md, 2026-11-27 session 5).
DROP INDEX IF EXISTS objects_states;
