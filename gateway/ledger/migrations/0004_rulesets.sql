-- Rule sets per recipient (docs/rulesets.md): the evidence fields they read, and the rule
-- set's region and where it came from on every decision. Old rows keep their meaning:
-- relationship one_off, written false, nothing confirmed, no region.
ALTER TABLE evidence ADD COLUMN region TEXT;
ALTER TABLE evidence ADD COLUMN relationship TEXT NOT NULL DEFAULT 'one_off';
ALTER TABLE evidence ADD COLUMN relationship_ended_at TEXT;
ALTER TABLE evidence ADD COLUMN written INTEGER NOT NULL DEFAULT 0;
ALTER TABLE evidence ADD COLUMN confirmed_at TEXT;
ALTER TABLE decisions ADD COLUMN region TEXT NOT NULL DEFAULT '';
ALTER TABLE decisions ADD COLUMN region_source TEXT NOT NULL DEFAULT ''
