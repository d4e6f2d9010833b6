-- Opt-outs that arrive from elsewhere: each event an ESP webhook (SendGrid, Mailgun,
-- Postmark) or a mailbox provider's ARF report brought, kept as the source of the opt-out it
-- recorded, or kept for the operator when it named nobody the gateway can tell. A provider's
-- event id is unique per provider: a retried or replayed event (on any gateway sharing the
-- ledger) is kept once.
CREATE TABLE IF NOT EXISTS optout_events (
    id {id},
    provider TEXT NOT NULL, event_id TEXT NOT NULL, event_type TEXT NOT NULL,
    event_at TEXT, received_at TEXT NOT NULL, method TEXT NOT NULL,
    outcome TEXT NOT NULL, org TEXT, stream TEXT, address TEXT, optout_id BIGINT,
    problem TEXT NOT NULL DEFAULT '', payload TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX IF NOT EXISTS optout_events_key ON optout_events (provider, event_id);
CREATE INDEX IF NOT EXISTS optout_events_received ON optout_events (received_at);
-- Webhook nonces seen (Mailgun's token): a replayed request is refused on every gateway
-- sharing the ledger. Kept while a request carrying one could still be fresh, then pruned.
CREATE TABLE IF NOT EXISTS webhook_nonces (
    provider TEXT NOT NULL, nonce TEXT NOT NULL, seen_at TEXT NOT NULL,
    PRIMARY KEY (provider, nonce)
);
CREATE INDEX IF NOT EXISTS webhook_nonces_seen ON webhook_nonces (seen_at);
-- The status page lists the newest events kept for the operator.
CREATE INDEX IF NOT EXISTS optout_events_outcome ON optout_events (outcome, id);
