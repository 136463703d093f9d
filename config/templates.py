"""``{{field}}`` templates filled from an item's ``fields``: robocall text now, SMS text next."""

from __future__ import annotations

import re
from collections.abc import Mapping

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s]{1,64})\s*\}\}")

FieldValue = str | int | float | bool | None


class UnknownField(ValueError):
    """The template names a field the item does not have."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the item has no field {name!r} (used as {{{{{name}}}}})")
        self.name = name


def _text(value: FieldValue) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def fixed_length(template: str) -> int:
    """The characters of ``template`` outside its ``{{field}}`` placeholders: the fewest its
    rendering can have (a field may be empty)."""
    return len(_PLACEHOLDER.sub("", template))


def render(template: str, fields: Mapping[str, FieldValue]) -> str:
    """Replace every ``{{name}}`` with the item's field; an unknown name is an error, never
    an empty gap a customer would hear or read."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in fields:
            raise UnknownField(name)
        return _text(fields[name])

    return _PLACEHOLDER.sub(replace, template)
