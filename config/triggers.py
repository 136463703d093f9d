"""Triggers: which events move which items to which stage. Pure rules, unit-tested directly."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Annotated

from pydantic import Field, model_validator

from config.lines import Label, Name, Strict
from config.phones import E164
from config.vocabulary import TriggerEvent

Keyword = Annotated[str, Field(min_length=1, max_length=100)]


class TriggerSpec(Strict):
    """The body of ``POST /v1/triggers``."""

    name: Label
    event: TriggerEvent
    line: E164 | None = None
    keywords: Annotated[list[Keyword], Field(max_length=50)] = Field(default_factory=list)
    seconds: Annotated[int, Field(ge=1, le=30 * 24 * 3600)] | None = None
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


class Trigger(TriggerSpec):
    id: str
    created_at: float


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
