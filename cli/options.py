"""Parsing shared by several commands' options."""

from __future__ import annotations

from pathlib import Path

import typer


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


def output_path(value: str | Path | None) -> Path | None:
    """Typer parser for output paths: an empty value would silently mean the current folder.

    Typer also passes the option's default through the parser, as a Path or None.
    """
    if value is None or isinstance(value, Path):
        return value
    if not value.strip():
        raise typer.BadParameter("the path is empty. Name a folder or file, for example advisor-report.")
    return Path(value)
