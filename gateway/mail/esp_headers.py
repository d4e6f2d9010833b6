"""Each configured ESP's custom-data header on a marketing copy, holding `gateway_token`
(the copy's unsubscribe token), so that ESP's events about the copy name it back:

- SendGrid: `X-SMTPAPI: {"unique_args": {"gateway_token": TOKEN}}` (events carry unique
  args as top-level fields);
- Mailgun: `X-Mailgun-Variables: {"gateway_token": TOKEN}` (events: `user-variables`);
- Postmark: `X-PM-Metadata-gateway_token: TOKEN` (events: `Metadata`).

A sender's own `X-SMTPAPI` / `X-Mailgun-Variables` keeps everything else it holds: the
key is set in its JSON. One that is not a JSON object is left as it is and gets no token
(the ESP would refuse or mangle a second header); that ESP's events are then matched by
recipient and `[esp.NAME] org`. Byte-level edits of the header block only; the body is
untouched."""

from __future__ import annotations

import json

from .headers import _fields, split_head

TOKEN_KEY = "gateway_token"
FOLD_AT = 76  # a long JSON header is folded at spaces (RFC 5322 lines stay short)


def _json_header(name: str, value: dict) -> bytes:
    """`Name: {json}` folded at the spaces between JSON tokens (unfolding restores it)."""
    text = json.dumps(value, separators=(", ", ": "), ensure_ascii=True)
    lines, line = [], f"{name}:"
    for piece in text.split(" "):
        if len(line) + 1 + len(piece) > FOLD_AT and line.strip() != f"{name}:":
            lines.append(line)
            line = ""
        line += " " + piece
    lines.append(line)
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def _existing(fields: list[bytes], name: bytes) -> list[int]:
    key = name.lower() + b":"
    return [i for i, f in enumerate(fields) if f.lower().startswith(key)]


def _merged(field: bytes, name: bytes, update) -> dict | None:
    """The JSON object of a sender's header with `update` applied; None if it is none."""
    text = b" ".join(field[len(name) + 1:].split()).decode("utf-8", "replace")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, dict):
        return None
    return update(value)


def _with_unique_arg(value: dict, token: str) -> dict | None:
    args = value.get("unique_args", {})
    if not isinstance(args, dict):
        return None
    return {**value, "unique_args": {**args, TOKEN_KEY: token}}


def add_esp_headers(data: bytes, token: str, esps: tuple[str, ...] | list[str]) -> bytes:
    """`data` (a whole copy) with each ESP in `esps` given its header (see module)."""
    if not esps:
        return data
    head, rest = split_head(data)
    fields = _fields(head)
    added: list[bytes] = []
    json_headers = {"sendgrid": (b"X-SMTPAPI", lambda v: _with_unique_arg(v, token),
                                 {"unique_args": {TOKEN_KEY: token}}),
                    "mailgun": (b"X-Mailgun-Variables", lambda v: {**v, TOKEN_KEY: token},
                                {TOKEN_KEY: token})}
    for esp in esps:
        if esp in json_headers:
            name, update, fresh = json_headers[esp]
            found = _existing(fields, name)
            if not found:
                added.append(_json_header(name.decode(), fresh))
                continue
            merged = _merged(fields[found[0]], name, update) if len(found) == 1 else None
            if merged is not None:
                fields[found[0]] = _json_header(name.decode(), merged)
        elif esp == "postmark":
            name = f"X-PM-Metadata-{TOKEN_KEY}".encode()
            for i in reversed(_existing(fields, name)):
                del fields[i]
            added.append(name + b": " + token.encode("ascii") + b"\r\n")
    return b"".join(added) + b"".join(fields) + rest
