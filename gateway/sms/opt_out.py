"""Where a text gets its opt-out: ``stop_text``, or a link for senders one cannot answer.

- Service texts (decision ``service_message``) get nothing.
- A text that already carries a working opt-out gets nothing more (`carries_opt_out`):
  from a number (which can receive replies), ``stop_text`` itself or an instruction to
  text an opt-out keyword back (`keywords.carries_opt_out_instruction`); from any sender,
  the gateway's own link ``{public_url}/s/TOKEN`` with a token issued for this org and
  this recipient. Any other link ("unsubscribe: https://…") may lead anywhere or nowhere,
  so it does not count.
- Otherwise, from a number: ``stop_text`` (template ``sms_stop_text.txt.j2``) on a new
  line. From an alphanumeric sender id ("ACME"), a reply of STOP cannot reach anyone, so
  the text gets ``Opt out: {public_url}/s/{token}`` (``sms_opt_out_link.txt.j2``)
  instead. The token is stored before the text leaves.
- The answer warns when the added line costs one more segment.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from ..config import Stream
from ..errors import TokenError
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


@functools.lru_cache(maxsize=8)
def _own_link(public_url: str) -> re.Pattern[str]:
    # A token is 32 characters of base32 (read case-insensitively, as pages.py does).
    return re.compile(re.escape(public_url) + r"/s/([a-z2-7]{32})(?![a-z0-9])", re.IGNORECASE)


def own_link_tokens(body: str, public_url: str) -> list[str]:
    """The tokens of every link to the gateway's own ``{public_url}/s/TOKEN`` in `body`."""
    if "/s/" not in body:  # nearly every text: no search at all
        return []
    return _own_link(public_url).findall(body)


@functools.lru_cache(maxsize=1024)  # a campaign sends one body to many numbers
def _holds_reply_instruction(body: str, stop_text: str) -> bool:
    return (stop_text.casefold() in body.casefold()
            or keywords.carries_opt_out_instruction(body))


def carries_opt_out(body: str, *, replies: bool, stop_text: str, public_url: str,
                    is_ours: Callable[[str], bool]) -> bool:
    """Whether `body` already carries a working opt-out (see the module docstring):
    `replies` when the sender can receive replies (a number), `is_ours(token)` when a
    token of the gateway's own /s/ link in the body was issued for this org and
    recipient."""
    if replies and stop_text and _holds_reply_instruction(body, stop_text):
        return True
    return any(is_ours(token) for token in own_link_tokens(body, public_url))


async def opt_out_line(rt: Runtime, stream: Stream, decision: Decision, *, to: str,
                       from_: str, body: str, message_id: str) -> str | None:
    """The line to append to `body`, or None when it needs none (see module docstring)."""
    if not decision.needs_opt_out:
        return None

    def is_ours(token: str) -> bool:
        # An indexed read, and only for a text that holds a link to us: on the loop.
        try:
            record = rt.tokens.resolve(token)
        except TokenError:
            return False
        return (record.org, record.channel, record.address) == (stream.org, "sms", to)

    replies = not is_alphanumeric_sender(from_)
    if carries_opt_out(body, replies=replies, stop_text=rt.settings.sms.stop_text,
                       public_url=rt.settings.http.public_url, is_ours=is_ours):
        return None
    if replies:
        return _stop_line(rt.settings.sms.stop_text)
    token, record = rt.tokens.issue(org=stream.org, channel="sms", address=to,
                                    stream=stream.id, message_id=message_id)
    await rt.writer.write(Writes(tokens=[record]))
    url = f"{rt.settings.http.public_url}/s/{token}"
    return render("sms_opt_out_link.txt.j2", url=url).strip()
