"""The rich progress display that the library reports to."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from advisor.progress import ProgressSink


class RichProgress(ProgressSink):
    """Shows the current stage and a bar per training phase on stderr."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console, transient=False)
        self.tasks: dict[str, int] = {}
        self.stage_task: int | None = None

    def __enter__(self) -> "RichProgress":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def stage(self, name: str) -> None:
        if self.stage_task is not None:
            self.progress.update(self.stage_task, completed=1, total=1)
        self.stage_task = self.progress.add_task(name, total=None, detail="")

    def start_task(self, name: str, total: int) -> None:
        if name in self.tasks:
            self.progress.update(self.tasks[name], total=total, completed=0)
        else:
            self.tasks[name] = self.progress.add_task(f"  {name}", total=total, detail="")

    def advance(self, name: str, completed: int, total: int, detail: str = "") -> None:
        if name not in self.tasks:
            self.start_task(name, total)
        self.progress.update(self.tasks[name], completed=completed, total=total, detail=detail)

    def note(self, message: str) -> None:
        self.console.log(message)

    def finish(self) -> None:
        if self.stage_task is not None:
            self.progress.update(self.stage_task, completed=1, total=1)


def run_with_progress(run, config, *, quiet: bool, err_console: Console):
    """Call `run(config, progress)` with a rich progress display on stderr, or silently when `quiet`."""
    if quiet:
        return run(config)
    with RichProgress(err_console) as progress:
        report = run(config, progress)
        progress.finish()
    return report


def print_summary(report, paths, out_console: Console) -> None:
    """Print the terminal rendering of `report` and the files written."""
    from reports.terminal import render_terminal

    out_console.print(render_terminal(report))
    out_console.print("Report written: " + ", ".join(str(p) for p in paths))
