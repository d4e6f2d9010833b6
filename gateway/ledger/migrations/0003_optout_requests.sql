-- An opt-out request's own id, unique: a provider's retried webhook, or an opt-out kept
-- in data_dir during a ledger outage and written once it is back, is recorded once, on
-- every gateway sharing the ledger (the database refuses the second row).
ALTER TABLE optouts ADD COLUMN request_id TEXT;
CREATE UNIQUE INDEX IF NOT EXISTS optouts_request ON optouts (request_id);
