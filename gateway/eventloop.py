"""The event loop a gateway process runs on: asyncio's own (the default), or uvloop
(libuv, in C; `pip install 'consent-gateway[uvloop]'`) with `[gateway] event_loop =
"uvloop"`. Same asyncio API either way. Not the default because it did not pay here:
measured with bench/bench_event_loop.py, figures in docs/performance.md."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")
LOOPS = ("asyncio", "uvloop")


def check(choice: str) -> str:
    """`choice` when this machine can run it; ConfigError naming the fix when not."""
    if choice == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            raise ConfigError('[gateway] event_loop = "uvloop" but uvloop is not installed '
                              "(pip install uvloop, or use \"asyncio\")") from None
    return choice


def run(main: Coroutine[Any, Any, T], choice: str = "asyncio") -> T:
    """`asyncio.run(main)` on the loop `choice` names."""
    if check(choice) == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)
