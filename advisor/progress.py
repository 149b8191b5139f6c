"""Progress reporting from the library to whoever displays it.

The library never prints; the command line passes an object with these
methods (the rich display in `cli/`), and tests pass the silent default.
"""

from __future__ import annotations


class ProgressSink:
    """Receives stage changes and step counts; every method does nothing by default."""

    def stage(self, name: str) -> None:
        pass

    def start_task(self, name: str, total: int) -> None:
        pass

    def advance(self, name: str, completed: int, total: int, detail: str = "") -> None:
        pass

    def note(self, message: str) -> None:
        pass
