"""Parsing shared by several commands' options."""

from __future__ import annotations


def split_list(option: str, text: str, allowed: tuple[str, ...], *, required: bool = False) -> list[str]:
    """Split a comma-separated option value; raises UnknownChoiceError on an item outside `allowed`.

    With `required`, an empty value raises UsageError.
    """
    from advisor.errors import UnknownChoiceError, UsageError

    items = [item.strip() for item in text.split(",") if item.strip()]
    if required and not items:
        raise UsageError(option, text, f"at least one of {', '.join(allowed)}")
    for item in items:
        if item not in allowed:
            raise UnknownChoiceError(f"{option} value", item, allowed)
    return items
