"""Segment counts against a table of tricky messages (GSM 03.38 and UCS-2)."""

from __future__ import annotations

import pytest

from sms.segments import Encoding, count_segments

GSM, UCS = Encoding.GSM7, Encoding.UCS2

TABLE = [
    # text, encoding, units, segments
    ("hello", GSM, 5, 1),
    ("a" * 160, GSM, 160, 1),
    ("a" * 161, GSM, 161, 2),
    ("a" * 306, GSM, 306, 2),
    ("a" * 307, GSM, 307, 3),
    # Extension characters cost two septets each.
    ("€", GSM, 2, 1),
    ("{}[]~|^\\€", GSM, 18, 1),
    ("a" * 158 + "€", GSM, 160, 1),
    ("a" * 159 + "€", GSM, 161, 2),
    # An escape sequence is never split: 152 septets then "€" (2) does not fit in 153.
    ("a" * 152 + "€" + "a" * 10, GSM, 164, 2),
    ("a" * 152 + "€" + "a" * 152, GSM, 306, 3),
    # Accented characters of the GSM alphabet stay GSM-7; one outside it makes it UCS-2.
    ("àèéìòùÄÖÑÜäöñüßÆæÅåØøÇÉ¿¡£¥§", GSM, 28, 1),
    ("a" * 159 + "á", UCS, 160, 3),
    ("Olá", UCS, 3, 1),
    ("ç", UCS, 1, 1),  # lowercase ç is not in GSM 03.38 (only Ç is)
    ("x" * 70, GSM, 70, 1),
    ("á" * 70, UCS, 70, 1),
    ("á" * 71, UCS, 71, 2),
    ("á" * 134, UCS, 134, 2),
    ("á" * 135, UCS, 135, 3),
    ("Привет", UCS, 6, 1),
    # Emoji are surrogate pairs: two units each, never split between parts.
    ("😀", UCS, 2, 1),
    ("😀" * 35, UCS, 70, 1),
    ("😀" * 35 + "a", UCS, 71, 2),
    ("a" * 66 + "😀" + "a" * 10, UCS, 78, 2),
    ("a" * 66 + "😀" + "a" * 66, UCS, 134, 3),
    ("Olá Ana 😀", UCS, 10, 1),
    ("", GSM, 0, 0),
]


@pytest.mark.parametrize(("text", "encoding", "units", "segments"), TABLE)
def test_segments(text: str, encoding: Encoding, units: int, segments: int) -> None:
    found = count_segments(text)
    assert (found.encoding, found.units, found.segments) == (encoding, units, segments)
