"""Providers, lines (our phone numbers) and pipelines: what an admin configures."""

from __future__ import annotations

import re
from datetime import time
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from config.phones import E164

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
Label = Annotated[str, Field(max_length=200)]
ReplyText = Annotated[str, Field(min_length=1, max_length=200)]


# Pydantic prefixes a validator's own message with the kind of exception it raised.
_PYDANTIC_PREFIX = re.compile(r"^(Value error|Assertion failed), ")


def plain_message(message: str) -> str:
    """A validation message as a person should read it: without pydantic's prefix."""
    return _PYDANTIC_PREFIX.sub("", message)


def _web_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return url


_PORT = "(|[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# A link callgate fetches or posts to (media, CRM endpoints); whether its host may be
# reached is the gateway's SSRF guard's call. The pattern publishes what ``_web_url``
# checks (a narrower shape: no IPv6 literals).
WebUrl = Annotated[
    str,
    Field(min_length=1, max_length=2000, pattern=rf"^https?://[A-Za-z0-9._~-]+(:{_PORT})?([/?#].*)?$"),
    AfterValidator(_web_url),
]


class Strict(BaseModel):
    """Unknown fields are refused: a typo in a config must not pass silently.

    NaN and infinities are refused too: stored, they would be echoed back as invalid JSON.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# Text-to-speech engines a robocall can ask for: the local ones render an MP3; "provider"
# has the provider speak the text.
TtsEngine = Literal["piper", "espeak-ng", "gtts", "provider"]


class ProviderKind(StrEnum):
    TWILIO = "twilio"
    VOXIMPLANT = "voximplant"
    SANDBOX = "sandbox"


# What each kind cannot work without; other credential keys are kept as given.
REQUIRED_CREDENTIALS: dict[ProviderKind, tuple[str, ...]] = {
    ProviderKind.TWILIO: ("account_sid", "auth_token"),
    ProviderKind.VOXIMPLANT: ("webhook_secret",),
    ProviderKind.SANDBOX: (),
}


# Credentials a kind may have besides the required ones, with what each is for.
OPTIONAL_CREDENTIALS: dict[ProviderKind, dict[str, str]] = {
    ProviderKind.TWILIO: {
        "api_base": "another Twilio-compatible API's base URL (SignalWire, Somleng)",
        "shared_key": "the secret of a SharedKey that signs webhooks (X-Twilio-Webhooks-Signature-Settings)",
    },
    ProviderKind.VOXIMPLANT: {
        "service_account": "the service account's JSON key file, as text (robocalls, SMS)",
        "rule_id": "the routing rule that runs callgate.js and robocall.js (robocalls)",
        "endpoint": "the management API's host[:port] (default api.voximplant.com)",
        "callback_salt": "the Security salt of the account's webhook (inbound SMS callbacks)",
        "api_key": "the account's API key, which the callbacks' hash covers (inbound SMS callbacks)",
    },
    ProviderKind.SANDBOX: {},
}

_TWILIO_ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
_HOST_PORT = re.compile(r"[A-Za-z0-9.-]+(:[0-9]{1,5})?")


def _voximplant_problem(credentials: dict[str, str]) -> str | None:
    """What is wrong with a Voximplant provider's optional credentials (None: nothing). The
    service account's key file is checked when it is first used (its shape is more than a
    schema can publish)."""
    if "rule_id" in credentials and not credentials["rule_id"].isdigit():
        return "credentials.rule_id: a routing rule's numeric id"
    if "endpoint" in credentials and not _HOST_PORT.fullmatch(credentials["endpoint"]):
        return "credentials.endpoint: a host, optionally with :port (api.voximplant.com)"
    return None


def publish_union(schema: dict[str, Any], key: str, variants: dict[str, dict[str, Any]]) -> None:
    """Rewrite a model's JSON schema, in place, as a union discriminated by ``key``: one
    branch per value of ``key``, each with the properties ``variants`` overrides (a
    ``"required"`` entry there lists what that branch requires besides ``key``). Validators
    that depend on ``key`` are then published, not only enforced."""
    base = {name: value for name, value in schema.items() if name not in {"properties", "required"}}
    branches = []
    for value, overrides in variants.items():
        overrides = dict(overrides)
        required = [key, *schema.get("required", []), *overrides.pop("required", [])]
        branches.append(
            {
                **base,
                "title": f"{schema.get('title', '')} ({value})",
                "properties": {**schema["properties"], **overrides, key: {"const": value}},
                "required": list(dict.fromkeys(required)),
            }
        )
    schema.clear()
    schema.update({"oneOf": branches, "discriminator": {"propertyName": key}})


def _provider_schema(schema: dict[str, Any]) -> None:
    """One shape per kind, each requiring the credentials that kind needs."""
    variants = {}
    for kind, required in REQUIRED_CREDENTIALS.items():
        keys: dict[str, Any] = {key: {"type": "string", "minLength": 1, "maxLength": 8192} for key in required}
        for key, description in OPTIONAL_CREDENTIALS[kind].items():
            keys[key] = {"type": "string", "maxLength": 8192, "description": description}
        if kind is ProviderKind.VOXIMPLANT:
            keys["rule_id"]["pattern"] = "^[0-9]+$"
            keys["endpoint"]["pattern"] = f"^{_HOST_PORT.pattern}$"
        if kind is ProviderKind.TWILIO:
            keys["account_sid"]["pattern"] = f"^{_TWILIO_ACCOUNT_SID.pattern}$"
        credentials = {**schema["properties"]["credentials"], "properties": keys, "required": list(required)}
        variants[kind.value] = {"credentials": credentials, "required": ["credentials"] if required else []}
    publish_union(schema, "kind", variants)


Price = Annotated[float, Field(ge=0, le=1000)]


class Prices(Strict):
    """A provider's prices, in ``currency``: per started minute of each call, per
    character its own TTS speaks (the ``provider`` engine) and per SMS segment."""

    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"
    per_minute: Price = 0.0
    per_tts_char: Price = 0.0
    per_sms_segment: Price = 0.0


class Provider(Strict):
    model_config = ConfigDict(json_schema_extra=_provider_schema)

    kind: ProviderKind
    # validate_default: a twilio provider sent without any credentials is refused too.
    credentials: dict[str, Annotated[str, Field(max_length=8192)]] = Field(default_factory=dict, validate_default=True)
    calls_per_second: Annotated[float, Field(gt=0, le=1000)] = 1.0
    sms_per_second: Annotated[float, Field(gt=0, le=1000)] = 1.0
    # What its calls, TTS and SMS cost (config.usage); None: jobs show no cost.
    prices: Prices | None = None

    @field_validator("credentials")
    @classmethod
    def _required_credentials(cls, credentials: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        kind = info.data.get("kind")
        for key in REQUIRED_CREDENTIALS.get(kind, ()) if kind else ():
            if not credentials.get(key):
                raise ValueError(f"credentials.{key} is required for a {kind} provider")
        if kind is ProviderKind.TWILIO and not _TWILIO_ACCOUNT_SID.fullmatch(credentials["account_sid"]):
            raise ValueError("credentials.account_sid: a Twilio Account SID is AC followed by 32 hex digits")
        problem = _voximplant_problem(credentials) if kind is ProviderKind.VOXIMPLANT else None
        if problem is not None:
            raise ValueError(problem)
        return credentials

    def public_view(self) -> dict[str, object]:
        """The record without secret values: admins see which keys are set, never what."""
        data = self.model_dump(mode="json")
        data["credentials"] = {key: "***" for key in self.credentials}
        return data


class Pipeline(Strict):
    stages: Annotated[list[Name], Field(min_length=1, max_length=100, json_schema_extra={"uniqueItems": True})]

    @field_validator("stages")
    @classmethod
    def _unique(cls, stages: list[str]) -> list[str]:
        if len(set(stages)) != len(stages):
            raise ValueError("stages must be unique")
        return stages


class StageRef(Strict):
    pipeline: Name
    stage: Name


_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _span(value: list[str]) -> list[str]:
    if len(value) != 2 or not all(_HHMM.match(v) for v in value):
        raise ValueError('a day is ["HH:MM", "HH:MM"]')
    if time.fromisoformat(value[0]) >= time.fromisoformat(value[1]):
        raise ValueError("a day's opening time must be before its closing time")
    return value


Span = Annotated[list[Annotated[str, Field(pattern=_HHMM.pattern)]], Field(min_length=2, max_length=2)]


def _zones_schema(schema: dict[str, Any]) -> None:
    schema["enum"] = sorted(available_timezones())


class Hours(Strict):
    """Working hours in the line's time zone; a day left out is closed. A day is
    ["HH:MM", "HH:MM"], the opening time before the closing time."""

    tz: Annotated[str, Field(json_schema_extra=_zones_schema)]
    mon: Span | None = None
    tue: Span | None = None
    wed: Span | None = None
    thu: Span | None = None
    fri: Span | None = None
    sat: Span | None = None
    sun: Span | None = None

    @field_validator("tz")
    @classmethod
    def _zone(cls, tz: str) -> str:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{tz!r} is not an IANA time zone (e.g. Europe/Madrid)") from None
        return tz

    @field_validator(*DAYS)
    @classmethod
    def _day(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _span(value)


class Replies(Strict):
    welcome: ReplyText | None = None
    after_hours: ReplyText | None = None
    closing: ReplyText | None = None


class Caps(Strict):
    """At most this many jobs of each kind to one customer per day (the line's time zone,
    else UTC), counted across every line and rule; None: no cap."""

    sms: Annotated[int, Field(ge=0, le=1000)] | None = None
    robocall: Annotated[int, Field(ge=0, le=1000)] | None = None


class Line(Strict):
    provider: Name
    label: Label = ""
    voice: bool = True
    sms: bool = True
    forward_to: Annotated[list[E164], Field(max_length=20)] = Field(default_factory=list)
    lead: StageRef | None = None
    hours: Hours | None = None
    replies: Replies | None = None
    caps: Caps | None = None
    # The engine a robocall's say uses when the request names none (voice.robocall.Say.engine).
    tts_engine: TtsEngine | None = None
    # SMS sent from this number a second, on top of its provider's sms_per_second (a
    # carrier's per-number throughput); None: the provider's rate alone.
    sms_per_second: Annotated[float, Field(gt=0, le=1000)] | None = None
