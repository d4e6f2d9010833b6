"""How many SMS segments a text takes, and in which encoding.

A text goes as GSM-7 when every character is in the GSM 03.38 default alphabet or its
extension table, else as UCS-2 (UTF-16 code units on the wire, so an emoji costs 2 units).

| encoding | unit        | one segment | per segment when split |
|----------|-------------|-------------|------------------------|
| GSM-7    | septet      | 160         | 153                    |
| UCS-2    | 16-bit unit | 70          | 67                     |

Extension-table characters (form feed, ``^ { } \\ [ ~ ] |`` and ``€``) cost 2 septets
(escape + code). When a text is split, a character is never cut in half: an escape pair
or a UTF-16 surrogate pair that would straddle a boundary moves whole into the next
segment, as handset and provider encoders do, so a split text can take one segment more
than ``ceil(units / 153)``. The strict alphabet is used: ``ç`` (only ``Ç`` is GSM-7),
curly quotes and the like force UCS-2. Empty text still takes one segment.

>>> measure("Hello")
Segments(encoding='GSM-7', units=5, segments=1)
>>> measure("€" * 80)
Segments(encoding='GSM-7', units=160, segments=1)
>>> measure("Hi 👋")
Segments(encoding='UCS-2', units=5, segments=1)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7_SINGLE, GSM7_MULTI = 160, 153
UCS2_SINGLE, UCS2_MULTI = 70, 67

Encoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True)
class Segments:
    """The encoding a text needs, its length in that encoding's units, and its segments."""

    encoding: Encoding
    units: int
    segments: int


@functools.lru_cache(maxsize=1024)
def measure(text: str) -> Segments:
    """Measure `text` as an SMS: encoding, units (septets or UTF-16 units) and segments."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text):
        sizes = [2 if ch in GSM7_EXTENSION else 1 for ch in text]
        return _count("GSM-7", sizes, GSM7_SINGLE, GSM7_MULTI)
    sizes = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    return _count("UCS-2", sizes, UCS2_SINGLE, UCS2_MULTI)


def _count(encoding: Encoding, sizes: list[int], single: int, multi: int) -> Segments:
    units = sum(sizes)
    if units <= single:
        return Segments(encoding, units, 1)
    segments, used = 1, 0
    for size in sizes:
        if used + size > multi:  # never split an escape or surrogate pair
            segments, used = segments + 1, 0
        used += size
    return Segments(encoding, units, segments)
