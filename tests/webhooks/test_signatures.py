import base64
import hashlib
import hmac

import pytest
from twilio.request_validator import RequestValidator

from webhooks.signatures import sign_voximplant, twilio_signing, verify_twilio, verify_voximplant

TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
FORM = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}
# providers.md section 3: the published Twilio test vector.
KNOWN_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="

JSON_BODY = '{"property": "value", "boolean": true}'
JSON_HASH = "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
JSON_URL = f"https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256={JSON_HASH}"


def sign(url: str, params: object) -> str:
    return str(RequestValidator(TOKEN).compute_signature(url, params))


def test_known_vector() -> None:
    assert sign(URL, FORM) == KNOWN_SIGNATURE
    assert verify_twilio(URL, FORM, KNOWN_SIGNATURE, TOKEN)


@pytest.mark.parametrize(
    ("url", "form", "signature", "token"),
    [
        pytest.param(URL, FORM, KNOWN_SIGNATURE[:-2] + "A=", TOKEN, id="bad-signature"),
        pytest.param(URL, FORM, None, TOKEN, id="missing-signature"),
        pytest.param(URL, FORM, "", TOKEN, id="empty-signature"),
        pytest.param(URL, FORM, KNOWN_SIGNATURE, "54321", id="wrong-token"),
        pytest.param(URL, FORM, KNOWN_SIGNATURE, "", id="empty-token"),
        pytest.param(URL, {**FORM, "Digits": "1235"}, KNOWN_SIGNATURE, TOKEN, id="tampered-field"),
        pytest.param(URL, {**FORM, "Extra": "x"}, KNOWN_SIGNATURE, TOKEN, id="added-field"),
        pytest.param("https://mycompany.com/myapp.php?foo=1&bar=3", FORM, KNOWN_SIGNATURE, TOKEN, id="query"),
        pytest.param("https://evil.example/myapp.php?foo=1&bar=2", FORM, KNOWN_SIGNATURE, TOKEN, id="host"),
        pytest.param(URL, FORM, "ünïcode", TOKEN, id="non-ascii-signature"),
    ],
)
def test_twilio_refuses(url: str, form: dict[str, str], signature: str | None, token: str) -> None:
    assert not verify_twilio(url, form, signature, token)


@pytest.mark.parametrize(
    ("signed_url", "checked_url"),
    [
        pytest.param(
            "https://gw.example.com/webhooks/twilio/voice", "https://gw.example.com:443/webhooks/twilio/voice"
        ),
        pytest.param(
            "https://gw.example.com:443/webhooks/twilio/voice", "https://gw.example.com/webhooks/twilio/voice"
        ),
        pytest.param("http://gw.example.com:80/webhooks/twilio/voice", "http://gw.example.com/webhooks/twilio/voice"),
    ],
)
def test_twilio_port_or_not(signed_url: str, checked_url: str) -> None:
    # Twilio signs inconsistently with and without the default port; the SDK accepts both.
    assert verify_twilio(checked_url, FORM, sign(signed_url, FORM), TOKEN)


def test_twilio_query_string_is_signed() -> None:
    url = "https://gw.example.com/webhooks/twilio/voice/status?job=J1"
    signature = sign(url, FORM)
    assert verify_twilio(url, FORM, signature, TOKEN)
    assert not verify_twilio("https://gw.example.com/webhooks/twilio/voice/status?job=J2", FORM, signature, TOKEN)


class MultiDict(dict[str, list[str]]):
    """Fields by name, as the SDK asks for a repeated one's values (``getall``)."""

    def getall(self, name: str) -> list[str]:
        return self[name]


def test_twilio_repeated_fields_as_pairs() -> None:
    pairs = [("To", "+18005551212"), ("MediaUrl", "https://a"), ("MediaUrl", "https://b")]
    signature = sign(URL, MultiDict({"To": ["+18005551212"], "MediaUrl": ["https://a", "https://b"]}))
    assert verify_twilio(URL, pairs, signature, TOKEN)
    assert not verify_twilio(URL, pairs[:2], signature, TOKEN)


@pytest.mark.parametrize("algorithm", ["HMAC_SHA1", "HMAC_SHA256"])
def test_twilio_own_hmac_signs_as_the_sdk(monkeypatch: pytest.MonkeyPatch, algorithm: str) -> None:
    """verify_twilio computes the HMAC of the URL as sent itself (the SDK's validate is only its
    fallback): it must give what the SDK gives, a repeated pair counted once, values sorted."""
    pairs = [("To", "+18005551212"), ("MediaUrl", "https://b"), ("MediaUrl", "https://a"), ("MediaUrl", "https://a")]
    pairs.append(("Body", "¿qué tal? 😀"))
    fields = MultiDict({"To": ["+18005551212"], "MediaUrl": ["https://b", "https://a", "https://a"]})
    fields["Body"] = ["¿qué tal? 😀"]
    signature = RequestValidator(TOKEN).compute_signature(URL, fields, algorithm)
    monkeypatch.setattr(RequestValidator, "validate", lambda *args, **kwargs: False)
    assert verify_twilio(URL, pairs, signature, TOKEN, algorithm)
    assert verify_twilio(
        URL, dict(pairs), RequestValidator(TOKEN).compute_signature(URL, dict(pairs), algorithm), TOKEN, algorithm
    )
    assert not verify_twilio(URL, pairs[:-1], signature, TOKEN, algorithm)


def test_twilio_empty_form() -> None:
    assert verify_twilio(URL, {}, sign(URL, {}), TOKEN)


def test_twilio_json_body() -> None:
    assert hashlib.sha256(JSON_BODY.encode()).hexdigest() == JSON_HASH
    signature = sign(JSON_URL, {})
    assert verify_twilio(JSON_URL, JSON_BODY, signature, TOKEN)
    assert not verify_twilio(JSON_URL, JSON_BODY.replace("true", "false"), signature, TOKEN)
    assert not verify_twilio(JSON_URL, JSON_BODY, None, TOKEN)


def test_twilio_json_body_needs_body_hash_in_url() -> None:
    assert not verify_twilio(URL, JSON_BODY, sign(URL, {}), TOKEN)


def test_twilio_percent_encoding_is_signed_as_sent() -> None:
    """Twilio signs the URL it requested; a normalised form ("~" for "%7E") is another URL."""
    sent = "https://gw.example.com/webhooks/twilio/sms?name=Ana%7ELopez&path=a%2fb"
    signature = sign(sent, FORM)
    assert verify_twilio(sent, FORM, signature, TOKEN)
    assert not verify_twilio(
        "https://gw.example.com/webhooks/twilio/sms?name=Ana~Lopez&path=a/b", FORM, signature, TOKEN
    )
    assert not verify_twilio(
        "https://gw.example.com/webhooks/twilio/sms?name=Ana%7ELopez&path=a%2Fb", FORM, signature, TOKEN
    )


SHARED_KEY = "shared-key-secret-0123456789"
SETTINGS_HEADER = "key=webhooks_sharedkey_0123456789abcdef,algorithm=HMAC_SHA256"


def test_twilio_hmac_sha256_shared_key() -> None:
    # Computed by hand, not by the SDK: base64(HMAC-SHA256(secret, url + sorted name+value)).
    message = URL + "".join(name + FORM[name] for name in sorted(FORM))
    expected = base64.b64encode(hmac.new(SHARED_KEY.encode(), message.encode(), hashlib.sha256).digest()).decode()
    assert RequestValidator(SHARED_KEY).compute_signature(URL, FORM, "HMAC_SHA256") == expected
    assert verify_twilio(URL, FORM, expected, SHARED_KEY, "HMAC_SHA256")
    assert not verify_twilio(URL, FORM, expected, SHARED_KEY)  # the same secret under SHA-1
    assert not verify_twilio(URL, FORM, expected, TOKEN, "HMAC_SHA256")
    assert not verify_twilio(URL, {**FORM, "Digits": "9"}, expected, SHARED_KEY, "HMAC_SHA256")
    assert not verify_twilio(URL, FORM, expected, SHARED_KEY, "HMAC_SHA512")  # unknown: refused


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, (TOKEN, "HMAC_SHA1")),
        (SETTINGS_HEADER, (SHARED_KEY, "HMAC_SHA256")),
        ("key=webhooks_sharedkey_1,algorithm=HMAC_SHA1", (SHARED_KEY, "HMAC_SHA1")),
        ("key=webhooks_sharedkey_1", (SHARED_KEY, "HMAC_SHA1")),
    ],
)
def test_twilio_signing_picks_secret_and_algorithm(header: str | None, expected: tuple[str, str]) -> None:
    assert twilio_signing({"auth_token": TOKEN, "shared_key": SHARED_KEY}, header) == expected


def test_twilio_signing_without_a_shared_key_fails_closed() -> None:
    secret, algorithm = twilio_signing({"auth_token": TOKEN}, SETTINGS_HEADER)
    assert secret == ""
    # Never the auth token: a SharedKey-signed request must not verify against another secret.
    assert not verify_twilio(URL, FORM, sign(URL, FORM), secret, algorithm)


SECRET = "vox-secret"
BODY = b'{"event":"call.incoming","call_id":"c1"}'
NOW = 1_700_000_000.0


def vox_headers(timestamp: int = int(NOW), body: bytes = BODY, secret: str = SECRET) -> tuple[str, str]:
    return str(timestamp), sign_voximplant(secret, timestamp, body)


def test_voximplant_signature_format() -> None:
    signature = sign_voximplant(SECRET, 1_700_000_000, BODY)
    assert len(signature) == 64
    assert signature == signature.lower()


def test_voximplant_good() -> None:
    timestamp, signature = vox_headers()
    assert verify_voximplant(SECRET, timestamp, signature, BODY, now=NOW)


def test_voximplant_within_tolerance() -> None:
    timestamp, signature = vox_headers(int(NOW) - 300)
    assert verify_voximplant(SECRET, timestamp, signature, BODY, now=NOW)


@pytest.mark.parametrize(
    ("timestamp", "signature", "body", "secret"),
    [
        pytest.param(*vox_headers(), BODY + b" ", SECRET, id="tampered-body"),
        pytest.param(*vox_headers(), BODY, "other-secret", id="wrong-secret"),
        pytest.param(*vox_headers(), BODY, "", id="empty-secret"),
        pytest.param(*vox_headers(secret=""), BODY, "", id="empty-secret-both-sides"),
        pytest.param(*vox_headers(int(NOW) - 301), BODY, SECRET, id="stale"),
        pytest.param(*vox_headers(int(NOW) + 301), BODY, SECRET, id="future"),
        pytest.param(None, vox_headers()[1], BODY, SECRET, id="missing-timestamp"),
        pytest.param(vox_headers()[0], None, BODY, SECRET, id="missing-signature"),
        pytest.param("", vox_headers()[1], BODY, SECRET, id="empty-timestamp"),
        pytest.param("1700000000.5", vox_headers()[1], BODY, SECRET, id="fractional-timestamp"),
        pytest.param("abc", vox_headers()[1], BODY, SECRET, id="non-integer-timestamp"),
        pytest.param("-1700000000", vox_headers()[1], BODY, SECRET, id="negative-timestamp"),
        pytest.param(" 1700000000", vox_headers()[1], BODY, SECRET, id="padded-timestamp"),
        pytest.param("01700000000", vox_headers()[1], BODY, SECRET, id="leading-zero-timestamp"),
        pytest.param("9" * 5000, vox_headers()[1], BODY, SECRET, id="huge-timestamp"),
        pytest.param("\uff11\uff17" + "\uff10" * 8, vox_headers()[1], BODY, SECRET, id="unicode-digits"),
        pytest.param(vox_headers()[0], vox_headers()[1].upper(), BODY, SECRET, id="uppercase-hex"),
        pytest.param(vox_headers()[0], "é" * 64, BODY, SECRET, id="non-ascii-signature"),
        pytest.param(vox_headers()[0], "", BODY, SECRET, id="empty-signature"),
    ],
)
def test_voximplant_refuses(timestamp: str | None, signature: str | None, body: bytes, secret: str) -> None:
    assert not verify_voximplant(secret, timestamp, signature, body, now=NOW)


def test_voximplant_custom_tolerance() -> None:
    timestamp, signature = vox_headers(int(NOW) - 60)
    assert not verify_voximplant(SECRET, timestamp, signature, BODY, now=NOW, tolerance=30)
