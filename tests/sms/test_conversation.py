"""Which automatic reply opens a conversation, by the line's hours in its own time zone."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from config.lines import Hours, Replies
from sms.conversation import Reply, is_open, opening_reply

MADRID = ZoneInfo("Europe/Madrid")
HOURS = Hours(tz="Europe/Madrid", mon=["09:00", "18:00"], tue=["09:00", "18:00"])
REPLIES = Replies(welcome="Hola", after_hours="Cerrado")


def at(day: int, hour: int, minute: int = 0) -> float:
    # 2026-11-23 is a Monday; Madrid is UTC+1 in November.
    return datetime(2026, 11, day, hour, minute, tzinfo=MADRID).timestamp()


def test_open_in_the_lines_time_zone() -> None:
    assert is_open(HOURS, at(23, 9)) and is_open(HOURS, at(24, 17, 59))
    assert not is_open(HOURS, at(23, 8, 59)) and not is_open(HOURS, at(23, 18))
    assert not is_open(HOURS, at(23, 23)) and not is_open(HOURS, at(25, 10))  # Wednesday: closed
    # 08:30 UTC is 09:30 in Madrid.
    assert is_open(HOURS, datetime(2026, 11, 23, 8, 30, tzinfo=ZoneInfo("UTC")).timestamp())


def test_the_opening_reply() -> None:
    assert opening_reply(REPLIES, HOURS, at(23, 10)) == (Reply.WELCOME, "Hola")
    assert opening_reply(REPLIES, HOURS, at(23, 23)) == (Reply.AFTER_HOURS, "Cerrado")
    assert opening_reply(REPLIES, None, at(23, 23)) == (Reply.WELCOME, "Hola")
    assert opening_reply(Replies(welcome="Hola"), HOURS, at(23, 23)) is None
    assert opening_reply(None, HOURS, at(23, 10)) is None
