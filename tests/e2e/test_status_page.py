"""The operator pages over a real socket (contract: "Operators"): /status for people,
/status.json as data, /metrics for Prometheus; all behind the admin token."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent))
import pagehelpers
from pagehelpers import ADMIN_TOKEN, basic_auth


@pytest.fixture
async def gw(tmp_path):
    async with pagehelpers.running_gateway(tmp_path) as gateway:
        yield gateway


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def status_html(gw, http, **query) -> str:
    async with http.get(f"{gw.base_url}/status", params=query, headers=basic_auth()) as resp:
        assert resp.status == 200
        return await resp.text()


async def status_json(gw, http, **query) -> dict:
    async with http.get(f"{gw.base_url}/status.json", params=query,
                        headers=basic_auth()) as resp:
        assert resp.status == 200
        return await resp.json()


def cells(html: str, row_id: str) -> list[str]:
    """The text of each cell of the table row with id `row_id`."""
    row = re.search(rf'<tr id="{re.escape(row_id)}"[^>]*>(.*?)</tr>', html, re.DOTALL)
    assert row, f"no row {row_id}"
    return [re.sub(r"<[^>]+>", "", c).strip()
            for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row.group(1), re.DOTALL)]


def recent_reasons(html: str) -> list[str]:
    table = re.search(r'<table id="recent-decisions">(.*?)</table>', html, re.DOTALL)
    return re.findall(r"<td><code>([a-z_]+)</code></td>", table.group(1)) if table else []


def mixed_traffic(gw) -> None:
    """3 blocked (no_consent), 2 allowed (service), 1 blocked (opted_out)."""
    for n in range(3):
        gw.decide(f"nobody{n}@example.com")
    for n in range(2):
        gw.decide(f"customer{n}@example.com", stream="acme-service")
    gw.rt.ledger.record_opt_out("acme", "email", "gone@example.com", method="cli")
    gw.decide("gone@example.com")


@pytest.mark.parametrize("path", ["/status", "/status.json", "/metrics"])
async def test_operator_pages_answer_401_without_credentials(gw, http, path):
    async with http.get(gw.base_url + path) as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"].startswith("Basic")


async def test_status_refuses_a_wrong_password(gw, http):
    async with http.get(f"{gw.base_url}/status",
                        headers=basic_auth("wrong")) as resp:
        assert resp.status == 401


async def test_status_answers_200_with_the_admin_token_as_password(gw, http):
    html = await status_html(gw, http)
    assert "Consent gateway status" in html


async def test_status_shows_mode_and_rule_set_prominently(gw, http):
    html = await status_html(gw, http)
    mode = re.search(r'<div class="mode enforce" id="mode">(.*?)</div>', html, re.DOTALL)
    assert mode and "enforce" in mode.group(1) and "uk-pecr" in mode.group(1)


async def test_decision_counts_match_the_decisions_made(gw, http):
    mixed_traffic(gw)
    html = await status_html(gw, http)
    assert cells(html, "outcome-allowed") == ["allowed", "2", "2"]
    assert cells(html, "outcome-blocked") == ["blocked", "4", "4"]
    assert cells(html, "reason-no_consent")[2:4] == ["3", "3"]
    assert cells(html, "reason-service_message")[2:4] == ["2", "2"]
    assert cells(html, "reason-opted_out")[2:4] == ["1", "1"]


async def test_status_json_holds_the_same_counts(gw, http):
    mixed_traffic(gw)
    data = await status_json(gw, http)
    hour = data["decisions"]["last_hour"]
    assert hour["by_outcome"] == {"allowed": 2, "blocked": 4, "would_block": 0}
    assert hour["by_reason"]["no_consent"]["total"] == 3
    assert sum(b["blocked"] for b in data["decisions"]["by_hour"]) == 4


async def test_status_draws_an_hourly_chart_of_the_decisions(gw, http):
    mixed_traffic(gw)
    html = await status_html(gw, http)
    assert re.search(r'<rect class="blocked"[^>]*><title>\d\d:00: 4 blocked</title>', html)
    assert re.search(r'<rect class="allowed"[^>]*><title>\d\d:00: 2 allowed</title>', html)


async def test_filtering_by_reason_lists_only_that_reason(gw, http):
    mixed_traffic(gw)
    html = await status_html(gw, http, reason="service_message")
    assert recent_reasons(html) == ["service_message", "service_message"]


async def test_an_unknown_reason_filter_is_reported_not_ignored(gw, http):
    mixed_traffic(gw)
    html = await status_html(gw, http, reason="nonsense")
    assert "unknown reason code" in html
    assert recent_reasons(html) == []


async def test_recent_decisions_show_masked_addresses(gw, http):
    mixed_traffic(gw)
    html = await status_html(gw, http)
    assert "n•••@example.com" in html
    assert "nobody0@example.com" not in html


async def test_searching_an_address_shows_that_persons_trail(gw, http):
    mixed_traffic(gw)
    html = await status_html(gw, http, address="  Gone@Example.COM ")
    assert "Evidence trail of gone@example.com" in html
    assert cells(html, "reason-opted_out")  # the summary is still there
    trail = re.search(r'<table id="trail-opt-outs">(.*?)</table>', html, re.DOTALL).group(1)
    assert "cli" in trail
    assert recent_reasons(html) == ["opted_out"]


async def test_filtering_by_reason_and_address_lists_that_persons_matching_decisions(gw, http):
    mixed_traffic(gw)
    gw.decide("gone@example.com", stream="acme-service")
    html = await status_html(gw, http, address="gone@example.com", reason="service_message")
    assert recent_reasons(html) == ["service_message"]


async def test_status_json_applies_the_same_filter(gw, http):
    mixed_traffic(gw)
    data = await status_json(gw, http, reason="no_consent")
    assert [d["reason"] for d in data["recent_decisions"]] == ["no_consent"] * 3
    assert data["filter"]["reason"] == "no_consent"


async def test_an_address_that_cannot_be_read_is_reported(gw, http):
    html = await status_html(gw, http, address="not an address")
    assert "not an email address or phone number" in html


async def test_text_from_evidence_and_messages_is_escaped(gw, http):
    evil = "<script>alert(1)</script>"
    async with http.post(f"{gw.base_url}/api/v1/consents",
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                         json={"org": "acme", "channel": "email", "address": "x@example.com",
                               "basis": "consent", "obtained_at": "2025-01-01T00:00:00Z",
                               "source": evil}) as resp:
        assert resp.status == 201
    gw.decide("x@example.com", message_id=evil)
    html = await status_html(gw, http, address="x@example.com")
    assert "<script" not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 2


async def test_opt_outs_are_counted_by_channel_and_method(gw, http):
    await http.post(gw.link(gw.issue()), data="List-Unsubscribe=One-Click",
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    gw.rt.ledger.record_opt_out("acme", "sms", "+447700900123", method="sms-keyword")
    html = await status_html(gw, http)
    assert cells(html, "opt-out-last_24h-one-click") == ["one-click (RFC 8058)", "1", "0",
                                                         "0", "1"]
    assert cells(html, "opt-out-last_24h-sms-keyword") == ["SMS keyword (STOP)", "0", "1", "0", "1"]


async def test_without_a_spool_the_page_says_not_running(gw, http):
    gw.rt.status_providers.pop("spool", None)
    html = await status_html(gw, http)
    assert re.search(r'id="spool-state">Spool: <strong>not running</strong>', html)
    assert (await status_json(gw, http))["spool"] == {"running": False}


async def test_the_spool_depth_oldest_message_and_failures_are_shown(gw, http):
    an_hour_ago = time.time() - 3600
    gw.rt.status_providers["spool"] = lambda: {
        "depth": 7, "oldest_queued_at": an_hour_ago, "last_24h": {"delivered": 5, "deferred": 2},
        "last_errors": [{"at": an_hour_ago, "result": "deferred", "detail": "451 try later",
                         "rcpt": "jane.doe@example.com"}]}
    html = await status_html(gw, http)
    assert '<dd id="spool-depth">7</dd>' in html
    assert "(1 h ago)" in html
    assert re.search(r'id="spool-failures"[^>]*>2</dd>', html)
    assert "451 try later" in html
    assert "j•••@example.com" in html
    assert "jane.doe@example.com" not in html


async def test_a_failing_status_provider_does_not_break_the_page(gw, http):
    def broken() -> dict:
        raise RuntimeError("spool database locked")

    gw.rt.status_providers["spool"] = broken
    html = await status_html(gw, http)
    assert "spool database locked" in html


async def test_upstream_health_shows_the_last_error(gw, http):
    gw.rt.note("upstream", False, "connection refused")
    html = await status_html(gw, http)
    assert cells(html, "health-upstream")[1] == "failing"
    assert "connection refused" in cells(html, "health-upstream")[4]


async def test_monitor_mode_counts_would_block(tmp_path, http):
    async with pagehelpers.running_gateway(tmp_path, mode="monitor") as gw:
        gw.decide("nobody@example.com")
        html = await status_html(gw, http)
        data = await status_json(gw, http)
    assert '<div class="mode monitor" id="mode">' in html
    assert cells(html, "outcome-would_block") == ["would block", "1", "1"]
    assert data["decisions"]["last_24h"]["by_outcome"] == {
        "allowed": 0, "blocked": 0, "would_block": 1}


async def test_metrics_are_prometheus_text_with_the_opt_out_counter(gw, http):
    await http.post(gw.link(gw.issue()))
    async with http.get(f"{gw.base_url}/metrics", headers=basic_auth()) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    [sample] = [s for s in families["gateway_opt_outs"].samples
                if s.name == "gateway_opt_outs_total"]
    assert sample.labels == {"channel": "email", "source": "link"}
    assert sample.value == 1


@pytest.mark.parametrize("path", ["/metrics", "/status.json"])
async def test_scrapers_may_use_the_admin_token_as_bearer(gw, http, path):
    async with http.get(gw.base_url + path,
                        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as resp:
        assert resp.status == 200
