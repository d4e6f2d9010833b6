"""Password guessing is slowed, then refused, per client address (contract, 0.3 "No back
doors"; issue 12): failed SMTP AUTH, bad admin bearer tokens on /api/v1 and bad /status
passwords. A client that has not failed is never refused, whatever others do.

Every end-to-end test runs from 127.0.0.1, one client: that other clients are not
refused is shown on the throttle itself (`gateway.anvil`), with different addresses."""

from __future__ import annotations

import asyncio
import base64
import time

import aiohttp
import aiosmtplib
import pytest
from gwtest import make_settings

from gateway import server
from gateway.anvil import FAILURES_PER_WINDOW, FIRST_DELAY, WINDOW_SECONDS, Anvil

pytestmark = pytest.mark.timeout(60)

ADMIN = {"Authorization": "Bearer test-admin-token"}
WRONG_BEARER = {"Authorization": "Bearer not-the-admin-token"}


def basic(password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"op:{password}".encode()).decode()}


# -- the throttle itself ----------------------------------------------------------------


def test_a_client_without_failures_is_neither_slowed_nor_refused():
    anvil = Anvil()

    assert anvil.delay("192.0.2.1", now=0.0) == 0.0
    assert anvil.retry_after("192.0.2.1", now=0.0) is None


def test_each_failure_slows_the_client_more():
    anvil = Anvil(limit=10, first_delay=0.1, max_delay=2.0)
    delays = []
    for n in range(6):
        anvil.fail("192.0.2.1", now=float(n))
        delays.append(anvil.delay("192.0.2.1", now=float(n)))

    assert delays[0] == pytest.approx(0.1)
    assert delays == sorted(delays) and delays[-1] == pytest.approx(2.0)


def test_a_client_is_refused_after_the_limit_until_the_window_has_passed():
    anvil = Anvil(limit=3, window=60.0)
    for n in range(3):
        assert anvil.retry_after("192.0.2.1", now=float(n)) is None
        anvil.fail("192.0.2.1", now=float(n))

    assert anvil.retry_after("192.0.2.1", now=3.0) == pytest.approx(57.0)
    assert anvil.retry_after("192.0.2.1", now=60.5) is None  # the first failure expired


def test_one_client_failing_never_refuses_another():
    anvil = Anvil(limit=3)
    for n in range(50):
        anvil.fail("192.0.2.66", now=float(n) / 100)

    assert anvil.retry_after("192.0.2.66", now=1.0) is not None
    assert anvil.retry_after("192.0.2.7", now=1.0) is None
    assert anvil.delay("192.0.2.7", now=1.0) == 0.0
    assert anvil.retry_after("2001:db8::7", now=1.0) is None


def test_memory_is_bounded_by_forgetting_the_oldest_clients():
    anvil = Anvil(max_clients=100)
    for n in range(1000):
        anvil.fail(f"10.0.{n // 256}.{n % 256}", now=1.0)

    assert len(anvil) == 100
    assert anvil.failures("10.0.3.231", now=1.0) == 1  # the latest, kept


def test_clients_whose_failures_expired_are_forgotten():
    anvil = Anvil(window=10.0)
    for n in range(100):
        anvil.fail(f"10.0.0.{n}", now=0.0)
    anvil.fail("10.0.1.1", now=20.0)

    assert len(anvil) == 1


def test_the_defaults_are_ten_failures_in_ten_minutes():
    assert (FAILURES_PER_WINDOW, WINDOW_SECONDS) == (10, 600.0)


# -- SMTP AUTH --------------------------------------------------------------------------


@pytest.fixture
async def gw(tmp_path):
    running = await server.start(make_settings(tmp_path))
    yield running
    await running.stop()


def smtp_port(gw) -> int:
    return gw.runtime.settings.smtp.listen.port


async def smtp_login(gw, password: str) -> tuple[int, str]:
    """One connection, one AUTH PLAIN as acme-news: the reply's code and text."""
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port(gw), start_tls=False,
                             timeout=10)
    await client.connect()
    try:
        await client.ehlo()
        blob = base64.b64encode(f"\0acme-news\0{password}".encode()).decode()
        reply = await client.execute_command(b"AUTH", b"PLAIN", blob.encode())
        return reply.code, reply.message
    finally:
        client.close()


async def fail_smtp_logins(gw, count: int) -> None:
    """`count` wrong passwords at once, each on its own connection."""
    replies = await asyncio.gather(*(smtp_login(gw, f"guess-{n}") for n in range(count)))
    assert [code for code, _ in replies] == [535] * count


async def test_a_correct_smtp_login_from_a_client_that_never_failed_is_accepted(gw):
    assert (await smtp_login(gw, "news-pass"))[0] == 235


async def test_a_second_smtp_login_after_a_failure_is_slowed(gw):
    await fail_smtp_logins(gw, 1)
    started = time.monotonic()
    code, _ = await smtp_login(gw, "news-pass")

    assert code == 235
    assert time.monotonic() - started >= FIRST_DELAY


async def test_ten_failed_smtp_logins_refuse_the_client_with_421(gw):
    await fail_smtp_logins(gw, FAILURES_PER_WINDOW)

    code, message = await smtp_login(gw, "news-pass")  # right, but too late

    assert code == 421
    assert message.startswith("4.7.0 ")


async def test_a_refused_smtp_client_is_disconnected(gw):
    await fail_smtp_logins(gw, FAILURES_PER_WINDOW)
    reader, writer = await asyncio.open_connection("127.0.0.1", smtp_port(gw))
    blob = base64.b64encode(b"\0acme-news\0news-pass")
    writer.write(b"EHLO x\r\nAUTH PLAIN " + blob + b"\r\nNOOP\r\n")
    text = (await asyncio.wait_for(reader.read(), 10)).decode()  # to EOF: closed by us
    writer.close()

    assert "\r\n421 4.7.0 " in text
    assert "\r\n250 " not in text.split("421 4.7.0")[1]  # nothing after the 421


async def test_nine_failed_smtp_logins_do_not_refuse_a_correct_one(gw):
    await fail_smtp_logins(gw, FAILURES_PER_WINDOW - 1)

    assert (await smtp_login(gw, "news-pass"))[0] == 235


async def test_a_refused_client_may_still_send_to_the_mailto_domain(gw):
    """The throttle refuses AUTH only: opt-out mail from that address still arrives."""
    await fail_smtp_logins(gw, FAILURES_PER_WINDOW)
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=smtp_port(gw), start_tls=False,
                               timeout=10) as client:
        await client.mail("someone@example.com")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await client.rcpt("unsubscribe+nosuchtoken@unsub.gw.test")

    # An unknown token: the mailto path answered, not the throttle.
    assert refused.value.code == 550


# -- HTTP: admin bearer token and /status passwords --------------------------------------


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def url(gw, path: str) -> str:
    return gw.runtime.settings.http.public_url + path


async def get_status(http, gw, path: str, headers: dict) -> aiohttp.ClientResponse:
    async with http.get(url(gw, path), headers=headers) as resp:
        await resp.read()
        return resp


async def fail_http_logins(http, gw, path: str, headers: dict, count: int) -> None:
    replies = await asyncio.gather(*(get_status(http, gw, path, headers)
                                     for _ in range(count)))
    assert [r.status for r in replies] == [401] * count


CONTACT = "/api/v1/contacts/email/jane@example.com"


async def test_a_bad_admin_token_is_answered_slowly(gw, http):
    started = time.monotonic()
    resp = await get_status(http, gw, CONTACT, WRONG_BEARER)

    assert resp.status == 401
    assert time.monotonic() - started >= FIRST_DELAY


async def test_ten_bad_admin_tokens_refuse_the_client_with_429(gw, http):
    await fail_http_logins(http, gw, CONTACT, WRONG_BEARER, FAILURES_PER_WINDOW)

    resp = await get_status(http, gw, CONTACT, ADMIN)  # right, but too late

    assert resp.status == 429
    assert 0 < int(resp.headers["Retry-After"]) <= WINDOW_SECONDS


@pytest.mark.parametrize("path", ["/status", "/status.json", "/metrics"])
async def test_ten_bad_status_passwords_refuse_the_client_with_429(gw, http, path):
    await fail_http_logins(http, gw, path, basic("guess"), FAILURES_PER_WINDOW)

    resp = await get_status(http, gw, path, basic("test-admin-token"))

    assert resp.status == 429
    assert int(resp.headers["Retry-After"]) > 0


async def test_bad_status_passwords_and_bad_admin_tokens_count_together(gw, http):
    """Both guess the same secret, the admin token."""
    await fail_http_logins(http, gw, "/status.json", basic("guess"), 5)
    await fail_http_logins(http, gw, CONTACT, WRONG_BEARER, FAILURES_PER_WINDOW - 5)

    assert (await get_status(http, gw, "/metrics", ADMIN)).status == 429


async def test_nine_bad_admin_tokens_do_not_refuse_a_correct_one(gw, http):
    await fail_http_logins(http, gw, CONTACT, WRONG_BEARER, FAILURES_PER_WINDOW - 1)

    assert (await get_status(http, gw, CONTACT, ADMIN)).status == 200


async def test_requests_without_credentials_are_not_counted_as_failures(gw, http):
    """A browser asks without credentials first; only a credential sent counts."""
    for _ in range(2 * FAILURES_PER_WINDOW):
        assert (await get_status(http, gw, "/status", {})).status == 401

    assert (await get_status(http, gw, "/status", basic("test-admin-token"))).status == 200
