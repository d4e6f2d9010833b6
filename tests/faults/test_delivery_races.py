"""Races inside delivery that once sent a copy twice without any crash (found by
bench/soak.py: 7 duplicates in 30 s at ~200 messages/s)."""

from __future__ import annotations

import asyncio

from gwtest import make_settings

from gateway.ledger.spool import Copy, Spool
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


async def test_a_late_wake_for_a_copy_the_dispatcher_already_sent_does_not_resend_it(
        tmp_path):
    """The SMTP handler's thread commits the copy; before the handler gets to wake()
    delivery, the dispatcher reads the spool, a worker sends the copy and finishes.
    The late wake() must not queue it again."""
    rt = Runtime.open(make_settings(tmp_path))
    spool = Spool(tmp_path / "data")
    delivery = Delivery(rt, spool)
    upstream = CountingUpstream()
    delivery.upstreams = [upstream]
    worker = asyncio.create_task(delivery._work(upstream))
    try:
        (item,) = spool.enqueue([Copy("copy", "a@acme.test", "b@example.com", b"x\r\n")])
        (read,) = spool.due(10, set())  # the dispatcher's read sees it queued...
        delivery.in_flight.add(read.id)
        delivery.queue.put_nowait(read)  # ...and hands it to the worker
        for _ in range(100):
            if spool.status_of(item.id) == "delivered" and not delivery.in_flight:
                break
            await asyncio.sleep(0.01)
        delivery.wake([item])  # the handler's wake, late
        await asyncio.sleep(0.1)
        assert upstream.sent == [item.id]
    finally:
        worker.cancel()
        spool.close()
        rt.close()
