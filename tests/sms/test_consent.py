"""Consent keywords: a single word, any case, accents and punctuation ignored."""

from __future__ import annotations

import pytest

from sms.consent import Consent, keyword


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("STOP", Consent.OPT_OUT),
        (" stop ", Consent.OPT_OUT),
        ("Stop.", Consent.OPT_OUT),
        ("unsubscribe", Consent.OPT_OUT),
        ("¡Baja!", Consent.OPT_OUT),
        ("parar", Consent.OPT_OUT),
        ("Sair", Consent.OPT_OUT),
        ("kündigen", Consent.OPT_OUT),
        ("STOPP", Consent.OPT_OUT),
        ("START", Consent.OPT_IN),
        ("unstop", Consent.OPT_IN),
        ("Alta", Consent.OPT_IN),
        ("anmelden", Consent.OPT_IN),
        ("stop sending offers", None),
        ("hola", None),
        ("", None),
        ("sí", None),
    ],
)
def test_default_keywords(body: str, expected: Consent | None) -> None:
    assert keyword(body) is expected


def test_configured_words_replace_the_defaults() -> None:
    assert keyword("basta", stop=["BASTA"], start=["VOLVER"]) is Consent.OPT_OUT
    assert keyword("volver", stop=["BASTA"], start=["VOLVER"]) is Consent.OPT_IN
    assert keyword("STOP", stop=["BASTA"], start=["VOLVER"]) is None
