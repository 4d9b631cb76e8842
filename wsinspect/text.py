"""Text from the network or from files, made safe for a terminal.

Two layers, one rule (nothing a peer or a file chose is interpreted by the terminal):
`printable()` escapes every control character of a string, newlines included, so a value
cannot forge a line of its own; `TerminalStream` wraps sys.stdout and sys.stderr for every
`wsinspect` command, so whatever a command prints (reports, event lines, error text from
SQLite or mitmproxy) has its control characters escaped at the one place output is produced,
whichever code printed it. Only line breaks pass through the stream.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from typing import TextIO


def printable(text: str) -> str:
    """Text safe to print to a terminal: control characters (ANSI/OSC escapes included) are
    shown escaped instead of being interpreted."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def printable_lines(text: str) -> str:
    """`text` with each line made printable and its line breaks kept."""
    if text.isprintable():
        return text
    return "\n".join(printable(line) for line in text.split("\n"))


def print_error(message: str, prog: str = "wsinspect") -> None:
    """An error as one line on stderr: line breaks in the message (a file name, SQLite's
    text quoting a crafted schema) are escaped too."""
    print(f"{prog}: {printable(message)}", file=sys.stderr, flush=True)


class TerminalStream(io.TextIOBase):
    """A text stream that escapes control characters on their way to `stream`.

    Binary writers (`export -o -`) use `.buffer`, which stays the raw byte stream.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        self.stream.write(printable_lines(text))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        """False: this stream passes no control sequence, so libraries that colour their
        output for terminals (rich, in tracebacks the app prints) write plain text to it."""
        return False

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.stream.encoding

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return self.stream.errors

    @property
    def buffer(self):
        return self.stream.buffer


def discard_closed_stdout() -> None:
    """stdout's reader went away (`| head`): send what is still buffered, and anything printed
    later, to /dev/null, so neither this process nor Python's exit reports a BrokenPipeError."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.__stdout__.fileno())
    finally:
        os.close(devnull)


@contextlib.contextmanager
def terminal_output() -> Iterator[None]:
    """For the duration: sys.stdout and sys.stderr escape control characters."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = TerminalStream(sys.stdout), TerminalStream(sys.stderr)
    try:
        yield
    finally:
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            discard_closed_stdout()
        sys.stdout, sys.stderr = saved
