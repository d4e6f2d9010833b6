-- Erasure (docs/privacy.md): an erased person leaves one suppression entry per erasure, a
-- keyed hash (HMAC-SHA256 under [privacy] suppression_key) of the normalised address and
-- channel, with the org scope (an org id or "*"), the time, the operator's source and the
-- counts of what was removed. Never the address. Retention never deletes these.
CREATE TABLE IF NOT EXISTS suppressions (
    id {id},
    hash TEXT NOT NULL, channel TEXT NOT NULL, org TEXT NOT NULL,
    at TEXT NOT NULL, source TEXT NOT NULL DEFAULT '',
    removed TEXT NOT NULL DEFAULT '{{}}'
);
CREATE INDEX IF NOT EXISTS suppressions_person ON suppressions (hash, org);
-- A keyed hash of a fixed text under the key the suppression entries were made with: a
-- gateway with another key (a different data_dir's generated key, a rotated key) would
-- not find them, so it refuses to start instead.
CREATE TABLE IF NOT EXISTS suppression_key (
    id INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL, created_at TEXT NOT NULL
)
