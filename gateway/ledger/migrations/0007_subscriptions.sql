-- Consent captured by the gateway (double opt-in) and the preference centre.
-- A sign-up request: pending until confirmed from the address itself. It allows nothing;
-- its confirmation appends a consent to `evidence` (evidence_id) and is noted here with
-- the facts the proof rests on (when, from which IP and user agent, by which means).
CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY,
    org TEXT NOT NULL, channel TEXT NOT NULL, address TEXT NOT NULL,
    source TEXT NOT NULL, wording TEXT NOT NULL, categories TEXT NOT NULL DEFAULT '[]',
    region TEXT, requested_at TEXT NOT NULL, requested_by TEXT,
    sent_at TEXT, message_id TEXT,
    confirmed_at TEXT, confirmed_ip TEXT, confirmed_user_agent TEXT, confirmed_via TEXT,
    evidence_id TEXT
);
CREATE INDEX IF NOT EXISTS subscriptions_person ON subscriptions (address, channel, org);
CREATE INDEX IF NOT EXISTS subscriptions_sent ON subscriptions (address, sent_at);
-- (evidence.confirmed_at, set when a double opt-in is confirmed, comes with 0004.)
-- An opt-out scoped to some categories (the preference centre): a JSON list; '[]' is the
-- whole channel, as every opt-out before.
ALTER TABLE optouts ADD COLUMN categories TEXT NOT NULL DEFAULT '[]'
