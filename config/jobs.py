"""Job status words (API.md), how far each one is, and the retry schedule: shared by
robocalls and SMS."""

from __future__ import annotations

from enum import StrEnum


class JobKind(StrEnum):
    ROBOCALL = "robocall"
    SMS = "sms"


class JobStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    RINGING = "ringing"
    ANSWERED = "answered"
    COMPLETED = "completed"
    DELIVERED = "delivered"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"
    SKIPPED = "skipped"


# Progress within one dial: a provider callback that ranks at or below where the job is
# arrived late or twice and must not move it backwards.
RANK: dict[JobStatus, int] = {
    JobStatus.QUEUED: 0,
    JobStatus.SENDING: 1,
    JobStatus.SENT: 2,
    JobStatus.RINGING: 3,
    JobStatus.ANSWERED: 4,
    **dict.fromkeys(
        (
            JobStatus.COMPLETED,
            JobStatus.DELIVERED,
            JobStatus.NO_ANSWER,
            JobStatus.BUSY,
            JobStatus.FAILED,
            JobStatus.SKIPPED,
        ),
        5,
    ),
}

FINAL = frozenset(status for status, rank in RANK.items() if rank == 5)
# Placed and waiting for the provider to say how the call went.
IN_CALL = frozenset({JobStatus.SENT, JobStatus.RINGING, JobStatus.ANSWERED})
# A provider reporting one of these says the job reached its customer: the call was answered
# (``completed`` ends only an answered call), the message left for the handset (``sent``
# comes from the provider only for a message; a call is ``sent`` by its own placement).
REACHED = frozenset({JobStatus.ANSWERED, JobStatus.COMPLETED, JobStatus.SENT, JobStatus.DELIVERED})


def backoff(tries: int, base: float, cap: float, jitter: float) -> float:
    """Seconds before retry number ``tries`` (1, 2, ...): exponential, capped, and spread by
    ``jitter`` in [0, 1) over its upper half so retries of many jobs do not arrive together."""
    delay = min(cap, base * 2.0 ** (tries - 1))
    return delay / 2 + jitter * delay / 2
