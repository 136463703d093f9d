"""Triggers: which events move which items to which stage. Pure rules, unit-tested directly."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import ConfigDict, Field, field_validator, model_validator

from config.lines import Label, Name, Strict, publish_union
from config.phones import E164
from config.vocabulary import TriggerEvent

Keyword = Annotated[str, Field(min_length=1, max_length=100)]


OVERDUE_MAX_SECONDS = 30 * 24 * 3600


def _trigger_schema(schema: dict[str, Any]) -> None:
    """One shape per event: ``seconds`` only (and always) for response.overdue, ``keywords``
    only for sms.incoming, as ``_fits_event`` enforces."""
    variants: dict[str, dict[str, Any]] = {}
    for event in TriggerEvent:
        variant: dict[str, Any] = {}
        if event is TriggerEvent.RESPONSE_OVERDUE:
            variant["seconds"] = {"type": "integer", "minimum": 1, "maximum": OVERDUE_MAX_SECONDS}
            variant["required"] = ["seconds"]
        else:
            variant["seconds"] = {"type": "null"}
        if event is not TriggerEvent.SMS_INCOMING:
            variant["keywords"] = {"type": "array", "maxItems": 0}
        variants[event.value] = variant
    publish_union(schema, "event", variants)


class TriggerSpec(Strict):
    """The body of ``POST /v1/triggers``."""

    model_config = ConfigDict(json_schema_extra=_trigger_schema)

    name: Label
    event: TriggerEvent
    line: E164 | None = None
    keywords: Annotated[list[Keyword], Field(max_length=50)] = Field(default_factory=list)
    seconds: Annotated[int, Field(ge=1, le=OVERDUE_MAX_SECONDS)] | None = None
    pipeline: Name
    target_stage: Name
    act_as: Label | None = None
    allow_back: bool = False

    @model_validator(mode="after")
    def _fits_event(self) -> TriggerSpec:
        if self.keywords and self.event is not TriggerEvent.SMS_INCOMING:
            raise ValueError("keywords only apply to sms.incoming triggers")
        if (self.seconds is None) == (self.event is TriggerEvent.RESPONSE_OVERDUE):
            raise ValueError("seconds is required for response.overdue triggers, and only for them")
        return self


class TriggerBody(TriggerSpec):
    """The body of ``POST /v1/triggers`` and ``PUT /v1/triggers/{id}``: the spec, and where
    the trigger goes in the order triggers apply in (1 = first; default: last when created,
    where it was when edited)."""

    position: Annotated[int, Field(ge=1, le=10_000)] | None = None

    def spec(self) -> dict[str, Any]:
        return self.model_dump(exclude={"position"})


class Trigger(TriggerSpec):
    id: str
    created_at: str  # ISO-8601
    updated_at: str = ""
    # Sort key of the order triggers apply in; rewritten for all triggers when one is placed.
    rank: int = 0

    @field_validator("created_at", mode="before")
    @classmethod
    def _iso(cls, value: object) -> object:
        # Triggers stored before times were ISO-8601 kept unix seconds.
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return value

    def view(self, position: int) -> dict[str, object]:
        data = self.model_dump(mode="json", exclude={"rank"})
        return {**data, "updated_at": self.updated_at or self.created_at, "position": position}


def in_order(triggers: Iterable[Trigger]) -> list[Trigger]:
    """Triggers in the order they apply in."""
    return sorted(triggers, key=lambda t: (t.rank, t.created_at, t.id))


def placed(triggers: Sequence[Trigger], trigger: Trigger, position: int | None) -> list[Trigger]:
    """``triggers`` (in order) with ``trigger`` added or replaced: at ``position`` (1-based,
    past the end means last), else where it was, else last. Returns the triggers whose
    record must be written: all of them renumbered when the order changes."""
    others = [t for t in triggers if t.id != trigger.id]
    if position is None:
        if any(t.id == trigger.id for t in triggers):
            return [trigger]
        return [trigger.model_copy(update={"rank": max((t.rank for t in others), default=0) + 1})]
    others.insert(position - 1, trigger)
    return [t.model_copy(update={"rank": rank}) for rank, t in enumerate(others, start=1)]


def _words(text: str) -> list[str]:
    """Case- and accent-insensitive words: "¡Cancelá el PEDIDO!" -> ["cancela", "el", "pedido"]."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return re.findall(r"\w+", stripped)


def _contains(words: Sequence[str], phrase: Sequence[str]) -> bool:
    width = len(phrase)
    return width > 0 and any(list(words[i : i + width]) == list(phrase) for i in range(len(words) - width + 1))


def keywords_match(keywords: Sequence[str], text: str) -> bool:
    """True when any keyword (a word or a phrase) occurs as whole words; no keywords: any text."""
    if not keywords:
        return True
    words = _words(text)
    return any(_contains(words, _words(keyword)) for keyword in keywords)


def trigger_matches(trigger: TriggerSpec, kind: str, line: str, text: str = "") -> bool:
    if trigger.event.value != kind:
        return False
    if trigger.line is not None and trigger.line != line:
        return False
    return kind != TriggerEvent.SMS_INCOMING or keywords_match(trigger.keywords, text)


def may_move(stages: Sequence[str], current: str, target: str, allow_back: bool) -> bool:
    """Whether a trigger may move an item from ``current`` to ``target``.

    Never to the stage it is in; never to a stage the pipeline lacks; never to an earlier
    stage unless the trigger allows it. An item in a stage the pipeline no longer has may
    move anywhere in it.
    """
    if target == current or target not in stages:
        return False
    if current not in stages or allow_back:
        return True
    return stages.index(target) > stages.index(current)
