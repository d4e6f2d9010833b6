"""Structured logging: one event per line, key=value. Never pass secrets or bodies."""

from __future__ import annotations

import logging
import sys


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s level=%(levelname)s %(message)s"))
    root = logging.getLogger("gateway")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # aiosmtpd logs every command and a deprecation notice per AUTH at INFO/WARNING.
    logging.getLogger("mail.log").setLevel(logging.ERROR)


def _quote(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n\r\t'):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") \
            .replace("\r", "\\r") + '"'
    return text


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields) -> None:
    """Log `event=name k=v ...`."""
    if logger.isEnabledFor(level):
        parts = [f"event={name}"] + [f"{k}={_quote(v)}" for k, v in fields.items()]
        logger.log(level, " ".join(parts))
