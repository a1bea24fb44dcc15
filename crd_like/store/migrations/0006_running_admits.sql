-- Running limits decided inside the write statement (docs/limits.md,
-- docs/adr/0011-ten-thousand-workspaces.md, 2026-11-28 session 6). A write that asks a
-- workspace to run calls this function from the WHERE clause of its revision-counter
-- update: it takes the global admission lock, reads the counts kept by migration 0003's
-- trigger and answers whether the write fits in both limits. Refused, the statement
-- writes nothing and the store builds the 429 the way it did before (lock, counts,
-- names). Admitted, nothing went back to the API server while the lock was held.
--
-- VOLATILE is what makes it exact: each query of a volatile function takes a fresh
-- snapshot, so the counts are read after the lock is granted and see every commit of
-- the previous holder (the calling statement's own snapshot was taken before it waited).
-- The lock is the one the store's admission view takes, so both paths serialise with
-- each other. ``ns`` is also the owner (docs/resource.md). The object being written is
-- excluded when it is counted already (a re-save of a counted workspace), as the view
-- does: it cannot change meanwhile, the writing transaction holds its row (or, for a
-- create, the name is free or the insert fails on the primary key).
CREATE FUNCTION running_admits(
    lock_key bigint, ns text, obj_name text, max_per_user bigint, max_global bigint
) RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    total bigint;
    mine bigint;
    counted boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    SELECT n INTO total FROM running_total WHERE id = 1;
    SELECT n INTO mine FROM running_counts WHERE owner = ns;
    SELECT running_candidate(o.kind, o.deletion_timestamp, o.desired_state,
                             o.observed_status, o.operation)
      INTO counted FROM objects o
     WHERE o.kind = 'workspaces' AND o.namespace = ns AND o.name = obj_name;
    counted := coalesce(counted, false);
    RETURN coalesce(mine, 0) - counted::int + 1 <= max_per_user
       AND coalesce(total, 0) - counted::int + 1 <= max_global;
END
$$;
