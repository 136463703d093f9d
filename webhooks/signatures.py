"""Webhook authentication: Twilio's X-Twilio-Signature, callgate's own Voximplant HMAC, and
the MD5 hash of Voximplant's account callbacks.

Both return a plain bool and never raise on hostile input: the gateway answers 403 on False.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qs, urlparse, urlsplit

from twilio.request_validator import (
    HMAC_SHA1,
    HMAC_SHA256,
    SIGNATURE_SETTINGS_HEADER,
    RequestValidator,
    get_signature_algorithm,
    remove_port,
)

TWILIO_SIGNATURE_SETTINGS_HEADER = SIGNATURE_SETTINGS_HEADER
VOXIMPLANT_TIMESTAMP_HEADER = "X-Callgate-Timestamp"
VOXIMPLANT_SIGNATURE_HEADER = "X-Callgate-Signature"

# Unix seconds without sign, spaces or leading zeros: the exact text the scenario signed.
_UNIX_SECONDS = re.compile(r"[1-9][0-9]{0,11}")

# The hashes of the algorithms Twilio signs with (the SDK's validate refuses any other).
_DIGESTS = {HMAC_SHA1: "sha1", HMAC_SHA256: "sha256"}


class _FormFields(dict[str, list[str]]):
    """Form fields grouped by name.

    The SDK signs a repeated field by asking for all its values through ``getall`` (the
    MultiDict protocol); a plain dict would keep only one of them and the check would fail.
    """

    def getall(self, name: str) -> list[str]:
        return self[name]


def _group(pairs: Iterable[tuple[str, str]]) -> _FormFields:
    fields = _FormFields()
    for name, value in pairs:
        fields.setdefault(name, []).append(value)
    return fields


# Twilio posts to a few URLs (a handful of webhooks, a status callback per job and dial):
# each is parsed once, not on every request.
@functools.lru_cache(maxsize=1024)
def _without_port(url: str) -> str:
    return str(remove_port(urlparse(url)))


# What Twilio signs (the SDK's compute_signature, in one C call instead of a Python loop over
# each field's values): the URL, then each distinct field name and value pair, sorted.
def _twilio_signature(secret: str, url: str, pairs: list[tuple[str, str]], digest: str) -> str:
    payload = url + "".join(name + value for name, value in sorted(set(pairs)))
    return base64.b64encode(hmac.digest(secret.encode(), payload.encode(), digest)).decode()


def twilio_signing(credentials: Mapping[str, str], settings_header: str | None) -> tuple[str, str]:
    """The secret and algorithm a Twilio webhook was signed with.

    A request carrying ``X-Twilio-Webhooks-Signature-Settings`` (``key=<SharedKey id>,
    algorithm=HMAC_SHA256``) was signed with a SharedKey of the Webhooks configuration API:
    its secret is the provider's ``shared_key`` credential, never the auth token. Without the
    header it is the classic HMAC-SHA1 with the account's auth token. A missing secret is
    returned as "" and fails verification.
    """
    if settings_header is None:
        return credentials.get("auth_token", ""), HMAC_SHA1
    return credentials.get("shared_key", ""), str(get_signature_algorithm(settings_header))


def verify_twilio(
    url: str,
    params: Mapping[str, str] | list[tuple[str, str]] | str,
    signature: str | None,
    secret: str,
    algorithm: str = HMAC_SHA1,
) -> bool:
    """Check ``X-Twilio-Signature`` for a request Twilio made to ``url``.

    ``url`` is the full public URL exactly as Twilio requested it (public base + the raw path
    and query, percent-encoding untouched). ``params`` are the form fields (a MultiDict's
    ``items()`` keeps repeated keys), or the raw body for a JSON webhook, whose URL then
    carries ``bodySHA256``. ``secret`` is the auth token or a SharedKey secret, ``algorithm``
    ``HMAC_SHA1`` or ``HMAC_SHA256`` (see ``twilio_signing``); the SDK refuses any other.
    """
    # An empty secret would make the HMAC key public knowledge.
    if not signature or not secret:
        return False
    validator = RequestValidator(secret)
    if isinstance(params, str):
        # Without bodySHA256 in the signed URL nothing ties a JSON body to the signature.
        if "bodySHA256" not in parse_qs(urlsplit(url).query):
            return False
        return bool(validator.validate(url, params, signature, algorithm))
    pairs = params if isinstance(params, list) else list(params.items())
    # The SDK's validate computes the HMAC of the URL both without and with its port, every
    # time. Twilio signs the URL as configured, nearly always without a port: check that one
    # first, and leave the second HMAC (and the algorithm check) to the SDK when it fails.
    digest = _DIGESTS.get(algorithm.upper())
    if digest is not None:
        computed = _twilio_signature(secret, _without_port(url), pairs, digest)
        # A signature that is not ASCII is no base64: never equal (compare_digest wants ASCII).
        if signature.isascii() and hmac.compare_digest(computed, signature):
            return True
    return bool(validator.validate(url, _group(pairs), signature, algorithm))


def sign_voximplant(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<body>"``, as the shipped VoxEngine scenario sends it."""
    message = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def robocall_secret(secret: str, job_id: str, dial: int) -> str:
    """The secret one robocall dial's scenario signs its posts with: derived from the
    provider's ``webhook_secret``, so nothing is stored, and it travels in the session's custom
    data (kept in Voximplant's call history) without exposing the provider's own secret."""
    message = f"robocall:{job_id}:{dial}".encode()
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()[:32]


def verify_voximplant(
    secret: str,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
    tolerance: float = 300,
) -> bool:
    """Check the ``X-Callgate-Timestamp`` / ``X-Callgate-Signature`` pair of a scenario POST.

    The timestamp is signed with the body, so refusing old ones bounds how long a captured
    request can be replayed (dedup covers the rest).
    """
    if not secret or not timestamp or not signature or not signature.isascii():
        return False
    if not _UNIX_SECONDS.fullmatch(timestamp):
        return False
    sent_at = int(timestamp)
    if abs(now - sent_at) > tolerance:
        return False
    return hmac.compare_digest(sign_voximplant(secret, sent_at, body), signature)


def voximplant_callback_hash(salt: str, account_id: int, api_key: str, callback_id: int) -> str:
    """The ``hash`` of one Voximplant account callback: hex MD5 of the callback salt, the
    account id, the account's API key and the callback id, concatenated (the AccountCallback
    type of voximplant/apiclient-java: "hash = md5(account_salt + account_id + api_key +
    callback_id)")."""
    text = f"{salt}{account_id}{api_key}{callback_id}"
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def verify_voximplant_callback(salt: str, api_key: str, account_id: int, callback_id: int, given: str) -> bool:
    """Check one account callback's ``hash``; an unset salt or API key never verifies."""
    if not salt or not api_key or not given.isascii():
        return False
    return hmac.compare_digest(voximplant_callback_hash(salt, account_id, api_key, callback_id), given.lower())
