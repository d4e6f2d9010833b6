"""Realistic messages through the real listener, checked by parsing what was delivered;
DKIM signatures on delivered copies verified with dkimpy against the public key."""

from __future__ import annotations

import base64
import email
import email.policy
import re
import subprocess
from pathlib import Path

import aiosmtplib
import dkim
import pytest
from gwtest import SOFT_OPT_IN, make_settings, seed

from gateway import server
from gateway.mail.rewrite import UnrewritableMessage, rewrite_for_recipient

CORPUS = sorted((Path(__file__).parent.parent / "mail" / "corpus").glob("*.eml"))


def crlf(data: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", data)


def expected_outcome(raw: bytes) -> str:
    try:
        result = rewrite_for_recipient(raw, unsubscribe_url="https://x.test/u/t",
                                       mailto_url="mailto:u@x.test", reply_to=None,
                                       footer_text="f", footer_html="f")
    except UnrewritableMessage:
        return "refused"
    return "headers_only" if result.headers_only else "rewritten"


@pytest.fixture(scope="module")
def dkim_key(tmp_path_factory):
    d = tmp_path_factory.mktemp("dkim")
    key = d / "dkim.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", str(key)], check=True, capture_output=True)
    der = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return key, base64.b64encode(der)


@pytest.fixture
async def gw(tmp_path, sink, dkim_key):
    key, _ = dkim_key
    settings = make_settings(
        tmp_path, upstream=f"smtp://127.0.0.1:{sink.port}?tls=none",
        dkim=f'[dkim]\ndomain = "acme.test"\nselector = "gw"\nprivate_key_file = "{key}"')
    async with await server.start(settings) as running:
        seed(running.runtime, address="jane@example.com", **SOFT_OPT_IN)
        yield running


async def send(gw, data: bytes):
    port = gw.runtime.settings.smtp.listen.port
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        # A stream without header overrides: the corpus's X-Gateway-* headers must not
        # change the decision, and must still be removed.
        await client.login("acme-fixed", "fixed-pass")
        return await client.sendmail("news@acme.test", ["jane@example.com"], data)


def test_the_corpus_has_at_least_fifteen_messages():
    assert len(CORPUS) >= 15


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
async def test_corpus_message_is_delivered_with_its_opt_out_or_refused(gw, sink, dkim_key, path):
    raw = crlf(path.read_bytes())
    outcome = expected_outcome(raw)
    if outcome == "refused":
        with pytest.raises(aiosmtplib.SMTPResponseException) as exc:
            await send(gw, raw)
        assert exc.value.code == 554
        assert gw.runtime.spool.stats()["depth"] == 0
        return
    await send(gw, raw)
    (_, _, data), = await sink.wait_for(1)
    copy = email.message_from_bytes(data, policy=email.policy.default)
    assert not copy.defects or outcome == "headers_only"
    url = re.findall(r"<(http[^>]+)>", copy["List-Unsubscribe"])[0]
    assert not any(k.lower().startswith("x-gateway-") for k in copy)
    if outcome == "rewritten":
        bodies = [p for p in copy.walk() if p.get_content_type() in ("text/plain", "text/html")
                  and not p.is_attachment()]
        assert any(url in p.get_content() for p in bodies)
    _, public = dkim_key

    def dns(name, timeout=5):
        assert name == b"gw._domainkey.acme.test."
        return b"v=DKIM1; k=rsa; p=" + public

    assert dkim.verify(data, dnsfunc=dns), f"DKIM signature of {path.name} does not verify"
    signature = copy["DKIM-Signature"]
    signed = {h.strip().lower() for h in re.search(r"h=([^;]+)", str(signature)).group(1)
              .replace("\r\n", "").replace(" ", "").split(":")}
    assert {"from", "subject", "date", "message-id", "list-unsubscribe",
            "list-unsubscribe-post"} <= signed | ({"date"} if "Date" not in copy else set())
