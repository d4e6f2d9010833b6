"""Caches for pure functions of one text that the hot paths call over and over (a campaign
sends one body from one sender to many numbers, and numbers repeat across campaigns)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

R = TypeVar("R")


def cached_if_short(max_len: int, maxsize: int) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """`functools.lru_cache(maxsize)` for a function whose first argument is a string, used
    only when that string has at most `max_len` characters, so odd input cannot fill the
    cache with big strings. Like lru_cache, a call that raises is not remembered."""

    def wrap(fn: Callable[..., R]) -> Callable[..., R]:
        cached = functools.lru_cache(maxsize=maxsize)(fn)

        @functools.wraps(fn)
        def call(text: str, *rest) -> R:
            return cached(text, *rest) if len(text) <= max_len else fn(text, *rest)

        call.cache_info = cached.cache_info  # type: ignore[attr-defined]
        return call

    return wrap
