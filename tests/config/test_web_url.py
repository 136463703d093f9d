"""The links callgate fetches or posts to (media, CRM endpoints): their shape."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from config.lines import WebUrl

URL: TypeAdapter[str] = TypeAdapter(WebUrl)


@pytest.mark.parametrize(
    "url", ["https://crm.example.com/hook", "http://crm.example.com:1/x", "https://crm.example.com:65535", "http://h:/"]
)
def test_a_web_url(url: str) -> None:
    assert URL.validate_python(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "https://crm.example.com:65536/",
        "ftp://crm.example.com/",
        "https:///nohost",
    ],
)
def test_not_a_web_url(url: str) -> None:
    with pytest.raises(ValidationError):
        URL.validate_python(url)
