"""The writer: decisions reached in one turn of the event loop share one commit, each
caller gets its own decision's id, and a held write lock or a closed store loses or mixes
up nothing."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from gwtest import make_settings, seed

from gateway.consent import classify
from gateway.errors import StoreUnavailable
from gateway.ledger.writer import Writes
from gateway.runtime import Runtime

PEOPLE = [f"person{i}@example.com" for i in range(30)]


@pytest.fixture
def rt(tmp_path, ledger_url):
    runtime = Runtime.open(make_settings(tmp_path, ledger_url=ledger_url))
    for person in PEOPLE[::2]:  # every other one has consent
        seed(runtime, address=person, basis="consent", source="form")
    yield runtime
    runtime.close()


async def decide_all(rt, people):
    c = classify(rt.settings.streams[0])
    return await asyncio.gather(*(rt.consent.adecide(c, "email", p, f"<m{i}@acme.test>")
                                  for i, p in enumerate(people)))


def recorded(rt, verdicts, people):
    """Each verdict's id names the row of its own person, with its own outcome."""
    for verdict, person in zip(verdicts, people):
        row = rt.ledger.decisions_for(person)[-1]
        assert row["id"] == verdict.decision_id
        assert row["reason"] == verdict.decision.reason


def test_decisions_recorded_in_one_turn_share_one_commit_and_keep_their_own_ids(rt):
    c = classify(rt.settings.streams[0])
    decided = [(p, rt.consent.evaluate(c, "email", p)) for p in PEOPLE]

    async def record_all():
        return await asyncio.gather(*(rt.consent.arecord(c, "email", p, d, f"<m{i}@acme.test>")
                                      for i, (p, d) in enumerate(decided)))

    before = rt.ledger.commits
    verdicts = asyncio.run(record_all())
    assert rt.ledger.commits == before + 1  # one transaction for the 30
    assert len({v.decision_id for v in verdicts}) == len(PEOPLE)
    assert [v.decision.allowed for v in verdicts] == [i % 2 == 0 for i in range(len(PEOPLE))]
    recorded(rt, verdicts, PEOPLE)


class OtherWriter:
    """Another connection (another worker or gateway) in the middle of a write."""

    def __init__(self, rt):
        if rt.settings.ledger.postgres:
            import psycopg

            self.conn = psycopg.connect(rt.settings.ledger.url, autocommit=True)
            self.begin = "BEGIN; LOCK TABLE decisions IN EXCLUSIVE MODE"
        else:
            self.conn = sqlite3.connect(rt.ledger.path, isolation_level=None)
            self.begin = "BEGIN IMMEDIATE"

    def execute(self, sql: str) -> None:
        for statement in (self.begin if sql == "BEGIN" else sql).split("; "):
            self.conn.execute(statement)

    def close(self) -> None:
        self.conn.close()


def test_while_another_connection_holds_the_lock_they_wait_for_it_in_the_writer(rt):
    other = OtherWriter(rt)

    async def go():
        other.execute("BEGIN")  # e.g. another worker process mid-commit
        pending = asyncio.ensure_future(decide_all(rt, PEOPLE))
        await asyncio.sleep(0.1)
        assert not pending.done()  # nothing written around the lock
        other.execute("COMMIT")
        return await pending

    try:
        verdicts = asyncio.run(go())
    finally:
        other.close()
    recorded(rt, verdicts, PEOPLE)


def test_a_caller_that_gives_up_does_not_disturb_the_others(rt):
    async def go():
        c = classify(rt.settings.streams[0])
        tasks = [asyncio.ensure_future(rt.consent.adecide(c, "email", p)) for p in PEOPLE]
        await asyncio.sleep(0)  # every task now waits for the end of the turn
        tasks[3].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        return done

    done = asyncio.run(go())
    assert isinstance(done[3], asyncio.CancelledError)
    others = [v for i, v in enumerate(done) if i != 3]
    recorded(rt, others, [p for i, p in enumerate(PEOPLE) if i != 3])


def test_after_close_a_write_is_refused_clearly(tmp_path, ledger_url):
    rt = Runtime.open(make_settings(tmp_path, ledger_url=ledger_url))
    c = classify(rt.settings.streams[0])
    decisions = [rt.consent.evaluate(c, "email", p) for p in PEOPLE[:3]]
    rt.close()

    async def go():
        return await asyncio.gather(*(rt.consent.arecord(c, "email", p, d)
                                      for p, d in zip(PEOPLE, decisions)),
                                    return_exceptions=True)

    assert all(isinstance(r, StoreUnavailable) for r in asyncio.run(go()))


def test_writes_left_by_a_loop_that_closed_mid_turn_are_not_lost(rt):
    """A loop that stops before its turn ends leaves its gathered writes behind: the next
    loop's first write has them committed (not lost, and its own not stuck behind them)."""
    c = classify(rt.settings.streams[0])
    decisions = {p: rt.consent.evaluate(c, "email", p) for p in PEOPLE[:4]}
    first = asyncio.new_event_loop()

    def hand_over_then_stop():
        for p in PEOPLE[:2]:
            rt.writer._gather(Writes(decisions=[rt.consent.entry(c, "email", p, decisions[p])]))
        first.stop()  # before the turn that would commit them

    try:
        first.call_soon(hand_over_then_stop)
        first.run_forever()
    finally:
        first.close()
    assert rt.ledger.decisions_for(PEOPLE[0]) == []

    async def later():
        return await asyncio.gather(*(rt.consent.arecord(c, "email", p, decisions[p])
                                      for p in PEOPLE[2:4]))

    recorded(rt, asyncio.run(later()), PEOPLE[2:4])
    rt.writer.close()  # the orphans went through the thread: wait for it
    for person in PEOPLE[:2]:
        assert len(rt.ledger.decisions_for(person)) == 1

