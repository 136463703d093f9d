"""Opt-out and opt-in keywords of inbound SMS: Twilio's defaults plus Spanish, Portuguese and
German equivalents, replaceable by configuration.

As on Twilio, only a message that is the keyword alone counts ("STOP" opts out, "stop
sending me offers" does not): a customer's sentence must not silently end their consent.
Case, accents and surrounding punctuation are ignored ("Stop.", "kündigen", "¡Baja!").
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from enum import StrEnum

# providers.md section 2 (Twilio's list for long codes and toll-free, OPTOUT and REVOKE from
# its newer docs), then es, pt and de.
STOP_WORDS = (
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "OPTOUT",
    "REVOKE",
    "BAJA",
    "PARAR",
    "DETENER",
    "CANCELAR",
    "SAIR",
    "DESCADASTRAR",
    "STOPP",
    "ABMELDEN",
    "BEENDEN",
    "KUNDIGEN",
)
# Twilio's, then es, pt and de. Bare "yes" words (SI, SIM, JA) are left out: a customer
# answering a question with them would be opted back in unawares.
START_WORDS = ("START", "YES", "UNSTOP", "ALTA", "INICIAR", "COMENZAR", "ANMELDEN")


class Consent(StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"


def fold(word: str) -> str:
    """Upper case without accents or surrounding punctuation: how keywords are compared."""
    decomposed = unicodedata.normalize("NFKD", word.strip())
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    return bare.strip(".,;:!?¡¿'\"()[]-* ").upper()


def keyword(body: str, stop: Iterable[str] = STOP_WORDS, start: Iterable[str] = START_WORDS) -> Consent | None:
    """What an inbound message's ``body`` says about consent, or None (not a keyword alone)."""
    word = fold(body)
    if not word or " " in word:
        return None
    if word in {fold(w) for w in stop}:
        return Consent.OPT_OUT
    if word in {fold(w) for w in start}:
        return Consent.OPT_IN
    return None
