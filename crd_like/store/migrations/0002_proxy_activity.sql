-- Workspace proxy (docs/proxy.md): open connections per server replica, the throttle of
-- status.last_access_at writes shared by all replicas, and sign-in links already used.

CREATE TABLE proxy_connections (
    replica_id   text COLLATE "C" NOT NULL,
    workspace    text COLLATE "C" NOT NULL,  -- metadata.uid
    open_count   integer NOT NULL CHECK (open_count >= 0),
    heartbeat_at timestamptz NOT NULL,
    PRIMARY KEY (replica_id, workspace)
);
CREATE INDEX proxy_connections_workspace ON proxy_connections (workspace, heartbeat_at);

CREATE TABLE proxy_activity_writes (
    workspace  text COLLATE "C" PRIMARY KEY,
    written_at timestamptz NOT NULL
);

CREATE TABLE proxy_used_links (
    link_id    text COLLATE "C" PRIMARY KEY,
    expires_at timestamptz NOT NULL
);
CREATE INDEX proxy_used_links_expiry ON proxy_used_links (expires_at);
