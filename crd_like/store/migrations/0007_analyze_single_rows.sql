-- Statistics for the single-row tables (docs/adr/0011-ten-thousand-workspaces.md,
-- 2026-11-28 session 6). A table never analyzed is planned as if it held ten pages of
-- rows, and more as its dead row versions add pages: the revision counter, updated by
-- every write, was estimated at 1,770 rows and up. The watch hub's and the lists' reads
-- join it (``FROM revision_counter c LEFT JOIN LATERAL (...)``), so their estimated cost
-- was that many times the real one, passed ``jit_above_cost``, and every execution was
-- compiled with LLVM: 40-90 ms of PostgreSQL CPU for a read of a few log entries, a
-- third of PostgreSQL's CPU in a 3,000-workspace run. With statistics the planner
-- knows one row (and scales it by the live density as the table grows), and autovacuum
-- keeps them. A fresh database was never analyzed before its first minute.
ANALYZE revision_counter;
ANALYZE running_total;
