"""How many SMS parts a text costs, and in which encoding (GSM 03.38 / UCS-2).

A text is GSM-7 when every character is in the GSM default alphabet or its extension
table (an extension character is an escape plus the character: two septets). One character
outside both makes the whole message UCS-2, where a character beyond the Basic Multilingual
Plane (most emoji) is a surrogate pair: two 16-bit units. A single message holds 160 septets
or 70 units; a longer one is split into parts of 153 septets or 67 units (the rest carries
the concatenation header), and a part never splits an escape sequence or a surrogate pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# GSM 03.38 default alphabet (the escape, 0x1B, is not a character of its own).
GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Reached through the escape: each costs two septets.
GSM_EXTENSION = frozenset("\f^{}\\[~]|€")

SINGLE = {"GSM-7": 160, "UCS-2": 70}
PART = {"GSM-7": 153, "UCS-2": 67}


class Encoding(StrEnum):
    GSM7 = "GSM-7"
    UCS2 = "UCS-2"


@dataclass(frozen=True)
class Segments:
    encoding: Encoding
    units: int  # septets (GSM-7) or 16-bit units (UCS-2)
    segments: int


def _cost(char: str, encoding: Encoding) -> int:
    if encoding is Encoding.UCS2:
        return 2 if ord(char) > 0xFFFF else 1
    return 2 if char in GSM_EXTENSION else 1


def encoding_of(text: str) -> Encoding:
    gsm = all(char in GSM_BASIC or char in GSM_EXTENSION for char in text)
    return Encoding.GSM7 if gsm else Encoding.UCS2


def count_segments(text: str) -> Segments:
    """The encoding, length in units and number of parts ``text`` is sent as."""
    encoding = encoding_of(text)
    costs = [_cost(char, encoding) for char in text]
    units = sum(costs)
    if units <= SINGLE[encoding.value]:
        return Segments(encoding, units, 1 if units else 0)
    part, segments, used = PART[encoding.value], 1, 0
    for cost in costs:
        if used + cost > part:
            segments, used = segments + 1, 0
        used += cost
    return Segments(encoding, units, segments)
