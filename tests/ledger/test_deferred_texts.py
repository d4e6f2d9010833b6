"""The store of deferred texts (gateway/ledger/deferred.py): durable across reopening,
claimed by one process at a time, erasable per person."""

from __future__ import annotations

import time

from gateway.ledger.deferred import CLAIM_TIMEOUT, DeferredText, DeferredTexts


def held(to: str = "+12125550100", org: str = "acme", send_at: float = 100.0,
         message_id: str = "SM1") -> DeferredText:
    return DeferredText(message_id=message_id, stream="acme-news", org=org, to=to,
                        from_="+447400123000", body="Spring sale", purpose="marketing",
                        nature="commercial", category="garden-tools", status_callback=None,
                        created_at=50.0, send_at=send_at)


def test_a_held_text_is_due_at_its_time_and_survives_reopening(tmp_path):
    store = DeferredTexts(tmp_path)
    text_id = store.hold(held(send_at=100.0))
    assert store.due(now=99.0) == []
    store.close()
    store = DeferredTexts(tmp_path)
    try:
        [due] = store.due(now=100.0)
        assert (due.id, due.to, due.body, due.category) == (text_id, "+12125550100",
                                                             "Spring sale", "garden-tools")
        assert store.stats() == {"count": 1, "next_send_at": 100.0}
    finally:
        store.close()


def test_a_text_is_claimed_once_and_a_claim_never_finished_is_taken_up_again(tmp_path):
    one, other = DeferredTexts(tmp_path), DeferredTexts(tmp_path)  # two processes
    try:
        text_id = one.hold(held())
        assert one.claim(text_id, now=200.0)
        assert not other.claim(text_id, now=200.0)
        assert other.due(now=200.0) == []
        later = 200.0 + CLAIM_TIMEOUT + 1  # the first crashed mid-send
        assert [t.id for t in other.due(now=later)] == [text_id]
        assert other.claim(text_id, now=later)
        other.done(text_id)
        assert one.stats()["count"] == 0
    finally:
        one.close()
        other.close()


def test_a_text_deferred_again_waits_for_its_new_time(tmp_path):
    store = DeferredTexts(tmp_path)
    try:
        text_id = store.hold(held(send_at=100.0))
        assert store.claim(text_id, now=100.0)
        store.reschedule(text_id, 500.0)
        assert store.due(now=400.0) == []
        assert [t.id for t in store.due(now=500.0)] == [text_id]
    finally:
        store.close()


def test_erase_texts_deletes_a_persons_texts_of_one_org_or_all(tmp_path):
    store = DeferredTexts(tmp_path)
    try:
        store.hold(held(org="acme"))
        store.hold(held(org="bloom"))
        store.hold(held(to="+12125550199"))
        assert store.erase_texts("+12125550100", "acme") == 1
        assert store.erase_texts("+12125550100") == 1
        assert [t.to for t in store.due(now=time.time())] == ["+12125550199"]
    finally:
        store.close()
    assert b"+12125550100" not in (tmp_path / "deferred-texts.db").read_bytes()
