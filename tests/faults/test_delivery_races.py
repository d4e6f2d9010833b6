"""Races inside delivery that once sent a copy twice without any crash (found by
bench/soak.py: 7 duplicates in 30 s at ~200 messages/s). The spool is the only hand-off
now: a copy is taken from it, and stays taken until its attempt's outcome is committed."""

from __future__ import annotations

import asyncio
import threading

from gwtest import make_settings

from gateway.ledger.spool import Copy, Finish, Spool
from gateway.mail.delivery import Delivery
from gateway.runtime import Runtime


class CountingUpstream:
    def __init__(self) -> None:
        self.sent: list[int] = []

    async def send(self, item) -> str:
        self.sent.append(item.id)
        return "ok"

    async def close(self) -> None:
        return None


def copy() -> Copy:
    return Copy("copy", "a@acme.test", "b@example.com", b"x\r\n")


def test_a_taken_copy_is_not_taken_again_until_its_attempt_is_recorded(tmp_path):
    spool = Spool(tmp_path)
    try:
        (item,) = spool.enqueue([copy()])
        assert [t.id for t in spool.take(10)] == [item.id]
        assert spool.take(10) == []  # held by delivery
        spool.write_batch([], [Finish(item.id, "queued", "451 try later", retry_at=0.0)])
        assert [t.id for t in spool.take(10)] == [item.id]  # deferred, due again
        spool.write_batch([], [Finish(item.id, "delivered", "250 ok")])
        assert spool.take(10) == [] and spool.taken == 0
    finally:
        spool.close()


def test_a_copy_released_unattempted_is_due_again_and_a_new_spool_frees_every_copy(tmp_path):
    spool = Spool(tmp_path)
    (item,) = spool.enqueue([copy()])
    spool.take(10)
    spool.release([item.id])
    assert [t.id for t in spool.take(10)] == [item.id]
    spool.close()  # a restart: what this process held is free again
    spool = Spool(tmp_path)
    try:
        assert [t.id for t in spool.take(10)] == [item.id]
    finally:
        spool.close()


def test_a_copy_finished_while_another_thread_reads_is_never_read_back_as_queued(tmp_path):
    """Reads and the commit of an outcome interleave from two threads many times: no read
    hands out a copy whose outcome is already committed."""
    spool = Spool(tmp_path)
    try:
        items = spool.enqueue([copy() for _ in range(300)])
        done: set[int] = set()
        handed: list[int] = []
        stop = threading.Event()

        def reader():
            while not stop.is_set():
                handed.extend(t.id for t in spool.take(5))

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for item in items:
                while item.id not in handed:
                    pass
                spool.write_batch([], [Finish(item.id, "delivered", "250 ok")])
                done.add(item.id)
        finally:
            stop.set()
            thread.join()
        assert sorted(handed) == sorted(i.id for i in items)  # each handed out once
    finally:
        spool.close()


async def test_a_wake_after_the_copy_was_sent_does_not_send_it_again(tmp_path):
    """The SMTP handler's thread commits the copy; before the handler gets to wake()
    delivery, the dispatcher reads the spool, a worker sends the copy and finishes.
    The late wake() reads the spool again and finds nothing to send."""
    rt = Runtime.open(make_settings(tmp_path))
    spool = Spool(tmp_path / "data")
    delivery = Delivery(rt, spool)
    upstream = CountingUpstream()
    delivery.upstreams = [upstream]
    delivery.start()
    try:
        (item,) = spool.enqueue([copy()])
        delivery.wake()
        for _ in range(200):
            if spool.status_of(item.id) == "delivered":
                break
            await asyncio.sleep(0.01)
        delivery.wake()  # the handler's wake, late
        await asyncio.sleep(0.2)
        assert upstream.sent == [item.id]
    finally:
        await delivery.stop(grace=1)
        spool.close()
        rt.close()


async def test_a_copy_erased_while_its_attempt_holds_it_gets_exactly_one_dsn(tmp_path):
    """The erasure deletes the copy while a worker holds it (taken): the erasure leaves
    the DSN to that attempt, which finds its row gone and sends it, once."""
    from gwtest import SOFT_OPT_IN, seed

    from gateway.ledger.spool import Marketing
    from gateway.privacy.erasure import ErasureRequest, Erasures

    rt = Runtime.open(make_settings(tmp_path))
    spool = Spool(tmp_path / "data")
    delivery = Delivery(rt, spool)
    upstream = CountingUpstream()
    try:
        seed(rt, address="b@example.com", **SOFT_OPT_IN)
        spool.enqueue([Copy("copy", "news@acme.test", "b@example.com", b"Subject: x\r\n\r\nx\r\n",
                            "<m@acme.test>", "acme-news", "acme",
                            Marketing("b@example.com", "marketing", "commercial",
                                      "lawnmowers"))])
        (held,) = spool.take(10)  # a worker has it
        answer = Erasures(rt.ledger, rt.consent, lambda: [spool]).erase(
            ErasureRequest("email", "b@example.com", "acme", "letter"))
        assert answer["removed"]["copies"] == 1
        assert spool.take(10) == []  # the erasure spooled no DSN of its own
        await delivery._deliver(upstream, held)
        assert upstream.sent == []  # never delivered
        (dsn,) = spool.take(10)
        assert (dsn.copy.kind, dsn.copy.rcpt) == ("dsn", "news@acme.test")
        assert b"erased" in dsn.copy.data
    finally:
        spool.close()
        rt.close()
