"""Where a text gets its opt-out: ``stop_text``, or a link for senders one cannot answer.

- Service texts (decision ``service_message``) get nothing.
- From a number: ``stop_text`` (template ``sms_stop_text.txt.j2``) on a new line, unless
  the text already says how to opt out (`keywords.carries_opt_out_instruction`).
- From an alphanumeric sender id ("ACME"), a reply of STOP cannot reach anyone, so the
  text gets ``Opt out: {public_url}/s/{token}`` (``sms_opt_out_link.txt.j2``) instead,
  unless it already holds an opt-out link. The token is stored before the text leaves.
- The answer warns when the added line costs one more segment.
"""

from __future__ import annotations

import re

from ..config import Stream
from ..ledger.writer import Writes
from ..policy import Decision
from ..runtime import Runtime
from ..templating import render, template
from . import keywords
from .segments import Segments

_NUMERIC_SENDER = re.compile(r"\+?[\d\s\-().]+")


def is_alphanumeric_sender(sender: str) -> bool:
    """A sender id like "ACME", which the recipient cannot reply to."""
    return _NUMERIC_SENDER.fullmatch(sender) is None


def compose(body: str, opt_out_line: str | None) -> str:
    """`body` with `opt_out_line` on a line of its own (unchanged when there is none)."""
    if not opt_out_line:
        return body
    separator = "" if body.endswith("\n") else "\n"
    return f"{body}{separator}{opt_out_line}"


def segment_warnings(before: Segments, after: Segments) -> list[str]:
    """A warning when the opt-out text made the text cost more (segments or encoding)."""
    if after.segments <= before.segments:
        return []
    change = (f" and switched it from {before.encoding} to {after.encoding}"
              if after.encoding != before.encoding else "")
    warning = (f"the opt-out text added a segment ({before.segments} -> {after.segments} "
               f"{after.encoding} segments){change}; shorten the body to save one")
    return [warning]


# (template object, stop_text) -> rendered line. `template` answers a new object when
# the file changed, so an edited template is rendered afresh.
_STOP_LINES: dict[tuple[int, str], tuple[object, str]] = {}


def _stop_line(stop_text: str) -> str:
    found = template("sms_stop_text.txt.j2")
    key = (id(found), stop_text)
    cached = _STOP_LINES.get(key)
    if cached is not None and cached[0] is found:
        return cached[1]
    line = found.render(stop_text=stop_text).strip()
    if len(_STOP_LINES) >= 64:
        _STOP_LINES.clear()
    _STOP_LINES[key] = (found, line)
    return line


async def opt_out_line(rt: Runtime, stream: Stream, decision: Decision, *, to: str,
                       from_: str, body: str, message_id: str) -> str | None:
    """The line to append to `body`, or None when it needs none (see module docstring)."""
    if not decision.needs_opt_out:
        return None
    if not is_alphanumeric_sender(from_):
        if keywords.carries_opt_out_instruction(body):
            return None
        return _stop_line(rt.settings.sms.stop_text)
    if keywords.carries_opt_out_link(body):
        return None
    token, record = rt.tokens.issue(org=stream.org, channel="sms", address=to,
                                    stream=stream.id, message_id=message_id)
    await rt.writer.write(Writes(tokens=[record]))
    url = f"{rt.settings.http.public_url}/s/{token}"
    return render("sms_opt_out_link.txt.j2", url=url).strip()
