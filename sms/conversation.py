"""Automatic replies of an SMS conversation (Open Channels over SMS): which one a
customer's message gets, from the line's ``replies`` and ``hours``.

Only the message that opens a conversation (the customer's first, or the first after the
conversation went idle or an agent closed it) is answered: a customer texting five times
gets one reply, not five. Outside the line's working hours that reply is ``after_hours``
(when set), otherwise ``welcome``.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from enum import StrEnum
from zoneinfo import ZoneInfo

from config.lines import DAYS, Hours, Replies


class Reply(StrEnum):
    WELCOME = "welcome"
    AFTER_HOURS = "after_hours"
    CLOSING = "closing"


def is_open(hours: Hours, at: float) -> bool:
    """Whether unix time ``at`` falls in the working hours, in the line's own time zone."""
    local = datetime.fromtimestamp(at, UTC).astimezone(ZoneInfo(hours.tz))
    span = getattr(hours, DAYS[local.weekday()])
    if span is None:
        return False
    return time.fromisoformat(span[0]) <= local.time() < time.fromisoformat(span[1])


def opening_reply(replies: Replies | None, hours: Hours | None, at: float) -> tuple[Reply, str] | None:
    """The reply to a message that opens a conversation at ``at``, or None."""
    if replies is None:
        return None
    if hours is not None and not is_open(hours, at):
        return (Reply.AFTER_HOURS, replies.after_hours) if replies.after_hours else None
    return (Reply.WELCOME, replies.welcome) if replies.welcome else None
