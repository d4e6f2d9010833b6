"""Whether a text already carries a working opt-out (opt_out.carries_opt_out): stop_text or
a keyword instruction where the reader can reply, else only the gateway's own /s/ link."""

from __future__ import annotations

import pytest

from gateway.sms.opt_out import carries_opt_out, own_link_tokens

PUBLIC_URL = "https://gw.example.test"
STOP_TEXT = "Reply STOP to opt out"
OURS = "naoz5t7egfbh7q672g5gx4lh4ptzzqxz"  # a token is_ours accepts in these tests
THEIRS = "b" * 32  # well-formed, but issued for someone else (or never)


def carries(body: str, *, replies: bool, stop_text: str = STOP_TEXT) -> bool:
    return carries_opt_out(body, replies=replies, stop_text=stop_text,
                           public_url=PUBLIC_URL, is_ours=lambda token: token.lower() == OURS)


@pytest.mark.parametrize("body", [
    "Spring sale. Reply STOP to opt out",
    "Spring sale. reply stop to opt out",
    "Spring sale. Text STOP to 60777",
    "Spring sale. STOP2END",
])
def test_a_keyword_instruction_counts_from_a_number(body):
    assert carries(body, replies=True)


@pytest.mark.parametrize("body", [
    "Spring sale. Reply STOP to opt out",
    "Spring sale. Text STOP to 60777",
])
def test_a_keyword_instruction_does_not_count_from_a_sender_id(body):
    assert not carries(body, replies=False)


def test_stop_text_counts_from_a_number_even_when_it_is_no_keyword_instruction():
    stop_text = "Opt-outs: call 0800 123 456"
    assert carries(f"Spring sale. {stop_text}", replies=True, stop_text=stop_text)
    assert not carries(f"Spring sale. {stop_text}", replies=False, stop_text=stop_text)


@pytest.mark.parametrize("body", [
    "Spring sale. unsubscribe: https://nowhere.invalid",
    "Spring sale. Opt out at www.acme.example/u",
    "Spring sale. https://acme.example/u to opt out",
    f"Spring sale. Opt out: https://evil.example/s/{OURS}",
    f"Spring sale. Opt out: {PUBLIC_URL}/s/{THEIRS}",
    f"Spring sale. Opt out: {PUBLIC_URL}/u/{OURS}",
    f"Spring sale. Opt out: {PUBLIC_URL}/s/{OURS}x",
])
@pytest.mark.parametrize("replies", [True, False])
def test_any_other_link_does_not_count(body, replies):
    assert not carries(body, replies=replies)


@pytest.mark.parametrize("body", [
    f"Spring sale. Opt out: {PUBLIC_URL}/s/{OURS}",
    f"Spring sale. Opt out: {PUBLIC_URL.upper()}/s/{OURS.upper()}.",
    f"Spring sale\n{PUBLIC_URL}/s/{THEIRS} or {PUBLIC_URL}/s/{OURS}",
])
@pytest.mark.parametrize("replies", [True, False])
def test_the_gateways_own_link_counts_from_any_sender(body, replies):
    assert carries(body, replies=replies)


def test_own_link_tokens_finds_every_token_of_the_gateways_links_only():
    body = (f"{PUBLIC_URL}/s/{OURS} https://evil.example/s/{THEIRS} "
            f"{PUBLIC_URL}/s/{THEIRS}")
    assert own_link_tokens(body, PUBLIC_URL) == [OURS, THEIRS]
    assert own_link_tokens("no link here", PUBLIC_URL) == []


def test_a_text_without_a_link_never_asks_the_ledger():
    def is_ours(token: str) -> bool:
        raise AssertionError("looked up a token")

    assert not carries_opt_out("Spring sale", replies=False, stop_text=STOP_TEXT,
                               public_url=PUBLIC_URL, is_ours=is_ours)
