"""Messenger invites: an SMS whose link is a short tracked URL of the gateway that sends the
customer on to a Telegram bot or a WhatsApp number (SPEC 1.3)."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import quote

from pydantic import Field

from config.cards import ItemId
from config.lines import Name, Strict
from config.phones import E164
from config.recipients import AUTO, PhoneChoice

LINK_FIELD = "link"


class _Invite(Strict):
    item_id: ItemId
    # A template; {{link}} is where the tracked link goes (appended when absent).
    text: Annotated[str, Field(min_length=1, max_length=2000)] = "{{link}}"
    phone_type: PhoneChoice = AUTO
    provider: Name | None = None
    line: E164 | None = None

    def template(self) -> str:
        """The text with the link's place in it."""
        placeholder = "{{" + LINK_FIELD + "}}"
        return self.text if placeholder in self.text.replace(" ", "") else f"{self.text} {placeholder}"


class TelegramInvite(_Invite):
    channel: Literal["telegram"]
    # A Telegram bot's username (5-32 letters, digits, underscores).
    bot: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{4,31}$")]

    @property
    def target(self) -> str:
        return self.bot


class WhatsappInvite(_Invite):
    channel: Literal["whatsapp"]
    number: E164

    @property
    def target(self) -> str:
        return self.number


InviteRequest = Annotated[TelegramInvite | WhatsappInvite, Field(discriminator="channel")]
Invite = TelegramInvite | WhatsappInvite


def destination(channel: str, target: str, token: str) -> str:
    """Where the tracked link sends the customer: the bot started with the invite's token
    (so the bot can tell which invite brought them), or the WhatsApp number's chat."""
    if channel == "telegram":
        return f"https://t.me/{target}?start={quote(token)}"
    return f"https://wa.me/{target.lstrip('+')}"
