"""Structured logging: one event per line, key=value. Never pass secrets or bodies."""

from __future__ import annotations

import logging
import re
import sys
import time


class _Formatter(logging.Formatter):
    """`asctime level=... message`, the date and time formatted once per second (a log
    line per message and delivery: formatting the time each time is most of its cost)."""

    def __init__(self, worker: int | None = None) -> None:
        tag = "" if worker is None else f"worker={worker} "
        super().__init__(f"%(asctime)s level=%(levelname)s {tag}%(message)s")
        self._second = -1
        self._text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        second = int(record.created)
        if second != self._second:
            self._second, self._text = second, time.strftime("%Y-%m-%d %H:%M:%S",
                                                             self.converter(second))
        return f"{self._text},{int(record.msecs):03d}"


def setup(level: str = "INFO") -> None:
    # Our records never show thread or process names, nor where they were logged from:
    # don't look them up per record (the logging HOWTO's "Optimization" settings).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("gateway")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # aiosmtpd logs every command and a deprecation notice per AUTH at INFO/WARNING.
    logging.getLogger("mail.log").setLevel(logging.ERROR)


def tag_worker(worker: int) -> None:
    """Name the worker process in every line it logs (see gateway.supervisor)."""
    for handler in logging.getLogger("gateway").handlers:
        if isinstance(handler.formatter, _Formatter):
            handler.setFormatter(_Formatter(worker))


_NEEDS_QUOTES = re.compile(r'[ "=\n\r\t]')


def _quote(value: object) -> str:
    text = value if type(value) is str else str(value)
    if not text or _NEEDS_QUOTES.search(text):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") \
            .replace("\r", "\\r") + '"'
    return text


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields) -> None:
    """Log `event=name k=v ...`."""
    if logger.isEnabledFor(level):
        parts = [f"event={name}"] + [f"{k}={_quote(v)}" for k, v in fields.items()]
        logger.log(level, " ".join(parts))
