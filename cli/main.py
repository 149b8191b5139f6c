"""Entry point of the `advisor` command: composes the command modules."""

from __future__ import annotations

import warnings

import typer

from cli.check import check
from cli.train import train
from cli.compare_cmd import compare
from cli.pipe import tolerate_closed_stdout
from cli.report_cmd import report
from cli.schema_cmd import schema

# torch 2.14 warns about its own deprecated torch.jit.script when
# torchvision is imported; the warning is not about the user's model.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)

app = typer.Typer(
    name="advisor",
    help="Check a neural architecture against the data-architecture alignment condition and confirm the verdict by training.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command(name="check")(check)
app.command(name="train")(train)
app.command(name="report")(report)
app.command(name="compare")(compare)
app.command(name="schema")(schema)


@app.callback()
def main() -> None:
    """Model-design advisor (Kawaguchi, Zhang and Deng, Neural Computation 2022)."""
    tolerate_closed_stdout()


if __name__ == "__main__":
    app()
