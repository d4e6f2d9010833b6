"""`gateway demo`: a self-contained tour through the real listeners, in under a minute."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import shutil
import tempfile
import textwrap
from pathlib import Path

import aiohttp
import aiosmtplib

from . import config, server
from .demo_world import judge_everywhere, print_table
from .evidence import parse_evidence
from .sms.signatures import twilio_signature

DEMO_TOML = """
[gateway]
data_dir = "{data}"
[smtp]
listen = "127.0.0.1:{smtp}"
hostname = "gateway.demo.test"
[http]
listen = "127.0.0.1:{http}"
public_url = "http://127.0.0.1:{http}"
admin_token = "demo-admin-token"
[unsubscribe]
secret = "demo-secret"
mailto_domain = "unsubscribe.demo.test"
[delivery]
upstream = "maildir:{data}/outbox"
[sms]
outbox = "{data}/sms-outbox.jsonl"
[sms.twilio]
auth_token = "demo-twilio-token"
[esp.postmark]
username = "demo-postmark"
password = "demo-postmark-password"
org = "acme"

[[org]]
id = "acme"
name = "Acme Garden Ltd"
type = "commercial"
similar = [["lawnmowers", "hedge-trimmers", "garden-tools"], ["decking", "fencing"]]
soft_opt_in_max_age_days = 730
indirect_consent_max_age_days = 180
category_names = {{ lawnmowers = "Garden machinery", decking = "Decking and fencing" }}

[[org]]
id = "owls"
name = "Save the Owls"
type = "charity"

[[stream]]
id = "acme-news"
org = "acme"
category = "garden-tools"
smtp_username = "acme-news"
smtp_password = "demo-pass"
api_key = "sk_demo_acme"
sms_from = ["+447400123000"]

[[stream]]
id = "acme-decking"
org = "acme"
category = "decking"
smtp_username = "acme-decking"
smtp_password = "demo-pass"
api_key = "sk_demo_decking"

[[stream]]
id = "acme-receipts"
org = "acme"
purpose = "service"
smtp_username = "acme-receipts"
smtp_password = "demo-pass"
api_key = "sk_demo_receipts"

[[stream]]
id = "owls-appeal"
org = "owls"
nature = "campaigning"
category = "appeal"
smtp_username = "owls-appeal"
smtp_password = "demo-pass"
api_key = "sk_demo_owls"
"""

SALE = {"basis": "soft_opt_in", "context": "sale", "categories": ["lawnmowers"],
        "opt_out_offered": True, "source": "checkout, opt-out box shown"}

# (who, org, channel, evidence or None, what is sent, expected reason)
PEOPLE = [
    ("mower.buyer@example.com", "acme", "email", SALE, "hedge trimmers offer", "soft_opt_in"),
    ("newsletter@example.com", "acme", "email", {"basis": "consent", "source": "signup form"},
     "hedge trimmers offer", "consent"),
    ("buyer@bigcorp.example", "acme", "email",
     {"basis": "corporate_subscriber", "source": "sales team: company address"},
     "hedge trimmers offer", "corporate_subscriber"),
    ("partners@example.com", "acme", "email",
     {"basis": "consent", "collected_by": "third_party", "named_orgs": ["selected partners"],
      "source": "lead broker"}, "hedge trimmers offer", "third_party_unnamed"),
    ("old.lead@example.com", "acme", "email",
     {"basis": "consent", "collected_by": "third_party", "named_orgs": ["Acme Garden Ltd"],
      "source": "Bloom Ltd co-registration", "obtained_at": "2025-01-01T00:00:00Z"},
     "hedge trimmers offer", "consent_expired"),
    ("donor@example.com", "owls", "email", dict(SALE, context="support",
                                                categories=["appeal"]),
     "fundraising appeal", "soft_opt_in_not_commercial"),
    ("bought.list@example.com", "acme", "email", dict(SALE, collected_by="third_party"),
     "hedge trimmers offer", "soft_opt_in_third_party"),
    ("asked.hours@example.com", "acme", "email", dict(SALE, context="enquiry"),
     "hedge trimmers offer", "soft_opt_in_no_sale"),
    ("no.box@example.com", "acme", "email", dict(SALE, opt_out_offered=False),
     "hedge trimmers offer", "soft_opt_in_no_opt_out_offered"),
    ("insurance@example.com", "acme", "email", dict(SALE, categories=["car-insurance"]),
     "hedge trimmers offer", "soft_opt_in_not_similar"),
    ("long.ago@example.com", "acme", "email", dict(SALE, obtained_at="2020-05-01T00:00:00Z"),
     "hedge trimmers offer", "soft_opt_in_expired"),
    ("two.topics@example.com", "acme", "email",
     {"basis": "consent", "source": "signup form", "categories": ["garden-tools", "decking"]},
     "hedge trimmers offer", "consent"),
    ("stranger@example.com", "acme", "email", None, "hedge trimmers offer", "no_consent"),
    ("stranger@example.com", "acme", "email", None, "password reset (service)",
     "service_message"),
    ("+447400123456", "acme", "sms", dict(SALE, categories=["decking"], context="negotiation"),
     "decking text", "soft_opt_in"),
]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def tour(data: Path, ledger_url: str = "") -> tuple[list[tuple], tuple]:
    text = textwrap.dedent(DEMO_TOML.format(data=data, smtp=free_port(), http=free_port()))
    if ledger_url:  # an empty PostgreSQL database (its URL never printed with a password)
        text += f'\n[ledger]\nurl = "{ledger_url}"\n'

    (data / "config.toml").write_text(text)
    settings = config.parse(text, data / "config.toml", data)
    rows: list[tuple] = []
    async with await server.start(settings) as gw:
        rt = gw.runtime
        regions = {o: "GB" for o in settings.orgs}
        for who, org, channel, evidence, _, _ in PEOPLE:
            if evidence:
                fields = {"org": org, "channel": channel, "address": who,
                          "obtained_at": "2026-03-01T09:00:00Z", **evidence}
                rt.ledger.record_evidence(parse_evidence(fields, regions), "demo")
        base = settings.http.public_url
        async with aiohttp.ClientSession() as http:
            for who, org, channel, _, what, _ in PEOPLE:
                if channel == "email":
                    rows.append(await send_email(settings, who, org, what))
                else:
                    rows.append(await send_text(http, base, who, what))
            # The soft opt-in customer clicks the link in the copy they really received.
            link = unsubscribe_link(data / "outbox", "mower.buyer@example.com")
            async with http.post(link, data={"List-Unsubscribe": "One-Click"}) as resp:
                rows.append(("email", "mower.buyer@example.com", "one-click unsubscribe",
                             f"HTTP {resp.status}", "recorded"))
            rows.append(await send_email(settings, "mower.buyer@example.com", "acme",
                                         "hedge trimmers offer, again"))
            # The texting customer replies STOP through the (signed) Twilio webhook.
            form = {"From": "+447400123456", "To": "+447400123000", "Body": "stop",
                    "MessageSid": "SMdemo"}
            url = f"{base}/sms/inbound/twilio"
            sig = twilio_signature(url, form, "demo-twilio-token")
            async with http.post(url, data=form, headers={"X-Twilio-Signature": sig}) as resp:
                rows.append(("sms", "+447400123456", "replies STOP", f"HTTP {resp.status}",
                             "recorded"))
            rows.append(await send_text(http, base, "+447400123456", "decking text, again"))
            # The newsletter reader asks to be erased (docs/privacy.md): their records go,
            # a suppression entry stays, and the next newsletter is blocked.
            async with http.post(f"{base}/api/v1/erasures", headers={
                    "Authorization": f"Bearer {settings.http.admin_token}"}, json={
                    "channel": "email", "address": "newsletter@example.com", "org": "*",
                    "source": "erasure request by letter"}) as resp:
                rows.append(("email", "newsletter@example.com", "erased on request",
                             f"HTTP {resp.status}", "recorded"))
            rows.append(await send_email(settings, "newsletter@example.com", "acme",
                                         "hedge trimmers offer, again"))
            rows += await consent_acts(settings, http, data / "outbox")
        world = judge_everywhere(rt)  # the second act (demo_world.py)
    return rows, world


async def consent_acts(settings, http: aiohttp.ClientSession, outbox: Path) -> list[tuple]:
    """The acts of consent captured and withdrawn elsewhere: a double opt-in confirmed by
    its link, one topic left in the preference centre, an unsubscribe at the ESP."""
    base, rows = settings.http.public_url, []
    async with http.post(f"{base}/api/v1/subscriptions", headers={
            "Authorization": f"Bearer {settings.http.admin_token}"}, json={
            "org": "acme", "channel": "email", "address": "signup@example.com",
            "source": "https://acme.example/newsletter (form v3)",
            "wording": "Yes, send me Acme's garden offers by email"}) as resp:
        rows.append(("email", "signup@example.com", "signs up (double opt-in)",
                     f"HTTP {resp.status}", (await resp.json())["status"]))
    rows.append(await send_email(settings, "signup@example.com", "acme",
                                 "hedge trimmers offer (pending)"))
    async with http.post(link_in_outbox(outbox, "signup@example.com", r"http\S+/c/\w+")
                         ) as resp:  # the page's one button
        rows.append(("email", "signup@example.com", "confirms by the link",
                     f"HTTP {resp.status}", "recorded"))
    rows.append(await send_email(settings, "signup@example.com", "acme",
                                 "hedge trimmers offer, again"))
    # The preference centre: one topic left, the other still agreed to.
    link = unsubscribe_link(outbox, "two.topics@example.com")
    async with http.post(link, data={"scope": "category:lawnmowers"}) as resp:
        rows.append(("email", "two.topics@example.com", "leaves Garden machinery",
                     f"HTTP {resp.status}", "recorded"))
    rows.append(await send_email(settings, "two.topics@example.com", "acme",
                                 "hedge trimmers offer, again"))
    rows.append(await send_email(settings, "two.topics@example.com", "acme", "decking offer",
                                 user="acme-decking"))
    # Unsubscribed in the ESP's own link (Postmark's webhook, matched by recipient and org).
    async with http.post(f"{base}/hooks/postmark", auth=aiohttp.BasicAuth(
            "demo-postmark", "demo-postmark-password"), json={
            "RecordType": "SubscriptionChange", "MessageID": "pm-demo-1",
            "Recipient": "buyer@bigcorp.example", "SuppressSending": True,
            "SuppressionReason": "ManualSuppression",
            "ChangedAt": "2026-03-02T10:00:00Z"}) as resp:
        counts = await resp.json()
        rows.append(("email", "buyer@bigcorp.example", "unsubscribes at the ESP",
                     f"HTTP {resp.status}", "recorded" if counts.get("recorded") else counts))
    rows.append(await send_email(settings, "buyer@bigcorp.example", "acme",
                                 "hedge trimmers offer, again"))
    return rows


async def send_email(settings, who: str, org: str, what: str, user: str = "") -> tuple:
    user = user or {"acme": "acme-news", "owls": "owls-appeal"}[org]
    if "service" in what:
        user = "acme-receipts"
    msg = (f"From: {org}@demo.test\r\nTo: {who}\r\nSubject: {what}\r\n"
           f"Content-Type: text/plain; charset=utf-8\r\n\r\nDemo message: {what}.\r\n")
    port = settings.smtp.listen.port
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as client:
        await client.login(user, "demo-pass")
        try:
            await client.sendmail(f"{org}@demo.test", [who], msg.encode())
        except aiosmtplib.SMTPResponseException as exc:
            reason = exc.message.rsplit(":", 1)[-1].strip()
            return ("email", who, what, "BLOCKED", reason)
    return ("email", who, what, "allowed", _last_reason(settings, who))


def _last_reason(settings, who: str) -> str:
    from .ledger import open_ledger

    ledger = open_ledger(settings.ledger.url, settings.gateway.data_dir)
    try:
        return ledger.decisions_for(who, limit=1)[0]["reason"]
    finally:
        ledger.close()


async def send_text(http: aiohttp.ClientSession, base: str, to: str, what: str) -> tuple:
    async with http.post(f"{base}/api/v1/sms", json={"to": to, "body": f"Demo: {what}",
                                                     "category": "decking"},
                         headers={"Authorization": "Bearer sk_demo_acme"}) as resp:
        body = await resp.json()
    if resp.status == 202:
        return ("sms", to, what, "allowed", body["decision"]["reason"])
    return ("sms", to, what, "BLOCKED", body.get("reason", body.get("error")))


def unsubscribe_link(outbox: Path, rcpt: str) -> str:
    return link_in_outbox(outbox, rcpt, r"http[^>]+/u/\w+", header="List-Unsubscribe")


def link_in_outbox(outbox: Path, rcpt: str, pattern: str, header: str = "") -> str:
    """The first link matching `pattern` in a copy delivered to `rcpt` (in `header`, else
    in the text body), waiting a little for the delivery."""
    import time

    for _ in range(200):
        for path in sorted((outbox / "new").glob("*")):
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if msg["Delivered-To"] != rcpt:
                continue
            body = msg.get_body(("plain",))
            text = str(msg[header] or "") if header else (body.get_content() if body else "")
            if found := re.findall(pattern, text):
                return found[0]
        time.sleep(0.05)
    raise RuntimeError(f"no delivered copy for {rcpt} holds {pattern}")


def run_demo(args) -> int:
    keep = getattr(args, "keep", False)
    data = Path(tempfile.mkdtemp(prefix="gateway-demo-"))
    try:
        rows, world = asyncio.run(tour(data, getattr(args, "ledger", None) or ""))
    except Exception:
        shutil.rmtree(data, ignore_errors=True) if not keep else None
        raise
    width = max(len(r[1]) for r in rows)
    print(f"{'channel':7}  {'recipient':{width}}  {'what':30}  {'outcome':9}  reason")
    print("-" * (width + 70))
    for channel, who, what, outcome, reason in rows:
        print(f"{channel:7}  {who:{width}}  {what[:30]:30}  {outcome:9}  {reason}")
    shown = print_table(*world)
    reasons = sorted({r[4] for r in rows if r[3] in ("allowed", "BLOCKED")} | shown)
    print(f"\nreason codes exercised ({len(reasons)}): {', '.join(reasons)}")
    print(f"rewritten messages (maildir): {data / 'outbox' / 'new'}")
    print(f"texts sent: {data / 'sms-outbox.jsonl'}")
    print(f"a person's trail: gateway audit mower.buyer@example.com --config {data}/config.toml")
    if not keep:
        print("(pass --keep to keep the demo data; it is removed now)")
        shutil.rmtree(data, ignore_errors=True)
    return 0
