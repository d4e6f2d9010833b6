"""Schemathesis against the running gateway, driven by its own OpenAPI description
(`GET /api/v1/openapi.json`): whatever the generated requests hold, no answer is a 5xx.

Requests carry valid credentials (and valid webhook signatures, computed over whatever
was generated) so that the fuzzing reaches past the auth checks.
`OPENAPI_FUZZ_EXAMPLES=500 pytest tests/hostile/test_openapi_fuzz.py` runs a longer one."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
import urllib.request

import pytest
import schemathesis
from gwprocess import GatewayProcess, seed
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from gateway.sms.signatures import twilio_signature
from gateway.web.openapi import document

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

EXAMPLES = int(os.environ.get("OPENAPI_FUZZ_EXAMPLES", "25"))
TWILIO_TOKEN = "fuzz-twilio-token"
VONAGE_SECRET = "fuzz-vonage-secret"
SMS_CONFIG = f"""
[sms.twilio]
auth_token = "{TWILIO_TOKEN}"

[sms.vonage]
signature_secret = "{VONAGE_SECRET}"
signature_method = "sha256"
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("openapi")
    gw = GatewayProcess(tmp, f"maildir:{tmp / 'outbox'}")
    gw.config.write_text(gw.config.read_text() + SMS_CONFIG)
    seed(gw.data_dir, emails=["jane@example.com"], phones=["+447400123456"])
    gw.start()
    yield gw
    assert gw.terminate() == 0
    assert "Traceback" not in gw.log_text(), gw.log_text()[-4000:]


# Built from the same function that serves /api/v1/openapi.json (schemathesis' lazy
# fixture loader does not run on pytest 9); the server is set per call.
schema = schemathesis.openapi.from_dict(document("http://gateway.invalid"))


def test_the_served_description_is_the_fuzzed_one(gateway):
    url = gateway.url + "/api/v1/openapi.json"  # http://127.0.0.1:PORT
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310
        assert json.load(resp) == document(gateway.url)

CREDENTIALS = {
    "/api/v1/sms": "Bearer sk_news",
    "/2010-04-01/Accounts/{account}/Messages.json":
        "Basic " + base64.b64encode(b"acme-news:sk_news").decode(),
    "/status.json": "Basic " + base64.b64encode(b"op:test-admin-token").decode(),
}


def sign(case, url: str) -> None:
    """Give a generated webhook a valid signature over what was generated."""
    form = case.body if isinstance(case.body, dict) else {}
    form = {k: v for k, v in form.items() if isinstance(v, str)}
    if case.path == "/sms/inbound/twilio":
        case.body = form
        case.headers = {**(case.headers or {}),
                        "X-Twilio-Signature": twilio_signature(url, form, TWILIO_TOKEN)}
    elif case.path == "/sms/inbound/vonage":
        form.pop("sig", None)
        form.update(timestamp=str(int(time.time())), nonce="n")
        data = "".join(f"&{k}={v.replace('&', '_').replace('=', '_')}"
                       for k, v in sorted(form.items()))
        form["sig"] = hmac.new(VONAGE_SECRET.encode(), data.encode(),
                               hashlib.sha256).hexdigest()
        case.body = form


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=list(HealthCheck))
def test_no_request_makes_the_gateway_answer_5xx(case, gateway):
    auth = CREDENTIALS.get(case.path, "Bearer test-admin-token")
    if case.path_parameters and "account" in case.path_parameters:
        case.path_parameters["account"] = "acme-news"
    sign(case, gateway.url + case.formatted_path)
    case.call_and_validate(base_url=gateway.url, headers={"Authorization": auth},
                           checks=[not_a_server_error], timeout=15)
