"""Self-contained HTML rendering of a report: one file, inline SVG plots, no scripts and no network fetches."""

from __future__ import annotations

from html import escape

from advisor.report import Report
from reports.figures import (ALIGNMENT_HEADERS, STRUCTURE_HEADERS, TRAINING_HEADERS, alignment_rows, structure_rows, summary_rows,
                             training_rows)
from reports.plots import Plot, render_plots
from reports.theme import HTML_STYLE, HTML_VERDICT_COLOURS, VERDICT_TITLES, confirmation_text, format_number


def _table(headers: list[str], rows: list[list[str]], numeric_from: int = 1) -> list[str]:
    """Render an HTML table; columns from `numeric_from` on are right-aligned."""
    lines = ["<table>", "<thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in headers) + "</tr></thead>", "<tbody>"]
    for row in rows:
        cells = [f'<td class="number">{escape(c)}</td>' if i >= numeric_from else f"<td>{escape(c)}</td>" for i, c in enumerate(row)]
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines += ["</tbody>", "</table>"]
    return lines


def _pairs(rows: list[tuple[str, str]]) -> list[str]:
    """Render a two-column table of label and value, labels as row headers."""
    lines = ["<table>", "<tbody>"]
    lines += [f"<tr><th>{escape(label)}</th><td>{escape(value)}</td></tr>" for label, value in rows]
    lines += ["</tbody>", "</table>"]
    return lines


def _list(items: list[str]) -> list[str]:
    return ["<ul>"] + [f"<li>{escape(item)}</li>" for item in items] + ["</ul>"]


def _figure(plot: Plot) -> list[str]:
    return [f'<figure id="plot-{plot.name}">', f"<h3>{escape(plot.title)}</h3>", plot.svg,
            f"<figcaption>{escape(plot.caption)}</figcaption>", "</figure>"]


def _verdict(report: Report) -> list[str]:
    verdict = report.verdict
    background, colour = HTML_VERDICT_COLOURS[verdict.label]
    return [f'<section class="verdict" style="background: {background}; color: {colour}">',
            f"<h2>{escape(VERDICT_TITLES[verdict.label])} ({escape(confirmation_text(verdict.confirmed))})</h2>",
            *_list(verdict.sentences), "</section>"]


def _model_and_data(report: Report) -> list[str]:
    model, data = report.model, report.data
    rows = [
        ("model", f"{model.spec} ({model.kind})"),
        ("parameters", f"{model.n_params:,} in {len(model.tensors)} tensors"),
        ("input shape", "×".join(str(size) for size in model.input_shape)),
        ("outputs", str(model.n_outputs)),
    ]
    if model.opset is not None:
        rows.append(("ONNX opset", str(model.opset)))
    if model.conversion_max_abs_diff is not None:
        rows.append(("ONNX conversion, max output difference", format_number(model.conversion_max_abs_diff)))
    rows += [
        ("data", f"{data.spec} ({data.task})"),
        ("examples", f"{data.n_train} train, {data.n_test} test, {data.n_analysis} in the analysis subset"),
        ("split", data.split or "as given by the source"),
        ("seed", str(data.seed)),
    ]
    if data.class_counts:
        rows.append(("class counts (train)", ", ".join(f"{name}: {count}" for name, count in data.class_counts.items())))
    return ["<h2>Model and data</h2>", *_pairs(rows)]


def _structure(report: Report) -> list[str]:
    structure = report.structure
    lines = ["<h2>Structure</h2>",
             f"<p>The common model structure assumption {'holds' if structure.holds else 'fails'}: form "
             f"<code>{escape(structure.form)}</code>, relative error {escape(format_number(structure.relative_error))} "
             f"(tolerance {escape(format_number(structure.tolerance))}) on {structure.n_examples} examples at "
             f"{structure.n_points} parameter points.</p>"]
    if structure.breaking_op:
        lines.append(f"<p>Breaking operation: <code>{escape(structure.breaking_op)}</code>.</p>")
    if structure.fix:
        lines.append(f"<p>Fix: {escape(structure.fix)}</p>")
    lines += _table(STRUCTURE_HEADERS, structure_rows(report), numeric_from=2)
    return lines


def _certificate(report: Report) -> list[str]:
    training = report.training
    # `advisor train --framework base` leaves the EE run empty.
    if training is None or training.ee is None:
        return []
    ee = training.ee
    rows = [
        ("mode", ee.mode),
        ("exploration", f"{ee.explore_epochs} epochs"),
        ("random features p", str(ee.p)),
        ("representation", ee.representation),
        ("σ_min(Φ)", format_number(ee.certificate.sigma_min)),
        ("σ_max(Φ)", format_number(ee.certificate.sigma_max)),
        ("certificate method", ee.certificate.method),
        ("training loss at the transition", format_number(ee.loss_at_transition)),
        ("final training loss", format_number(ee.final_train_loss)),
        ("bound violations", str(ee.bound_violations)),
    ]
    return ["<h2>EE certificate</h2>", *_pairs(rows)]


def _training_table(report: Report) -> list[str]:
    if report.training is None:
        return []
    return ["<h2>Training</h2>", *_table(TRAINING_HEADERS, training_rows(report))]


def _environment(report: Report) -> list[str]:
    env = report.environment
    rows = [
        ("versions", f"advisor {env.advisor}, torch {env.torch}, Python {env.python}"),
        ("device", f"{env.device}, {env.threads} threads"),
        ("seed", str(env.seed)),
        ("command line", " ".join(env.command_line)),
        ("wall seconds per stage", ", ".join(f"{stage}: {seconds:.1f}" for stage, seconds in env.stage_seconds.items())),
        ("schema version", report.schema_version),
    ]
    return ["<h2>Environment</h2>", *_pairs(rows)]


def render_html(report: Report, plots: list[Plot] | None = None) -> str:
    """Return the whole report as one HTML page; `plots` defaults to every plot the report has data for."""
    plots = render_plots(report) if plots is None else plots
    title = f"Model-design advisor: {VERDICT_TITLES[report.verdict.label]}"
    body: list[str] = [f"<h1>{escape(title)}</h1>", *_verdict(report)]
    body += ["<h2>Summary</h2>", *_pairs(summary_rows(report))]
    body += _model_and_data(report)
    body += _structure(report)
    body += ["<h2>Alignment</h2>", *_table(ALIGNMENT_HEADERS, alignment_rows(report), numeric_from=1)]
    if plots:
        body.append("<h2>Plots</h2>")
        for plot in plots:
            body += _figure(plot)
    body += _certificate(report)
    body += _training_table(report)
    if report.recommendations:
        body.append("<h2>Recommendations</h2>")
        body += ["<ul>"] + [f"<li>{escape(r.text)} <small>({escape(', '.join(r.rests_on))})</small></li>" for r in report.recommendations] + ["</ul>"]
    if report.caveats:
        body += ["<h2>Caveats</h2>", *_list(report.caveats)]
    body += _environment(report)

    head = ['<!DOCTYPE html>', '<html lang="en">', "<head>", '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{escape(title)}</title>",
            f"<style>{HTML_STYLE}</style>", "</head>", "<body>"]
    return "\n".join(head + body + ["</body>", "</html>", ""])
