"""A trigger's stage moves, applied once per (event, trigger, item)."""

from __future__ import annotations

import logging

from config.triggers import Trigger, may_move
from gateway.store import Store
from gateway.store.items import Item, Move
from webhooks.events import Event

log = logging.getLogger(__name__)


class Moves:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def fire(self, trigger: Trigger, event: Event, items: list[Item]) -> None:
        """Move ``items`` as ``trigger`` says; ``items`` is updated in place, so the next
        trigger of this event sees the stage this one left each item in."""
        pipeline = await self._store.pipelines.get(trigger.pipeline)
        if pipeline is None:
            return
        for index, item in enumerate(items):
            # Checked first on the card as last seen, to skip the transaction when it cannot
            # move (the usual case for repeat events); the transaction checks again.
            if item.card.pipeline != trigger.pipeline or not may_move(
                pipeline.stages, item.stage, trigger.target_stage, trigger.allow_back
            ):
                continue
            move = Move(
                item_id=item.id,
                stages=pipeline.stages,
                target=trigger.target_stage,
                allow_back=trigger.allow_back,
                trigger_id=trigger.id,
                act_as=trigger.act_as,
                identity=event.identity,
                cause=event.kind.value,
            )
            outcome = await self._store.items.move(move)
            if outcome is None:
                continue
            items[index], moved = outcome
            if moved:
                log.info(
                    "moved item=%s from=%s to=%s trigger=%s", item.id, item.stage, trigger.target_stage, trigger.id
                )
