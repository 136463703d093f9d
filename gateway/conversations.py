"""SMS conversations (Open Channels over SMS): the automatic replies that open and close
them, sent as SMS jobs of the jobs core so they are tracked, consent-checked and on the
item's timeline like any other message."""

from __future__ import annotations

import json
import logging
import secrets

from config.jobs import JobKind
from config.lines import Line
from config.settings import Settings
from config.templates import UnknownField, render
from gateway.enqueue import enqueue
from gateway.store import Store
from gateway.store.items import Item
from sms.conversation import Reply, opening_reply
from sms.segments import count_segments
from webhooks.events import Event

log = logging.getLogger(__name__)


class Conversations:
    def __init__(self, store: Store, settings: Settings) -> None:
        self._store = store
        self._idle = settings.conversation_idle_seconds

    async def on_message(self, event: Event, items: list[Item]) -> None:
        """A customer's message: it opens a conversation, or continues the open one; the
        message that opens one gets the line's welcome or after-hours reply."""
        line = await self._store.lines.get(event.line)
        if line is None or event.withheld:
            return
        if not await self._store.conversations.touch(event.customer, event.line, event.identity, self._idle):
            return
        reply = opening_reply(line.replies, line.hours, event.at)
        if reply is not None and items:
            await self._reply(items[0], event.line, line, event.customer, reply, f"reply:{event.identity}")

    async def close(self, customer: str) -> tuple[str, str | None] | None:
        """An agent marks the conversation done: (its line, the closing reply's job id or
        None), or None when the customer has no open conversation."""
        number = await self._store.conversations.close(customer)
        if number is None:
            return None
        line = await self._store.lines.get(number)
        items = await self._store.items.by_phone(customer)
        if line is None or line.replies is None or not line.replies.closing or not items:
            return number, None
        closing = (Reply.CLOSING, line.replies.closing)
        return number, await self._reply(items[0], number, line, customer, closing, f"closing:{secrets.token_hex(8)}")

    async def _reply(
        self, item: Item, number: str, line: Line, customer: str, reply: tuple[Reply, str], key: str
    ) -> str | None:
        """Queue ``reply`` to ``customer`` from the line (once per ``key``); its job id."""
        if not line.sms:
            return None
        kind, template = reply
        try:
            text = render(template, item.card.fields)
        except UnknownField as exc:
            # The line's reply is the admin's text, checked by no request: tell the operator why
            # the customer got nothing rather than send the braces.
            log.warning("reply=%s customer=%s line=%s not sent: %s", kind.value, customer, number, exc)
            return None
        segments = count_segments(text)
        fields = {
            "line": number,
            "provider": line.provider,
            "to": customer,
            "text": text,
            "segments": str(segments.segments),
            "encoding": segments.encoding.value,
            # An answer to the customer's own message: never held for quiet hours.
            "reply": kind.value,
        }
        request = json.dumps({"item_id": item.id, "text": text, "line": number, "reply": kind.value})
        created = await enqueue(
            self._store, JobKind.SMS, item.id, fields, request_json=request, idempotency_key=key, body_hash=key
        )
        log.info("reply=%s customer=%s line=%s job=%s", kind.value, customer, number, created.job_id)
        return created.job_id
