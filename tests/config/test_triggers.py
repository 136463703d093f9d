"""The pure trigger rules: keyword matching, line filters and stage-move decisions."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from config.triggers import TriggerSpec, keywords_match, may_move, trigger_matches

STAGES = ["NEW", "CALL_BACK", "CONTACTED", "WON"]


@pytest.mark.parametrize(
    ("keywords", "text", "expected"),
    [
        ([], "anything", True),
        (["precio"], "¿Cuál es el PRECIO?", True),
        (["información"], "quiero informacion", True),
        (["informacion"], "Quiero INFORMACIÓN", True),
        (["stop"], "stopped", False),
        (["cancelar pedido"], "quiero cancelar pedido ya", True),
        (["cancelar pedido"], "cancelar el pedido", False),
        (["preço", "valor"], "qual o valor?", True),
        (["Straße"], "STRASSE bitte", True),
        (["hola"], "", False),
    ],
)
def test_keywords_are_whole_words_case_and_accent_insensitive(keywords: list[str], text: str, expected: bool) -> None:
    assert keywords_match(keywords, text) is expected


@pytest.mark.parametrize(
    ("current", "target", "allow_back", "expected"),
    [
        ("NEW", "CALL_BACK", False, True),
        ("CONTACTED", "CALL_BACK", False, False),
        ("CONTACTED", "CALL_BACK", True, True),
        ("WON", "WON", True, False),
        ("NEW", "LOST", True, False),
        ("GONE", "NEW", False, True),
    ],
)
def test_may_move(current: str, target: str, allow_back: bool, expected: bool) -> None:
    assert may_move(STAGES, current, target, allow_back) is expected


def _spec(**fields: object) -> TriggerSpec:
    return TriggerSpec.model_validate({"name": "t", "pipeline": "p", "target_stage": "WON", **fields})


def test_line_filter_and_event_kind() -> None:
    any_line = _spec(event="call.missed")
    one_line = _spec(event="call.missed", line="+34 910 000 001")
    assert one_line.line == "+34910000001"
    assert trigger_matches(any_line, "call.missed", "+34910000002")
    assert trigger_matches(one_line, "call.missed", "+34910000001")
    assert not trigger_matches(one_line, "call.missed", "+34910000002")
    assert not trigger_matches(any_line, "call.incoming", "+34910000002")


def test_sms_trigger_checks_keywords() -> None:
    trigger = _spec(event="sms.incoming", keywords=["baja"])
    assert trigger_matches(trigger, "sms.incoming", "+34910000001", "Darme de BAJA")
    assert not trigger_matches(trigger, "sms.incoming", "+34910000001", "bajamos?")


@pytest.mark.parametrize(
    "fields",
    [
        {"event": "call.missed", "keywords": ["x"]},
        {"event": "response.overdue"},
        {"event": "call.missed", "seconds": 60},
        {"event": "call.ringing"},
        {"event": "call.missed", "line": "12"},
    ],
)
def test_invalid_specs(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        _spec(**fields)
