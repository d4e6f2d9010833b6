"""Property: for any interleaving of sends, opt-outs, new consents, restarts and upstream
outages, no copy is delivered whose person had an opt-out recorded before the copy's
final decision, and nothing accepted for a person who may still be mailed is lost.

The upstream refuses (451) except while the test drains the spool, and before a drain
every queued copy fails twice more: so each delivered copy's final decision came after
every opt-out and consent of the steps before the drain. A copy that waited while its
person was opted out may have been decided again in that window (then it is dropped for
good, as it must be) or not (then a new consent lets it go): the model allows either, and
is exact for every other copy."""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import aiosmtplib
from gwtest import (
    SOFT_OPT_IN,
    Sink,
    free_port,
    make_settings,
    seed,
    two_more_attempts_each,
    wait_until_spool_is_empty,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import server

PEOPLE = ("ann@example.com", "ben@example.com", "cat@example.com")
DOWN = "451 4.3.0 resting"
AUTH = {"Authorization": "Bearer test-admin-token"}

person = st.sampled_from(range(len(PEOPLE)))
step = st.one_of(st.tuples(st.just("send"), person), st.tuples(st.just("opt_out"), person),
                 st.tuples(st.just("consent"), person), st.just(("restart",)),
                 st.just(("drain",)))


@dataclasses.dataclass
class World:
    """What the test knows: who may be mailed now, and the copies waiting per person."""

    opted_out: set[int] = dataclasses.field(default_factory=set)
    waiting: dict[int, int] = dataclasses.field(default_factory=dict)
    # copies that waited through an opt-out: dropped, or sent after a new consent
    waited_through: dict[int, int] = dataclasses.field(default_factory=dict)
    expected: dict[str, int] = dataclasses.field(default_factory=dict)  # rcpt -> copies
    at_most: dict[str, int] = dataclasses.field(default_factory=dict)
    sent: int = 0


async def start(tmp: Path, sink: Sink, ports: dict):
    s = make_settings(tmp, upstream=f"smtp://127.0.0.1:{sink.port}?tls=none", **ports)
    s = dataclasses.replace(s, delivery=dataclasses.replace(s.delivery, retry_initial=0.05,
                                                            retry_max=0.1))
    return await server.start(s)


async def send(gw, world: World, who: int) -> bool:
    world.sent += 1
    port = gw.runtime.settings.smtp.listen.port
    message = (f"Subject: offer {world.sent}\r\nMessage-ID: <p-{world.sent}@acme.test>\r\n\r\n"
               "Hedge trimmers.\r\n").encode()
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as c:
            await c.login("acme-news", "news-pass")
            await c.sendmail("news@acme.test", [PEOPLE[who]], message)
    except aiosmtplib.SMTPDataError as exc:
        assert exc.code == 550 and "opted_out" in exc.message
        return False
    return True


async def api(gw, path: str, body: dict) -> None:
    base = gw.runtime.settings.http.public_url
    async with aiohttp.ClientSession(base_url=base, headers=AUTH) as http, \
            http.post(path, json=body) as resp:
        assert resp.status == 201, await resp.text()


async def drain(gw, sink: Sink, world: World) -> None:
    await two_more_attempts_each(gw)
    sink.reply = "250 OK"
    await wait_until_spool_is_empty(gw)
    sink.reply = DOWN
    for who in range(len(PEOPLE)):
        if who in world.opted_out:  # dropped: never delivered, even after a later consent
            continue
        sure, maybe = world.waiting.get(who, 0), world.waited_through.get(who, 0)
        world.expected[PEOPLE[who]] = world.expected.get(PEOPLE[who], 0) + sure
        world.at_most[PEOPLE[who]] = world.at_most.get(PEOPLE[who], 0) + sure + maybe
    world.waiting.clear()
    world.waited_through.clear()


async def scenario(steps: list[tuple]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sink = Sink(free_port(), reply=DOWN)
        await sink.start()
        ports = {"smtp_port": free_port(), "http_port": free_port()}
        gw = await start(Path(tmp), sink, ports)
        world = World()
        try:
            for who in range(len(PEOPLE)):
                seed(gw.runtime, address=PEOPLE[who], **SOFT_OPT_IN)
            for action, *args in [*steps, ("drain",)]:
                if action == "send":
                    accepted = await send(gw, world, args[0])
                    assert accepted == (args[0] not in world.opted_out)
                    if accepted:
                        world.waiting[args[0]] = world.waiting.get(args[0], 0) + 1
                elif action == "opt_out":
                    await api(gw, "/api/v1/optouts", {"org": "acme", "channel": "email",
                                                      "address": PEOPLE[args[0]],
                                                      "source": "property test"})
                    world.opted_out.add(args[0])
                    world.waited_through[args[0]] = world.waited_through.get(args[0], 0) + \
                        world.waiting.pop(args[0], 0)
                elif action == "consent":
                    await api(gw, "/api/v1/consents", {
                        "org": "acme", "channel": "email", "address": PEOPLE[args[0]],
                        "basis": "consent", "source": "signed up again",
                        "obtained_at": datetime.now(UTC).isoformat()})
                    world.opted_out.discard(args[0])  # given after every opt-out so far
                elif action == "restart":
                    await gw.stop()
                    gw = await start(Path(tmp), sink, ports)
                else:
                    await drain(gw, sink, world)
            delivered: dict[str, int] = {}
            for _, rcpts, _ in sink.messages:
                for rcpt in rcpts:
                    delivered[rcpt] = delivered.get(rcpt, 0) + 1
            delivered.pop("news@acme.test", None)  # DSNs for the copies dropped
            for who in PEOPLE:
                got = delivered.pop(who, 0)
                assert world.expected.get(who, 0) <= got <= world.at_most.get(who, 0), who
            assert not delivered
        finally:
            await gw.stop()
            await sink.stop()


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(step, min_size=1, max_size=12))
def test_no_copy_is_delivered_after_an_opt_out_in_any_interleaving(steps):
    asyncio.run(scenario(steps))
