"""Evidence records what already happened: a time in the future (a mistyped year) or a
record without a source is refused, so it can never outrank a later opt-out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp
import aiosmtplib
import pytest
from gwtest import make_settings

from gateway import server
from gateway.policy import Evidence

ADDRESS = "alice@example.com"
AUTH = {"Authorization": "Bearer test-admin-token"}


def consent(**over) -> dict:
    return {"org": "acme", "channel": "email", "address": ADDRESS, "basis": "consent",
            "obtained_at": "2026-01-10T10:00:00Z", "source": "signup form v3", **over}


def iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


@pytest.fixture
async def gw(tmp_path):
    async with await server.start(make_settings(tmp_path)) as running:
        yield running


@pytest.fixture
async def api(gw):
    async with aiohttp.ClientSession(base_url=gw.runtime.settings.http.public_url,
                                     headers=AUTH) as session:
        yield session


async def post(api, path: str, body: dict) -> tuple[int, dict]:
    async with api.post(path, json=body) as resp:
        return resp.status, await resp.json()


async def send_marketing(gw) -> None:
    port = gw.runtime.settings.smtp.listen.port
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        await client.login("acme-news", "news-pass")
        await client.sendmail("news@acme.test", [ADDRESS],
                              b"Subject: Offers\r\n\r\nHedge trimmers.\r\n")


async def test_consent_dated_in_2030_is_refused_and_the_opt_out_keeps_blocking(gw, api):
    status, _ = await post(api, "/api/v1/optouts", {"org": "acme", "channel": "email",
                                                     "address": ADDRESS, "source": "phone"})
    assert status == 201

    status, body = await post(api, "/api/v1/consents",
                              consent(obtained_at="2030-01-10T10:00:00Z"))

    assert status == 422 and set(body["fields"]) == {"obtained_at"}
    assert "future" in body["fields"]["obtained_at"]
    assert gw.runtime.ledger.evidence_for(ADDRESS) == ()
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:  # a stream with allow_headers
        await send_marketing(gw)
    assert "opted_out" in str(refused.value)


@pytest.mark.parametrize("source", [None, "", "   "], ids=["missing", "empty", "blank"])
async def test_evidence_without_a_source_is_refused_naming_source(gw, api, source):
    record = consent(source=source)
    if source is None:
        del record["source"]

    status, body = await post(api, "/api/v1/consents", record)

    assert status == 422 and set(body["fields"]) == {"source"}
    assert gw.runtime.ledger.evidence_for(ADDRESS) == ()


async def test_a_time_a_few_minutes_ahead_is_clock_slack_and_accepted(gw, api):
    ahead = datetime.now(UTC) + timedelta(minutes=4)

    status, _ = await post(api, "/api/v1/consents", consent(obtained_at=iso(ahead)))

    assert status == 201


async def test_a_future_dated_record_already_in_the_ledger_does_not_lift_an_opt_out(gw, api):
    """Rows stored before the ledger refused them: the rules ignore evidence dated after
    the decision (it does not exist yet)."""
    ledger = gw.runtime.ledger
    ledger.record_opt_out("acme", "email", ADDRESS, source="phone")
    ledger.record_evidence(Evidence(
        id="", org="acme", channel="email", address=ADDRESS, basis="consent",
        obtained_at=datetime(2030, 1, 10, tzinfo=UTC), source="typo"), "test")

    with pytest.raises(aiosmtplib.SMTPDataError) as refused:  # a stream with allow_headers
        await send_marketing(gw)

    assert "opted_out" in str(refused.value)
