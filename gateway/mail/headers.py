"""Byte-level header edits for copies we do not otherwise rewrite (service mail)."""

from __future__ import annotations

import re

_HEADER_END = re.compile(rb"\r?\n\r?\n")


def split_head(raw: bytes) -> tuple[bytes, bytes]:
    """(header block including its final line break, rest of the message)."""
    m = _HEADER_END.search(raw)
    if not m:
        return raw, b""
    cut = m.start() + (2 if raw[m.start():m.start() + 2] == b"\r\n" else 1)
    return raw[:cut], raw[cut:]


def _fields(head: bytes) -> list[bytes]:
    """Header fields with their folded continuation lines kept together."""
    fields: list[bytes] = []
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def strip_headers(raw: bytes, prefix: bytes) -> bytes:
    """Remove every header whose name starts with `prefix` (case-insensitive)."""
    head, rest = split_head(raw)
    lower = prefix.lower()
    kept = [f for f in _fields(head) if not f.lower().startswith(lower)]
    return b"".join(kept) + rest


def header_value(raw: bytes, name: bytes) -> bytes | None:
    head, _ = split_head(raw)
    key = name.lower() + b":"
    for f in _fields(head):
        if f.lower().startswith(key):
            return b" ".join(f[len(key):].split())
    return None


def ensure_message_id(raw: bytes, make_id) -> tuple[bytes, str]:
    """The message's Message-ID, adding one at the top when it has none."""
    value = header_value(raw, b"Message-ID")
    if value:
        return raw, value.decode("ascii", "replace")
    new_id = make_id()
    return f"Message-ID: {new_id}\r\n".encode() + raw, new_id
