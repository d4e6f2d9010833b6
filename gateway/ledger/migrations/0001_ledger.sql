-- The ledger as 0.2 made it: evidence, opt-outs, decisions, unsubscribe tokens.
-- One file for both backends: {id} is each backend's auto-numbered primary key.
CREATE TABLE IF NOT EXISTS evidence (
    id {id},
    org TEXT NOT NULL, channel TEXT NOT NULL, address TEXT NOT NULL,
    basis TEXT NOT NULL, obtained_at TEXT NOT NULL, source TEXT NOT NULL DEFAULT '',
    categories TEXT NOT NULL DEFAULT '[]', context TEXT, collected_by TEXT NOT NULL,
    opt_out_offered INTEGER, named_orgs TEXT NOT NULL DEFAULT '[]',
    recorded_at TEXT NOT NULL, recorded_via TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS evidence_person ON evidence (address, channel, org);
CREATE TABLE IF NOT EXISTS optouts (
    id {id},
    org TEXT NOT NULL, channel TEXT NOT NULL, address TEXT NOT NULL,
    kind TEXT NOT NULL, at TEXT NOT NULL, source TEXT NOT NULL DEFAULT '',
    method TEXT NOT NULL DEFAULT '', message_id TEXT, client TEXT, token TEXT
);
CREATE INDEX IF NOT EXISTS optouts_person ON optouts (address, org);
CREATE INDEX IF NOT EXISTS optouts_at ON optouts (at);
CREATE INDEX IF NOT EXISTS optouts_token ON optouts (token);
CREATE INDEX IF NOT EXISTS optouts_message ON optouts (message_id);
CREATE TABLE IF NOT EXISTS decisions (
    id {id},
    at TEXT NOT NULL, org TEXT NOT NULL, stream TEXT, channel TEXT NOT NULL,
    address TEXT NOT NULL, purpose TEXT, nature TEXT, category TEXT,
    allowed INTEGER NOT NULL, outcome TEXT NOT NULL, reason TEXT NOT NULL,
    evidence_id TEXT, message_id TEXT, mode TEXT NOT NULL, ruleset TEXT NOT NULL,
    explanation TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS decisions_person ON decisions (address, org);
CREATE INDEX IF NOT EXISTS decisions_at ON decisions (at);
CREATE INDEX IF NOT EXISTS decisions_reason_at ON decisions (reason, at);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    org TEXT NOT NULL, channel TEXT NOT NULL, address TEXT NOT NULL, stream TEXT,
    message_id TEXT, reply_to TEXT, created_at TEXT NOT NULL
);
