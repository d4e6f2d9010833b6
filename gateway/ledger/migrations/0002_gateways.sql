-- Gateways sharing the ledger announce themselves here (one row each, updated by its
-- heartbeat): what /status shows for every gateway of a cluster.
CREATE TABLE IF NOT EXISTS gateways (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL, smtp_listen TEXT NOT NULL, http_listen TEXT NOT NULL,
    data_dir TEXT NOT NULL, version TEXT NOT NULL,
    started_at TEXT NOT NULL, heartbeat_at TEXT NOT NULL,
    spool_depth INTEGER NOT NULL DEFAULT 0, oldest_queued_at {real},
    health TEXT NOT NULL DEFAULT '{{}}'
);
