"""Structured logging: one event per line, key=value. Never pass secrets or bodies.

`event` writes a line per message, delivery and text. When the gateway's own handler is the
only one that would see it (the usual case: `setup` installed it and nothing else was
added), it writes the line itself, the same text the handler would, without building a
LogRecord: that is most of a line's cost. Any other handler or filter on the way, and the
line goes through `logging` as usual.
"""

from __future__ import annotations

import logging
import re
import sys
import time

ROOT = "gateway"


class _Formatter(logging.Formatter):
    """`asctime level=... message`, the date and time formatted once per second (a log
    line per message and delivery: formatting the time each time is most of its cost)."""

    def __init__(self, worker: int | None = None) -> None:
        self._tag = "" if worker is None else f"worker={worker} "
        super().__init__(f"%(asctime)s level=%(levelname)s {self._tag}%(message)s")
        self._second = -1
        self._text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return self._time(record.created)

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._text = second, time.strftime("%Y-%m-%d %H:%M:%S",
                                                             self.converter(second))
        # as LogRecord computes msecs
        return f"{self._text},{int((created - second) * 1000):03d}"

    def line(self, created: float, levelname: str, message: str) -> str:
        """What `format` makes of a record of `message` (no exception) made at `created`."""
        return f"{self._time(created)} level={levelname} {self._tag}{message}"


class _LineHandler(logging.StreamHandler):
    """The handler `setup` installs on the "gateway" logger."""


def setup(level: str = "INFO") -> None:
    # Our records never show thread or process names, nor where they were logged from:
    # don't look them up per record (the logging HOWTO's "Optimization" settings).
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None
    handler = _LineHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger(ROOT)
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # aiosmtpd logs every command and a deprecation notice per AUTH at INFO/WARNING.
    logging.getLogger("mail.log").setLevel(logging.ERROR)


def tag_worker(worker: int) -> None:
    """Name the worker process in every line it logs (see gateway.supervisor)."""
    for handler in logging.getLogger(ROOT).handlers:
        if isinstance(handler.formatter, _Formatter):
            handler.setFormatter(_Formatter(worker))


_NEEDS_QUOTES = re.compile(r'[ "=\n\r\t]')


def _quote(value: object) -> str:
    text = value if type(value) is str else str(value)
    if not text or _NEEDS_QUOTES.search(text):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") \
            .replace("\r", "\\r") + '"'
    return text


# Fields holding someone else's words (an upstream's reply, an exception, a request path
# such as /api/v1/contacts/email/ADDRESS): the addresses and phone numbers in them are
# masked, as every address field is (docs/privacy.md).
FREE_TEXT_FIELDS = frozenset({"error", "problem", "detail", "text", "path"})
_ADDRESS_IN_TEXT = re.compile(r"[^\s<>()\[\]\"',;:=@]+@[A-Za-z0-9][A-Za-z0-9.-]*\.[A-Za-z]{2,}"
                              r"|\+\d[\d ]{7,16}\d|\b0\d{9,10}\b")


def scrub(text: str) -> str:
    """`text` with each email address and phone number in it masked."""
    from .addresses import mask

    return _ADDRESS_IN_TEXT.sub(lambda m: mask(m.group(0)), text)


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields) -> None:
    """Log `event=name k=v ...` (free-text fields scrubbed of addresses)."""
    if not logger.isEnabledFor(level):
        return
    for key in FREE_TEXT_FIELDS.intersection(fields):
        fields[key] = scrub(str(fields[key]))
    message = " ".join([f"event={name}", *[f"{k}={_quote(v)}" for k, v in fields.items()]])
    handler = _sole_handler(logger)
    if handler is None or level < handler.level or not _write(handler, level, message):
        logger.log(level, message)


def _sole_handler(logger: logging.Logger) -> _LineHandler | None:
    """The gateway's own handler when it is the only handler and there is no filter
    between `logger` and it; else None."""
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return None
        if current.name == ROOT:
            handlers = current.handlers
            if current.propagate or len(handlers) != 1:
                return None
            handler = handlers[0]
            if type(handler) is not _LineHandler or handler.filters \
                    or type(handler.formatter) is not _Formatter:
                return None
            return handler
        if current.handlers or not current.propagate:
            return None
        current = current.parent  # type: ignore[assignment]
    return None


def _write(handler: _LineHandler, level: int, message: str) -> bool:
    """What `handler.emit` would do with the record; False when it could not (the caller
    then logs through `logging`, which reports the error its own way)."""
    formatter: _Formatter = handler.formatter  # type: ignore[assignment]
    handler.acquire()
    try:
        handler.stream.write(formatter.line(time.time(), logging.getLevelName(level), message)
                             + handler.terminator)
        handler.flush()
    except Exception:  # noqa: BLE001 - handed to logging, see above
        return False
    finally:
        handler.release()
    return True
