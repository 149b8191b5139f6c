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

# Background and text colours of the verdict banner in the HTML report,
# matching VERDICT_STYLES.
HTML_VERDICT_COLOURS = {
    "aligned": ("#e6f4ea", "#1e6b34"),
    "misaligned": ("#fff4d6", "#7a5400"),
    "structure-fails": ("#fde7e7", "#a12626"),
}

HTML_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 960px; margin: 2em auto; padding: 0 1em;
       color: #1f2328; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.2em; margin-top: 1.6em; }
.verdict { padding: 0.8em 1.2em; border-radius: 6px; border: 1px solid currentColor; }
.verdict h2 { border: none; margin: 0 0 0.3em 0; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f6f8fa; }
figure { margin: 1em 0; } figure svg { max-width: 100%; height: auto; }
figcaption { font-size: 0.9em; color: #57606a; }
code { font-size: 0.9em; background: #f6f8fa; padding: 0 0.2em; }
footer { margin-top: 2em; font-size: 0.85em; color: #57606a; }
"""

# Styles of a regression check's status in `advisor compare`.
CHECK_STYLES = {
    "passed": "green",
    "failed": "bold red",
    "skipped": "dim",
}
