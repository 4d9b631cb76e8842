"""wsinspect's errors: one base, WsinspectError, and a subclass for each part that can fail.

Each says in one line, in plain words, what could not be done and why; a command catches the
base and prints that line (wsinspect.cli catches what a command left). Errors inside one part's
workings that never leave it (a record field out of range, a filter that does not parse) stay
ValueErrors beside their code.
"""

from __future__ import annotations


class WsinspectError(Exception):
    """Something wsinspect could not do; the message says why, on one line."""


class CaptureError(WsinspectError):
    """A capture file that cannot be opened or read; the message names the file and why, on
    one line: what it quotes (SQLite's and mitmproxy's errors, which may quote the file) has
    its line breaks and runs of spaces made single spaces, and is cut after MAX_CHARS."""

    MAX_CHARS = 400

    def __init__(self, message: str) -> None:
        line = " ".join(message.split())
        if len(line) > self.MAX_CHARS:
            line = line[: self.MAX_CHARS - 1] + "…"
        super().__init__(line)


class EngineError(WsinspectError):
    """The proxy could not start."""


class ReplayError(WsinspectError):
    """A replay could not run."""


class ResendError(WsinspectError):
    """A message could not be resent."""


class SessionClosedError(ResendError):
    """The session has ended: nothing can be injected into it any more (replay it instead)."""


class DemoError(WsinspectError):
    """The demo could not start."""


class NginxError(WsinspectError):
    """nginx (wsinspect.nginx's launcher) did not start."""


class GatewayError(WsinspectError):
    """Setting up or tearing down the transparent-mode gateway could not go on."""


class HostError(WsinspectError):
    """A tool the preflight needs is missing or refused; the message says which and why."""


class StepFailed(WsinspectError):
    """A step of `wsinspect hello`'s session did not happen; the message says what happened
    instead."""
