"""How long a SendGrid Event Webhook batch of 1,000 events takes, signed, over HTTP, against
a running gateway (in this process), beside the bare work of the same request (checking
its signature and parsing it, no gateway) in one run.

Two batches: `opt-outs` (every event an unsubscribe or spam report, each a new person: the
worst case, every event written) and `typical` (5 % opt-outs among deliveries, opens and
clicks, which are read and ignored). Fresh event ids each round; median of the rounds.

    python bench/bench_esp.py [--events 1000] [--rounds 5] [--pg-url postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from gwtest import make_settings

from gateway import server
from gateway.esp import signatures

KEY = ec.generate_private_key(ec.SECP256R1())
PUBLIC = base64.b64encode(KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()


def batch(kind: str, n: int) -> list[dict]:
    events = []
    for i in range(n):
        if kind == "opt-outs":
            event = "spamreport" if i % 2 else "unsubscribe"
        else:
            event = ("unsubscribe" if i % 40 == 0 else "spamreport") if i % 20 == 0 else \
                ("delivered", "open", "click", "processed")[i % 4]
        events.append({"email": f"p{secrets.token_hex(4)}@example.com",
                       "timestamp": int(time.time()), "event": event,
                       "sg_event_id": secrets.token_urlsafe(16),
                       "sg_message_id": f"m{i}.filter0001", "category": ["spring"]})
    return events


def signed(body: bytes) -> dict:
    ts = str(int(time.time()))
    sig = KEY.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {"Content-Type": "application/json",
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": ts}


def bare(body: bytes, headers: dict) -> float:
    """What any receiver must do: check the signature, parse the batch."""
    start = time.perf_counter()
    key = signatures.load_sendgrid_key(PUBLIC)
    assert signatures.verify_sendgrid(key, body, headers[
        "X-Twilio-Email-Event-Webhook-Signature"], headers["X-Twilio-Email-Event-Webhook-Timestamp"])
    json.loads(body)
    return time.perf_counter() - start


async def run(args, ledger_url: str, label: str) -> None:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        settings = make_settings(Path(tmp), ledger_url=ledger_url,
                                 extra=f'[esp.sendgrid]\npublic_key = "{PUBLIC}"\norg = "acme"\n')
        async with await server.start(settings) as gw, aiohttp.ClientSession() as http:
            url = settings.http.public_url + "/hooks/sendgrid"
            for kind in ("opt-outs", "typical"):
                took, baseline = [], []
                for _ in range(args.rounds):
                    body = json.dumps(batch(kind, args.events)).encode()
                    headers = signed(body)
                    baseline.append(bare(body, headers))
                    start = time.perf_counter()
                    async with http.post(url, data=body, headers=headers) as resp:
                        answer = await resp.json()
                        assert resp.status == 200, answer
                    took.append(time.perf_counter() - start)
                print(f"{label:10} {kind:9} {args.events} events: median {statistics.median(took):.3f} s "
                      f"(min {min(took):.3f}, max {max(took):.3f}); bare check+parse "
                      f"{statistics.median(baseline) * 1000:.1f} ms; last answer {answer}")
            del gw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pg-url", default="", help="also on this (empty) PostgreSQL database")
    args = parser.parse_args()
    asyncio.run(run(args, "", "sqlite"))
    if args.pg_url:
        asyncio.run(run(args, args.pg_url, "postgresql"))


if __name__ == "__main__":
    main()
