"""Parsing shared by several commands' options."""

from __future__ import annotations


def split_list(option: str, text: str, allowed: tuple[str, ...]) -> list[str]:
    """Split a comma-separated option value; raises UnknownChoiceError on an item outside `allowed`."""
    from advisor.errors import UnknownChoiceError

    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        if item not in allowed:
            raise UnknownChoiceError(f"{option} value", item, allowed)
    return items
