-- kine-style storage (docs/storage.md): current objects with typed columns beside the
-- JSON body, an append-only event log keyed by the one global revision, and the
-- single-row counter whose row lock serialises revision allocation until commit.

CREATE TABLE revision_counter (
    id          smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    rev         bigint NOT NULL,
    compact_rev bigint NOT NULL  -- log entries <= compact_rev are gone
);
INSERT INTO revision_counter (id, rev, compact_rev) VALUES (1, 0, 0);

CREATE TABLE objects (
    kind               text COLLATE "C" NOT NULL,
    namespace          text COLLATE "C" NOT NULL,  -- '' for cluster-scoped kinds
    name               text COLLATE "C" NOT NULL,
    uid                uuid NOT NULL,
    resource_version   bigint NOT NULL,
    generation         bigint NOT NULL,
    owner              text COLLATE "C" NOT NULL,  -- = namespace (docs/resource.md)
    desired_state      text,
    observed_status    text,
    operation          text,
    deletion_timestamp timestamptz,
    body               jsonb NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
CREATE UNIQUE INDEX objects_uid ON objects (uid);
-- Admission (docs/limits.md) counts and TTL scans read only these columns.
CREATE INDEX objects_running ON objects (kind, owner)
    WHERE deletion_timestamp IS NULL
      AND (desired_state = 'RUNNING' OR observed_status = 'RUNNING' OR operation = 'STARTING');
CREATE INDEX objects_states ON objects (kind, observed_status, desired_state, operation);
CREATE INDEX objects_labels ON objects USING gin ((body -> 'metadata' -> 'labels') jsonb_path_ops);

CREATE TABLE event_log (
    revision   bigint PRIMARY KEY,
    kind       text COLLATE "C" NOT NULL,
    namespace  text COLLATE "C" NOT NULL,
    name       text COLLATE "C" NOT NULL,
    type       text NOT NULL CHECK (type IN ('ADDED', 'MODIFIED', 'DELETED')),
    body       jsonb NOT NULL,
    prev_body  jsonb,  -- the state before this write: consistent continued lists, selector moves
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_log_kind_rev ON event_log (kind, revision);
