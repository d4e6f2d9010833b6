"""cached_if_short: remembers answers for short text only, and never an error."""

import pytest

from gateway.caching import cached_if_short


def counted():
    calls: list[str] = []

    @cached_if_short(4, maxsize=8)
    def upper(text: str, suffix: str = "") -> str:
        calls.append(text)
        if text == "bad":
            raise ValueError(text)
        return text.upper() + suffix

    return upper, calls


def test_a_short_text_is_worked_out_once():
    upper, calls = counted()
    assert [upper("ab"), upper("ab"), upper("ab", "!")] == ["AB", "AB", "AB!"]
    assert calls == ["ab", "ab"]  # once per distinct arguments


def test_a_long_text_is_worked_out_every_time_and_never_kept():
    upper, calls = counted()
    assert [upper("abcdef"), upper("abcdef")] == ["ABCDEF", "ABCDEF"]
    assert calls == ["abcdef", "abcdef"]
    assert upper.cache_info().currsize == 0


def test_an_error_is_not_remembered():
    upper, calls = counted()
    for _ in range(2):
        with pytest.raises(ValueError):
            upper("bad")
    assert calls == ["bad", "bad"]
