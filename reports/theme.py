"""Colours and labels shared by the renderers."""

from __future__ import annotations

VERDICT_STYLES = {
    "aligned": "bold green",
    "misaligned": "bold yellow",
    "structure-fails": "bold red",
}

VERDICT_TITLES = {
    "aligned": "Aligned",
    "misaligned": "Misaligned",
    "structure-fails": "Structure assumption fails",
}


def confirmation_text(confirmed: bool | None) -> str:
    if confirmed is None:
        return "not checked by training"
    return "confirmed by training" if confirmed else "not confirmed by training"


def format_number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"
