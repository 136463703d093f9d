"""The one error a webhook parser raises, so the gateway maps every bad body to one 400."""

from __future__ import annotations


class MalformedWebhook(ValueError):
    """A webhook body that cannot be read as the event it claims to be.

    ``field`` names the offending field (``None`` when the body as a whole is unreadable);
    it becomes the ``field`` of the API error envelope.
    """

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
