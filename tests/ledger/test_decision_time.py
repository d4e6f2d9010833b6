"""The audit log says when a decision was made, not when its record was written: an
opt-out that arrives in between shows as after the decision (as it was), never as an
opt-out the decision ignored."""

from __future__ import annotations

import asyncio

from gwtest import make_settings, seed

from gateway.consent import classify
from gateway.runtime import Runtime

PERSON = "jane@example.com"


def test_an_opt_out_between_deciding_and_recording_comes_after_the_decision(tmp_path, ledger_url):
    rt = Runtime.open(make_settings(tmp_path, ledger_url=ledger_url))
    try:
        seed(rt, address=PERSON, basis="consent", source="form")
        c = classify(rt.settings.streams[0])
        decision = rt.consent.evaluate(c, "email", PERSON)
        assert decision.allowed
        rt.ledger.record_opt_out("acme", "email", PERSON, source="arrived meanwhile")
        rt.consent.record(c, "email", PERSON, decision, "<m@acme.test>")
        recorded = rt.ledger.decisions_for(PERSON)[0]
        opt_out = rt.ledger.opt_out_rows(PERSON)[0]
        assert recorded["at"] < opt_out["at"]
        # The next decision sees the opt-out.
        assert rt.consent.evaluate(c, "email", PERSON).reason == "opted_out"
    finally:
        rt.close()


def test_the_writer_records_the_decision_time_too(tmp_path, ledger_url):
    rt = Runtime.open(make_settings(tmp_path, ledger_url=ledger_url))

    async def go() -> None:
        c = classify(rt.settings.streams[0])
        decision = rt.consent.evaluate(c, "email", PERSON)
        await asyncio.sleep(0.01)
        verdict = await rt.consent.arecord(c, "email", PERSON, decision)
        recorded = rt.ledger.decisions_for(PERSON)[0]
        assert recorded["id"] == verdict.decision_id
        assert recorded["at"] == decision.decided_at.isoformat(timespec="microseconds")

    try:
        asyncio.run(go())
    finally:
        rt.close()
