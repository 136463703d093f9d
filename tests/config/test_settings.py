"""Settings: defaults, the environment over a TOML file, and one clear line per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import Settings, SettingsError, load_settings

TOKEN_A = "a-long-admin-token-0123456789"
TOKEN_B = "a-long-api-token-abcdefghijkl"


def write(tmp_path: Path, text: str, name: str = "callgate.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_match_the_contract() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert settings.redis_url is None
    assert settings.data_dir == Path("callgate-data")
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.base_url == "http://127.0.0.1:8080"
    assert settings.admin_token is None and settings.api_token is None
    assert settings.media_allow_private is False
    assert settings.max_body_bytes > 0 and settings.timeline_max > 0
    assert settings.key_prefix == "callgate:"  # no hash tag: each key carries its partition's


def test_environment_values_are_parsed() -> None:
    settings = load_settings(
        {
            "CALLGATE_REDIS_URL": "redis://redis.internal:6380/2",
            "CALLGATE_DATA_DIR": "/var/lib/callgate",
            "CALLGATE_HOST": "0.0.0.0",
            "CALLGATE_PORT": "9000",
            "CALLGATE_PUBLIC_URL": "https://gw.example.com/",
            "CALLGATE_ADMIN_TOKEN": TOKEN_A,
            "CALLGATE_API_TOKEN": TOKEN_B,
            "CALLGATE_MEDIA_ALLOW_PRIVATE": "yes",
            "CALLGATE_MAX_BODY_BYTES": "2048",
            "CALLGATE_TIMELINE_MAX": "50",
            "CALLGATE_LOG_LEVEL": "debug",
            "CALLGATE_PARTITIONS": "64",
            "UNRELATED": "ignored",
        }
    )
    assert settings.redis_url == "redis://redis.internal:6380/2"
    assert settings.data_dir == Path("/var/lib/callgate")
    assert (settings.host, settings.port) == ("0.0.0.0", 9000)
    assert settings.public_url == "https://gw.example.com"  # trailing slash dropped
    assert settings.base_url == "https://gw.example.com"
    assert (settings.admin_token, settings.api_token) == (TOKEN_A, TOKEN_B)
    assert settings.media_allow_private is True
    assert settings.max_body_bytes == 2048
    assert settings.timeline_max == 50
    assert settings.log_level == "DEBUG"
    assert settings.partitions == 64


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("true", True), ("ON", True), ("0", False), ("False", False), ("no", False), ("", False)],
)
def test_booleans(raw: str, expected: bool) -> None:
    assert load_settings({"CALLGATE_MEDIA_ALLOW_PRIVATE": raw}).media_allow_private is expected


def test_empty_optional_values_mean_unset() -> None:
    settings = load_settings({"CALLGATE_REDIS_URL": "", "CALLGATE_ADMIN_TOKEN": "", "CALLGATE_PUBLIC_URL": ""})
    assert settings.redis_url is None
    assert settings.admin_token is None
    assert settings.base_url == "http://127.0.0.1:8080"


def test_file_values_and_the_environment_wins(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'port = 9100\nhost = "10.0.0.5"\nmedia_allow_private = true\nredis_url = "redis://file-host:6379/0"\n',
    )
    from_file = load_settings({}, file=path)
    assert (from_file.host, from_file.port) == ("10.0.0.5", 9100)
    assert from_file.media_allow_private is True
    assert from_file.redis_url == "redis://file-host:6379/0"

    both = load_settings({"CALLGATE_PORT": "9200", "CALLGATE_MEDIA_ALLOW_PRIVATE": "false"}, file=path)
    assert both.port == 9200
    assert both.media_allow_private is False
    assert both.host == "10.0.0.5"  # not in the environment: the file's value stays


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 9300\n")
    assert load_settings({"CALLGATE_CONFIG": str(path)}).port == 9300
    assert load_settings({"CALLGATE_CONFIG": str(path), "CALLGATE_PORT": "9301"}).port == 9301


def test_an_explicit_file_wins_over_callgate_config(tmp_path: Path) -> None:
    named = write(tmp_path, "port = 9400\n", "named.toml")
    other = write(tmp_path, "port = 9500\n", "other.toml")
    assert load_settings({"CALLGATE_CONFIG": str(other)}, file=named).port == 9400


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CALLGATE_PORT", "abc"),
        ("CALLGATE_PORT", "70000"),
        ("CALLGATE_PORT", "-1"),
        ("CALLGATE_PORT", ""),
        ("CALLGATE_MEDIA_ALLOW_PRIVATE", "maybe"),
        ("CALLGATE_REDIS_URL", "http://x"),
        ("CALLGATE_REDIS_URL", "localhost:6379"),
        ("CALLGATE_PUBLIC_URL", "gw.example.com"),
        ("CALLGATE_PUBLIC_URL", "ftp://gw.example.com"),
        ("CALLGATE_MAX_BODY_BYTES", "0"),
        ("CALLGATE_TIMELINE_MAX", "1.5"),
        ("CALLGATE_LOG_LEVEL", "loud"),
        ("CALLGATE_KEY_PREFIX", "{callgate}:"),
        ("CALLGATE_KEY_PREFIX", "app:}"),
        ("CALLGATE_PARTITIONS", "0"),
        ("CALLGATE_PARTITIONS", "1025"),
    ],
)
def test_a_bad_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({variable: value})
    message = str(raised.value)
    assert message.startswith(variable + " ")
    assert "\n" not in message


def test_a_malformed_redis_url_is_not_shown_with_its_password() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings({"CALLGATE_REDIS_URL": "redis//:supersecret@db:6379/0"})
    assert str(raised.value).startswith("CALLGATE_REDIS_URL has value '***': ")
    assert "supersecret" not in str(raised.value)


def test_a_bad_value_in_the_file_names_the_setting(tmp_path: Path) -> None:
    path = write(tmp_path, 'port = "abc"\n')
    with pytest.raises(SettingsError, match=r"^CALLGATE_PORT "):
        load_settings({}, file=path)


def test_a_short_token_is_accepted_and_named_as_short() -> None:
    settings = load_settings({"CALLGATE_ADMIN_TOKEN": "admin", "CALLGATE_API_TOKEN": "x" * 16})
    assert settings.admin_token == "admin"
    assert settings.short_tokens() == ["CALLGATE_ADMIN_TOKEN"]
    assert load_settings({"CALLGATE_API_TOKEN": "x" * 15}).short_tokens() == ["CALLGATE_API_TOKEN"]
    assert load_settings({}).short_tokens() == []


def test_unknown_key_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "port = 9000\nprot = 9001\n")
    with pytest.raises(SettingsError, match=r"^CALLGATE_CONFIG .*'prot'"):
        load_settings({}, file=path)


@pytest.mark.parametrize("problem", ["missing", "directory", "not-toml", "not-utf8"])
def test_unreadable_file(tmp_path: Path, problem: str) -> None:
    path = tmp_path / "callgate.toml"
    if problem == "directory":
        path.mkdir()
    elif problem == "not-toml":
        path.write_text("port = = 1\n")
    elif problem == "not-utf8":
        path.write_bytes(b'host = "\xff\xfe"\n')
    with pytest.raises(SettingsError) as raised:
        load_settings({"CALLGATE_CONFIG": str(path)})
    message = str(raised.value)
    assert message.startswith("CALLGATE_CONFIG ")
    assert str(path) in message


def test_secrets_are_masked_in_repr() -> None:
    settings = load_settings(
        {
            "CALLGATE_ADMIN_TOKEN": TOKEN_A,
            "CALLGATE_API_TOKEN": TOKEN_B,
            "CALLGATE_REDIS_URL": "redis://:hunter2-redis-password@redis.internal:6379/0",
        }
    )
    shown = repr(settings) + str(settings)
    assert "Settings(" in shown and "port=8080" in shown
    assert TOKEN_A not in shown
    assert TOKEN_B not in shown
    assert "hunter2-redis-password" not in shown


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


@pytest.mark.parametrize(("raw", "expected"), [("auto", None), ("", None), ("true", True), ("0", False)])
def test_redis_cluster_is_detected_unless_forced(raw: str, expected: bool | None) -> None:
    assert load_settings({"CALLGATE_REDIS_CLUSTER": raw}).redis_cluster is expected
    assert load_settings({}).redis_cluster is None
    with pytest.raises(SettingsError, match="CALLGATE_REDIS_CLUSTER"):
        load_settings({"CALLGATE_REDIS_CLUSTER": "sometimes"})


def test_consent_keywords_are_comma_separated_single_words() -> None:
    settings = load_settings({"CALLGATE_STOP_WORDS": "BASTA, Para", "CALLGATE_START_WORDS": "VOLVER"})
    assert settings.stop_words == ("BASTA", "Para") and settings.start_words == ("VOLVER",)
    assert load_settings({}).stop_words == ()
    with pytest.raises(SettingsError, match="CALLGATE_STOP_WORDS"):
        load_settings({"CALLGATE_STOP_WORDS": "no more"})
