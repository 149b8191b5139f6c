"""Keep a command running when the reader of its standard output goes away.

`advisor check … | head` closes the pipe after a few lines. The report files
are the command's real output, so a closed pipe should not stop the run or
turn into exit code 1, which CI reads as a `--fail-on` hit. After the first
BrokenPipeError, file descriptor 1 points at the null device and the run
continues with its normal exit code.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO


class PipeTolerantStream:
    """A text stream that forwards to `stream` until the pipe breaks, then discards."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._discard()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._discard()

    def _discard(self) -> None:
        # Redirect the descriptor itself, so that buffered text still in
        # the stream (and the interpreter's flush at exit) goes to the null
        # device instead of raising again.
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, self._stream.fileno())
        os.close(null)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def tolerate_closed_stdout() -> None:
    """Wrap sys.stdout once; later calls do nothing."""
    if not isinstance(sys.stdout, PipeTolerantStream) and sys.stdout is not None:
        sys.stdout = PipeTolerantStream(sys.stdout)
