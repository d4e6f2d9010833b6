"""Inbound keywords (whole-message match) and detection of an existing opt-out instruction."""

import pytest

from gateway.sms.keywords import Keyword, carries_opt_out_instruction, classify

OPT_OUT = ["STOP", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "OPTOUT", "REVOKE"]


@pytest.mark.parametrize("word", OPT_OUT)
def test_every_opt_out_keyword_means_stop(word):
    assert classify(word) is Keyword.STOP


def test_stopall_means_stop_all():
    assert classify("STOPALL") is Keyword.STOPALL


@pytest.mark.parametrize("word", ["START", "UNSTOP"])
def test_start_and_unstop_mean_start(word):
    assert classify(word) is Keyword.START


@pytest.mark.parametrize("word", ["HELP", "INFO"])
def test_help_and_info_mean_help(word):
    assert classify(word) is Keyword.HELP


@pytest.mark.parametrize("word", [*OPT_OUT, "STOPALL", "START", "UNSTOP", "HELP", "INFO"])
def test_keywords_are_matched_in_lower_and_mixed_case(word):
    assert classify(word.lower()) is classify(word)
    assert classify(word.capitalize()) is classify(word)


@pytest.mark.parametrize("body", ["  stop  ", "\nSTOP\r\n", "\tStop "])
def test_surrounding_whitespace_is_ignored(body):
    assert classify(body) is Keyword.STOP


@pytest.mark.parametrize("body", ["Stop.", "STOP!!", "'stop'", '"STOP"', "stop 🛑", "¡STOP!"])
def test_punctuation_and_symbols_around_a_keyword_are_ignored(body):
    assert classify(body) is Keyword.STOP


@pytest.mark.parametrize("body", ["opt out", "Opt-Out", "OPT_OUT"])
def test_opt_out_written_as_two_words_means_stop(body):
    assert classify(body) is Keyword.STOP


def test_stop_all_written_as_two_words_means_stop_all():
    assert classify("Stop all") is Keyword.STOPALL


@pytest.mark.parametrize(
    "body",
    [
        "stop sending me stuff please",
        "Cancel my order",
        "the end of the month works",
        "STOP STOP",
        "stopp",
        "yes",
        "Y",
        "",
        "   ",
        "?!",
    ],
)
def test_text_that_is_not_just_a_keyword_is_not_a_keyword(body):
    assert classify(body) is None


def test_keyword_values_are_plain_strings():
    assert [k.value for k in Keyword] == ["stop", "stopall", "start", "help"]
    assert Keyword.STOP == "stop"


@pytest.mark.parametrize(
    ("opt_out_type", "expected"),
    [("STOP", Keyword.STOP), ("START", Keyword.START), ("HELP", Keyword.HELP)],
)
def test_twilio_opt_out_type_wins_over_the_body(opt_out_type, expected):
    assert classify("Please leave me alone", opt_out_type) is expected


def test_twilio_opt_out_type_wins_even_when_the_body_is_another_keyword():
    assert classify("START", "STOP") is Keyword.STOP


def test_twilio_stop_with_a_stopall_body_stays_stopall():
    assert classify("stopall", "STOP") is Keyword.STOPALL


@pytest.mark.parametrize("opt_out_type", ["", "  ", "CUSTOM", None])
def test_empty_or_unknown_opt_out_type_falls_back_to_the_body(opt_out_type):
    assert classify("stop", opt_out_type) is Keyword.STOP
    assert classify("hello", opt_out_type) is None


def test_opt_out_type_is_read_case_insensitively():
    assert classify("hello", "stop") is Keyword.STOP


@pytest.mark.parametrize(
    "body",
    [
        "Spring sale! Reply STOP to opt out",
        "20% off today. Text STOP to 60777",
        "Offers inside. Txt 'STOP' to 81025",
        "New range in store. STOP to opt out",
        "Big sale STOP2END",
        "Sale on. To opt out reply STOP.",
        "Sale on (reply stop)",
        "Sale on. Respond with the word UNSUBSCRIBE to unsubscribe",
        "Sale on. Opt-out: reply STOP",
        "Sale on\nReply STOP\nAcme",
    ],
)
def test_texts_that_say_to_reply_an_opt_out_keyword_are_recognised(body):
    assert carries_opt_out_instruction(body)


@pytest.mark.parametrize(
    "body",
    [
        "Spring sale starts today",
        "We will text END of season deals soon",
        "Our text stops here",
        "Don't stop now, 20% off",
        "Stop by our shop",
        "Now with end to end encryption",
        "We'll send cancel confirmations by email",
        "Reply NO to opt out",
        "Reply to this text to end the chat",
        "Visit https://acme.example/sale",
        # A link may lead anywhere, or nowhere: only the gateway's own counts (opt_out.py).
        "Sale on. unsubscribe: https://acme.example/u/abc",
        "Sale on. Opt out at www.acme.example/u",
        "Sale on. To unsubscribe visit https://acme.example/u",
        "Sale on. https://acme.example/u to opt out",
    ],
)
def test_texts_without_a_keyword_instruction_are_not_mistaken_for_one(body):
    assert not carries_opt_out_instruction(body)
