-- Running limits (docs/limits.md): how many workspaces are running candidates, overall
-- and per owner, kept by a trigger in the transaction of every write that moves a
-- workspace into or out of the set, so an admission reads two rows instead of counting
-- the table. Every write path (a single write, a compare-and-swap, a batch, a delete, a
-- seed straight into the table) goes through the trigger; none has to remember it.

-- The running-candidate rule: exactly the predicate of index objects_running, NULL read
-- as false. A plain SQL function, inlined wherever it is used.
CREATE FUNCTION running_candidate(
    kind text, deletion_timestamp timestamptz, desired_state text, observed_status text,
    operation text
) RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT kind = 'workspaces' AND deletion_timestamp IS NULL
       AND (desired_state = 'RUNNING' OR observed_status = 'RUNNING'
            OR operation = 'STARTING') IS TRUE
$$;

CREATE TABLE running_total (
    id smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    n  bigint NOT NULL CHECK (n >= 0)
);

CREATE TABLE running_counts (
    owner text COLLATE "C" PRIMARY KEY,
    n     bigint NOT NULL CHECK (n >= 0)  -- rows stay at 0: no insert-delete churn
);

-- Every write of objects has taken the revision counter's row lock before its rows
-- change (the counter is the first thing each write statement updates), so the two
-- counter rows below are only ever locked by the one transaction that holds it: no
-- extra waiting, no deadlock.
CREATE FUNCTION running_counts_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' AND running_candidate(OLD.kind, OLD.deletion_timestamp,
            OLD.desired_state, OLD.observed_status, OLD.operation) THEN
        UPDATE running_counts SET n = n - 1 WHERE owner = OLD.owner;
        UPDATE running_total SET n = n - 1 WHERE id = 1;
    END IF;
    IF TG_OP <> 'DELETE' AND running_candidate(NEW.kind, NEW.deletion_timestamp,
            NEW.desired_state, NEW.observed_status, NEW.operation) THEN
        INSERT INTO running_counts AS c (owner, n) VALUES (NEW.owner, 1)
            ON CONFLICT (owner) DO UPDATE SET n = c.n + 1;
        UPDATE running_total SET n = n + 1 WHERE id = 1;
    END IF;
    RETURN NULL;
END
$$;

-- Writers wait here until the counts below are taken and the triggers are in place, so
-- no write falls between the two.
LOCK TABLE objects IN SHARE ROW EXCLUSIVE MODE;

-- The WHEN conditions keep the function out of every write that leaves candidacy (and
-- the owner) as it was, i.e. nearly all of them.
CREATE TRIGGER running_counts_insert AFTER INSERT ON objects FOR EACH ROW
    WHEN (running_candidate(NEW.kind, NEW.deletion_timestamp, NEW.desired_state,
                            NEW.observed_status, NEW.operation))
    EXECUTE FUNCTION running_counts_follow();
CREATE TRIGGER running_counts_update AFTER UPDATE ON objects FOR EACH ROW
    WHEN (running_candidate(OLD.kind, OLD.deletion_timestamp, OLD.desired_state,
                            OLD.observed_status, OLD.operation)
          IS DISTINCT FROM
          running_candidate(NEW.kind, NEW.deletion_timestamp, NEW.desired_state,
                            NEW.observed_status, NEW.operation)
          OR OLD.owner IS DISTINCT FROM NEW.owner)
    EXECUTE FUNCTION running_counts_follow();
CREATE TRIGGER running_counts_delete AFTER DELETE ON objects FOR EACH ROW
    WHEN (running_candidate(OLD.kind, OLD.deletion_timestamp, OLD.desired_state,
                            OLD.observed_status, OLD.operation))
    EXECUTE FUNCTION running_counts_follow();

INSERT INTO running_total (id, n)
    SELECT 1, count(*) FROM objects
    WHERE running_candidate(kind, deletion_timestamp, desired_state, observed_status, operation);
INSERT INTO running_counts (owner, n)
    SELECT owner, count(*) FROM objects
    WHERE running_candidate(kind, deletion_timestamp, desired_state, observed_status, operation)
    GROUP BY owner;
