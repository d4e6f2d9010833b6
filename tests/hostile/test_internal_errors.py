"""Internal errors answered without internal detail (contract, 0.3 "No back doors"): an
error while deciding answers `451 4.3.0` (SMTP) or 503 (HTTP); a bad request body 400.
Neither answer carries an exception's class or text, and SMTP never answers `500`.

The errors are real: the running gateway's ledger loses a table under it (renamed by a
second SQLite connection, as a broken migration or a careless operator would)."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import aiohttp
import aiosmtplib
import pytest
from gwtest import make_settings

from gateway import server

pytestmark = pytest.mark.timeout(60)

ADMIN = {"Authorization": "Bearer test-admin-token"}
CONSENT = {"org": "acme", "channel": "email", "address": "jane@example.com",
           "basis": "consent", "obtained_at": "2026-01-10T10:00:00Z", "source": "form v3"}
# What an exception's text would give away about the inside of the gateway.
INTERNALS = ("no such table", "sqlite", "OperationalError", "StoreUnavailable",
             "ledger write failed", "ledger read failed", "Traceback", "Error:")


@pytest.fixture
async def gw(tmp_path):
    running = await server.start(make_settings(tmp_path))
    yield running
    await running.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


def ledger_file(gw) -> Path:
    return Path(gw.runtime.settings.gateway.data_dir) / "ledger.db"


def lose_table(gw, table: str) -> None:
    """Rename one of the ledger's tables from outside the gateway."""
    with sqlite3.connect(ledger_file(gw)) as db:
        db.execute(f"ALTER TABLE {table} RENAME TO {table}_lost")


def base(gw) -> str:
    return gw.runtime.settings.http.public_url


def assert_no_internals(text: str) -> None:
    for leak in INTERNALS:
        assert leak.lower() not in text.lower(), f"{leak!r} leaked in {text!r}"


# -- SMTP -----------------------------------------------------------------------------


async def test_an_internal_error_at_rcpt_answers_451_with_no_detail(gw, caplog):
    lose_table(gw, "evidence")
    port = gw.runtime.settings.smtp.listen.port
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False,
                               timeout=10) as client:
        await client.login("acme-fixed", "fixed-pass")  # decided at RCPT
        await client.mail("fixed@acme.test")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
            await client.rcpt("jane@example.com")

    assert refused.value.code == 451
    assert refused.value.message.startswith("4.3.0 ")
    assert_no_internals(refused.value.message)
    logged = [r.getMessage() for r in caplog.records if "smtp_internal_error" in r.getMessage()]
    assert logged and "no such table" in logged[0]  # the operator's log has the detail


async def test_the_session_goes_on_after_an_internal_error(gw):
    lose_table(gw, "evidence")
    port = gw.runtime.settings.smtp.listen.port
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False,
                               timeout=10) as client:
        await client.login("acme-fixed", "fixed-pass")
        await client.mail("fixed@acme.test")
        with pytest.raises(aiosmtplib.SMTPRecipientRefused):
            await client.rcpt("jane@example.com")
        code, _ = await client.noop()

    assert code == 250


# -- HTTP: 503 ------------------------------------------------------------------------


@pytest.mark.parametrize(("table", "path", "body"), [
    ("evidence", "/api/v1/consents", CONSENT),
    ("optouts", "/api/v1/optouts", {"org": "acme", "channel": "email",
                                    "address": "jane@example.com", "source": "call"}),
], ids=["consents", "optouts"])
async def test_a_record_the_ledger_cannot_store_answers_503_with_no_detail(
        gw, http, table, path, body):
    lose_table(gw, table)
    async with http.post(base(gw) + path, json=body, headers=ADMIN) as resp:
        text = await resp.text()
        assert resp.status == 503

    answer = json.loads(text)
    assert answer["error"] == "store_unavailable"
    assert "try again" in answer["detail"]
    assert_no_internals(text)


async def test_a_trail_the_ledger_cannot_read_answers_503_with_no_detail(gw, http):
    lose_table(gw, "evidence")
    async with http.get(base(gw) + "/api/v1/contacts/email/jane@example.com",
                        headers=ADMIN) as resp:
        text = await resp.text()
        assert resp.status == 503

    # store_unavailable, or internal_error while the ledger lets sqlite's error out
    assert json.loads(text)["error"] in ("store_unavailable", "internal_error")
    assert "try again" in json.loads(text)["detail"]
    assert_no_internals(text)


async def test_no_internal_error_is_logged_as_a_traceback_for_a_503(gw, http, caplog):
    lose_table(gw, "evidence")
    caplog.set_level(logging.ERROR)
    async with http.post(base(gw) + "/api/v1/consents", json=CONSENT, headers=ADMIN) as resp:
        assert resp.status == 503

    assert not [r for r in caplog.records if r.exc_info]


# -- HTTP: 400 ------------------------------------------------------------------------


def parser_text(raw: bytes) -> str:
    """What Python's own JSON parser says about `raw` (the text that must not leak)."""
    try:
        json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        return str(exc)
    raise AssertionError("valid JSON")


@pytest.mark.parametrize("raw", [
    b'{"org": "acme",', b"[" * 100_000 + b"]" * 100_000, b'{"n": ' + b"7" * 5000 + b"}",
    b'{"org": "acme"} trailing',
], ids=["truncated", "deeply-nested", "5000-digit-number", "trailing-data"])
async def test_a_body_that_is_not_json_answers_400_saying_what_to_send(gw, http, raw):
    async with http.post(base(gw) + "/api/v1/consents", data=raw,
                         headers={**ADMIN, "Content-Type": "application/json"}) as resp:
        text = await resp.text()
        assert resp.status == 400

    answer = json.loads(text)
    assert answer["error"] == "bad_json"
    assert "JSON object" in answer["detail"]
    assert parser_text(raw)[:30] not in text


async def test_a_body_in_an_unknown_charset_answers_400_naming_no_internals(gw, http):
    async with http.post(base(gw) + "/api/v1/consents", data=b"{}",
                         headers={**ADMIN,
                                  "Content-Type": "application/json; charset=x-klingon"}) as resp:
        text = await resp.text()
        assert resp.status == 400

    assert "unknown encoding" not in text  # LookupError's own words
    assert "x-klingon" in json.loads(text)["detail"]
