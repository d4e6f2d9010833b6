"""What each rule set adds to a marketing email (docs/rulesets.md, "What every marketing
message then carries"), in the text and HTML parts of real MIME shapes, with the DKIM
signature of every delivered copy still verifying."""

from __future__ import annotations

import dataclasses
import email
import email.policy
from pathlib import Path

import aiosmtplib
import dkim
import pytest
from gwtest import SOFT_OPT_IN, make_settings, seed
from test_smtp_corpus_dkim import crlf, dkim_key  # noqa: F401 - the module's key fixture

from gateway import server

CORPUS = Path(__file__).parent.parent / "mail" / "corpus"
SHAPES = ["01-plain", "02-html-only", "03-alternative", "04-mixed-attachments",
          "13-nested-alternative-in-mixed"]
ADDRESS = "1 Garden Way, Leeds LS1 1AA"
CONTACT = "hello@acme.test"
AD = "This message is an advertisement."
#: recipient -> (evidence, what its copy must carry, what it must not)
PEOPLE = {
    "uk@example.com": (dict(SOFT_OPT_IN), [], [ADDRESS, CONTACT, AD]),
    "us.consent@example.com": (dict(basis="consent", region="US"), [ADDRESS], [AD, CONTACT]),
    "us.customer@example.com": ({**SOFT_OPT_IN, "region": "US"}, [ADDRESS, AD], [CONTACT]),
    "ca@example.com": ({**SOFT_OPT_IN, "region": "CA"},
                       [f"Sent by Acme Garden Ltd, {ADDRESS}", CONTACT], [AD]),
    "au@example.com": (dict(basis="consent", region="AU"),
                       ["Sent by Acme Garden Ltd", CONTACT], [ADDRESS, AD]),
}


@pytest.fixture
async def gw(tmp_path, sink, dkim_key):  # noqa: F811 - the fixture imported above
    key, _ = dkim_key
    settings = make_settings(
        tmp_path, upstream=f"smtp://127.0.0.1:{sink.port}?tls=none",
        dkim=f'[dkim]\ndomain = "acme.test"\nselector = "gw"\nprivate_key_file = "{key}"')
    settings = dataclasses.replace(settings, orgs={k: dataclasses.replace(
        o, rulesets={"default": "uk-pecr", "US": "us", "CA": "ca-casl", "AU": "au-spam"},
        postal_address=ADDRESS, contact=CONTACT) for k, o in settings.orgs.items()})
    async with await server.start(settings) as running:
        for address, (fields, _, _) in PEOPLE.items():
            seed(running.runtime, address=address, **fields)
        yield running


@pytest.mark.parametrize("shape", SHAPES)
async def test_each_rule_set_adds_its_identification_to_every_text_and_html_part(
        gw, sink, dkim_key, shape):  # noqa: F811
    raw = crlf((CORPUS / f"{shape}.eml").read_bytes())
    port = gw.runtime.settings.smtp.listen.port
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        await client.login("acme-fixed", "fixed-pass")
        await client.sendmail("news@acme.test", list(PEOPLE), raw)
    delivered = await sink.wait_for(len(PEOPLE))
    _, public = dkim_key

    def dns(name, timeout=5):
        return b"v=DKIM1; k=rsa; p=" + public

    for _, rcpts, data in delivered:
        [rcpt] = rcpts
        _, present, absent = PEOPLE[rcpt]
        assert dkim.verify(data, dnsfunc=dns), f"DKIM of the copy to {rcpt} does not verify"
        copy = email.message_from_bytes(data, policy=email.policy.default)
        parts = [p for p in copy.walk() if p.get_content_type() in ("text/plain", "text/html")
                 and not p.is_attachment()]
        assert parts
        for part in parts:
            body = part.get_content()
            for line in present:
                assert line in body, (rcpt, part.get_content_type(), line)
            for line in absent:
                assert line not in body, (rcpt, part.get_content_type(), line)
