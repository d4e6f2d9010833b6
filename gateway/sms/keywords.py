"""Keywords in inbound texts, and whether an outbound text already says to reply with one.

Keywords (case ignored):

| keyword                                                        | `Keyword`  |
|----------------------------------------------------------------|------------|
| STOP, UNSUBSCRIBE, CANCEL, END, QUIT, OPTOUT, REVOKE            | `STOP`     |
| STOPALL                                                        | `STOPALL`  |
| START, UNSTOP                                                  | `START`    |
| HELP, INFO                                                     | `HELP`     |

Decisions:

- A keyword counts only when it is the whole message. Surrounding whitespace, and
  punctuation or symbols at either end, are ignored ("Stop.", "STOP!!", "'stop'", "STOP 🛑"),
  as are spaces, hyphens and underscores inside it ("opt out", "OPT-OUT", "stop all").
- Anything longer ("stop sending me stuff please", "Cancel my order") is not a keyword:
  `classify` returns None and the caller forwards the text to ``inbound_forward_url``,
  where a person can act on an opt-out written in prose. Acting on a keyword found
  inside free text would turn ordinary replies ("the END of the month works") into
  opt-outs and confirmation texts; carriers and Twilio match whole messages too.
- YES is not an opt-in keyword (Twilio's default list has it): it is too common a reply
  to any question to count as a new, active opt-in.
- Twilio's ``OptOutType`` form field (STOP, START, HELP), sent when its Advanced Opt-Out
  matched a keyword, wins over our own reading of the body, because the provider has
  already acted on it. Within STOP, a body of STOPALL still gives `Keyword.STOPALL`. An
  empty or unknown ``OptOutType`` is ignored.

`carries_opt_out_instruction` tells whether a text already tells the reader to text an
opt-out keyword back, so that ``stop_text`` is not appended twice. It looks for (case
ignored):

- an instruction to send an opt-out keyword: "Reply STOP", "text STOP to 60777",
  "txt 'STOP'", "send UNSUBSCRIBE", "respond with STOP". The keyword must end the
  sentence or be followed by words such as "to", "or", "if", "at" or a dash, so that prose
  like "we'll text END of season deals" does not count;
- a keyword followed by what it does or where to send it: "STOP to opt out",
  "STOP to end", "STOP2END", "STOP=stop", "STOP to 60777" (END alone does not start this
  form: "end to end" is prose).

Only keywords this gateway honours count: "Reply NO to opt out" does not, since a reply of
NO would not opt anyone out here. Such an instruction works only where the reader can
reply (a number, not a sender id: see opt_out.py). A link is never read as an opt-out
here: "unsubscribe: https://…" may lead anywhere, or nowhere; the only link that counts is
the gateway's own ``/s/`` link, which opt_out.py checks against the ledger.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from enum import StrEnum


class Keyword(StrEnum):
    """What an inbound text asks for."""

    STOP = "stop"
    STOPALL = "stopall"
    START = "start"
    HELP = "help"


KEYWORDS: dict[str, Keyword] = {
    **dict.fromkeys(
        ("stop", "unsubscribe", "cancel", "end", "quit", "optout", "revoke"), Keyword.STOP
    ),
    "stopall": Keyword.STOPALL,
    "start": Keyword.START,
    "unstop": Keyword.START,
    "help": Keyword.HELP,
    "info": Keyword.HELP,
}

# Twilio's OptOutType values -> the keyword class they stand for.
TWILIO_OPT_OUT_TYPES: dict[str, Keyword] = {
    "STOP": Keyword.STOP,
    "START": Keyword.START,
    "HELP": Keyword.HELP,
}

_INNER_SEPARATORS = re.compile(r"[\s\-_]+")


def classify(body: str, opt_out_type: str | None = None) -> Keyword | None:
    """Return the keyword `body` is, or None for any other text.

    `opt_out_type` is Twilio's ``OptOutType`` form field; when it holds a known value it
    decides the outcome (see the module docstring).
    """
    from_body = KEYWORDS.get(_normalise(body))
    from_provider = TWILIO_OPT_OUT_TYPES.get((opt_out_type or "").strip().upper())
    if from_provider is None:
        return from_body
    if from_provider is Keyword.STOP and from_body is Keyword.STOPALL:
        return Keyword.STOPALL
    return from_provider


def _normalise(body: str) -> str:
    start, end = 0, len(body)
    while start < end and _is_edge_noise(body[start]):
        start += 1
    while end > start and _is_edge_noise(body[end - 1]):
        end -= 1
    return _INNER_SEPARATORS.sub("", body[start:end]).casefold()


def _is_edge_noise(ch: str) -> bool:
    # whitespace, punctuation (P*), symbols (S*, emoji included), format marks (Cf, e.g. ZWJ)
    category = unicodedata.category(ch)
    return ch.isspace() or category[0] in "PS" or category == "Cf"


_OPT_OUT_WORD = r"(?:stop\s*all|stop|unsubscribe|cancel|end|quit|opt[\s\-]?out|revoke)"
_TRIGGER_WORD = r"(?:stop\s*all|stop|unsubscribe|cancel|quit|opt[\s\-]?out|revoke)"  # no "end"
_QUOTE = r"[\"'“”‘’]?"
# What may follow "Reply STOP" for it to read as an instruction rather than prose
# ("text END of season sale" is not one).
_INSTRUCTION_END = (
    rf"(?={_QUOTE}(?:\s*$|\s*[.,;:!?)\]/|]|\s+[-–—]"
    r"|\s+(?:to|2|or|and|if|at|any\s*time|for|now)\b))"
)

# Reply STOP / text STOP to 60777 / txt 'STOP' / respond with the word STOP
_SEND_KEYWORD = (
    r"\b(?:reply|text|txt|send|sms|respond|msg|message)\b[\s:]*"
    rf"(?:with\s+)?(?:the\s+word\s+)?{_QUOTE}{_OPT_OUT_WORD}{_INSTRUCTION_END}"
)
# STOP to opt out / STOP2END / STOP=stop / STOP to 60777
_KEYWORD_TO_EFFECT = (
    rf"\b{_TRIGGER_WORD}{_QUOTE}\s*(?:to|2|=)\s*"
    r"(?:(?:opt[\s\-]?out|unsubscribe|unsub|end|stop|quit|cancel)\b|\+?\d{4,})"
)
_OPT_OUT_INSTRUCTION = re.compile(f"{_SEND_KEYWORD}|{_KEYWORD_TO_EFFECT}",
                                  re.IGNORECASE | re.MULTILINE)


@functools.lru_cache(maxsize=1024)  # a campaign sends one body to many numbers
def carries_opt_out_instruction(body: str) -> bool:
    """True when `body` already tells the reader to text an opt-out keyword back (see the
    module docstring); links do not count."""
    return _OPT_OUT_INSTRUCTION.search(body) is not None


def is_confirmation(body: str) -> bool:
    """A reply of YES (case, surrounding whitespace and punctuation ignored): it confirms
    a pending double opt-in by text (gateway/subscriptions.py), and is not a keyword:
    with nothing pending it is an ordinary reply, forwarded."""
    return _normalise(body) == "yes"
