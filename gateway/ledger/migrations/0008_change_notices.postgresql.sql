-- PostgreSQL only: every change to a person's evidence, opt-outs or erasures is announced
-- on the channel `ledger_changes` (LISTEN/NOTIFY), so a gateway may keep people's records
-- read lately and forget them when they change (gateway/ledger/cache.py). The payload is
-- the md5 of the address (never the address), or `*` for a statement touching many people
-- or an erasure (found by keyed hash): then every gateway forgets everything it keeps.
-- Notices are sent when the transaction commits, and only then.
CREATE OR REPLACE FUNCTION ledger_changed_people() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT COUNT(*) FROM changed) > 100 THEN
        PERFORM pg_notify('ledger_changes', '*');
    ELSE
        PERFORM pg_notify('ledger_changes', md5(address))
        FROM (SELECT DISTINCT address FROM changed) AS people;
    END IF;
    RETURN NULL;
END
$$;
CREATE OR REPLACE FUNCTION ledger_changed_all() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ledger_changes', '*');
    RETURN NULL;
END
$$;
CREATE TRIGGER evidence_added AFTER INSERT ON evidence REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_changed_people();
CREATE TRIGGER evidence_removed AFTER DELETE ON evidence REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_changed_people();
CREATE TRIGGER evidence_changed AFTER UPDATE ON evidence REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_changed_people();
CREATE TRIGGER optouts_added AFTER INSERT ON optouts REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_changed_people();
CREATE TRIGGER optouts_removed AFTER DELETE ON optouts REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_changed_people();
CREATE TRIGGER optouts_changed AFTER UPDATE ON optouts REFERENCING OLD TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_changed_people();
CREATE TRIGGER suppressions_changed AFTER INSERT OR UPDATE OR DELETE ON suppressions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_changed_all();
