"""Stage rules: the robocalls and SMS a stage sends each time an item enters it
(``PUT /v1/stage-rules/{pipeline}/{stage}``).

A rule is a robocall or SMS request body without ``item_id`` (the item that entered is the
one it is for). ``kind`` may say which; without it, a rule with ``text`` is an SMS and one
with ``say`` or ``play`` a robocall.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, RootModel, Tag

from sms.request import SmsMessage, SmsRequest
from voice.robocall import Robocall, RobocallRequest

MAX_RULES = 20


def rules_name(pipeline: str, stage: str) -> str:
    """Where a stage's rules are stored (names hold no ``/``)."""
    return f"{pipeline}/{stage}"


class SmsRule(SmsMessage):
    kind: Literal["sms"] = "sms"

    def request(self, item_id: str) -> SmsRequest:
        return SmsRequest.model_validate({**self.model_dump(exclude={"kind"}), "item_id": item_id})


class RobocallRule(Robocall):
    kind: Literal["robocall"] = "robocall"

    def request(self, item_id: str) -> RobocallRequest:
        return RobocallRequest.model_validate({**self.model_dump(exclude={"kind"}), "item_id": item_id})


def _kind_of(rule: Any) -> str | None:
    if not isinstance(rule, dict):
        return getattr(rule, "kind", None)
    if "kind" in rule:
        return rule["kind"] if isinstance(rule["kind"], str) else None
    if "text" in rule:
        return "sms"
    return "robocall" if "say" in rule or "play" in rule else None


Rule = Annotated[
    Annotated[SmsRule, Tag("sms")] | Annotated[RobocallRule, Tag("robocall")],
    Discriminator(
        _kind_of,
        custom_error_type="rule_kind",
        custom_error_message="a rule is an SMS (kind sms, with text) or a robocall (kind robocall, with say or play)",
    ),
]


class StageRules(RootModel[Annotated[list[Rule], Field(max_length=MAX_RULES)]]):
    """The body of ``PUT /v1/stage-rules/{pipeline}/{stage}`` and how the rules are stored."""
