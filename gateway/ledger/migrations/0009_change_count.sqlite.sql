-- SQLite only: lets a gateway keep people's records read lately (Ledger.history) and know
-- for sure when any of them may have changed. An insert into evidence, optouts or
-- suppressions raises that table's largest id (rowids only grow while the largest row
-- stays); an update or a delete, far rarer (erasures), counts here instead. So
-- (max evidence id, max opt-out id, max suppression id, n) changes with every committed
-- change a decision could see. Per-row triggers on inserts would cost a bulk import
-- more than twice its time; these fire only on updates and deletes.
-- (`$$` groups a trigger's body into one statement for the migration runner; SQLite never
-- sees it.)
CREATE TABLE ledger_change_count (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n INTEGER NOT NULL
);
INSERT INTO ledger_change_count (id, n) VALUES (1, 0);
CREATE TRIGGER evidence_changed_count AFTER UPDATE ON evidence
    $$BEGIN UPDATE ledger_change_count SET n = n + 1 WHERE id = 1; END$$;
CREATE TRIGGER evidence_removed_count AFTER DELETE ON evidence
    $$BEGIN UPDATE ledger_change_count SET n = n + 1 WHERE id = 1; END$$;
CREATE TRIGGER optouts_changed_count AFTER UPDATE ON optouts
    $$BEGIN UPDATE ledger_change_count SET n = n + 1 WHERE id = 1; END$$;
CREATE TRIGGER optouts_removed_count AFTER DELETE ON optouts
    $$BEGIN UPDATE ledger_change_count SET n = n + 1 WHERE id = 1; END$$;
CREATE TRIGGER suppressions_changed_count AFTER UPDATE ON suppressions
    $$BEGIN UPDATE ledger_change_count SET n = n + 1 WHERE id = 1; END$$;
CREATE TRIGGER suppressions_removed_count AFTER DELETE ON suppressions
    $$BEGIN UPDATE ledger_change_count SET n = n + 1 WHERE id = 1; END$$;
