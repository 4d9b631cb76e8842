"""How a wsinspect process runs and ends, the same for every command.

- `StopEvent`: set by SIGINT, SIGTERM and SIGHUP through handlers on the loop, or by the
  command itself (its output was closed). Handlers on the loop also work when a script started
  the process with `&`, where SIGINT is ignored and Python raises no KeyboardInterrupt.
- `run_until_stopped`: a command's work raced against its stop event.
- `new_capture_path` and `remove_capture`: the capture a command records into, and how one that
  nobody will look at goes away.
- `CLOSED_PIPE`: the exit status when a command's reader went away (`| head`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from .store import capture_files, temporary_capture_path

CLOSED_PIPE = 128 + signal.SIGPIPE  # the status of a filter whose reader went away
HUNG_UP = 128 + signal.SIGHUP  # the status when the process outlived its terminal too long
HANGUP_GRACE = 10.0  # seconds to stop cleanly once the terminal is gone

T = TypeVar("T")


class Stopped(Exception):
    """The stop event came before the work was done."""


class StopEvent(asyncio.Event):
    """Set when the command should end: SIGINT, SIGTERM, SIGHUP, or the command itself.

    SIGHUP says the terminal is gone, and writing to it fails. Whatever was a terminal becomes
    /dev/null (pipes and files keep their output; `output_lost` tells whether stdout was the
    terminal), then the event is set. An app's exit usually blocks for good on Textual's
    writer thread, which died on the dead terminal: so a command showing the app has its
    `release` (see `on_hang_up`) stop what it started first, and a watchdog calls `if_stuck`
    and ends the process if it is still there HANGUP_GRACE seconds after the hang-up.
    """

    def __init__(self) -> None:
        super().__init__()
        self.hung_up = False
        self.output_lost = False
        self._release: Callable[[], Awaitable[None]] | None = None
        self._if_stuck: Callable[[], None] | None = None
        self._releasing: asyncio.Task | None = None
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self.set)
        loop.add_signal_handler(signal.SIGTERM, self.set)
        loop.add_signal_handler(signal.SIGHUP, self._hang_up)

    def on_hang_up(
        self,
        if_stuck: Callable[[], None],
        release: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """What to do when the terminal goes away. `if_stuck` removes the command's files
        when the process has to be ended. `release`, for a command showing the app, stops
        what the command started and removes its files before the event is set; it may run
        again afterwards (the command's own ending), so it must do nothing the second time."""
        self._if_stuck = if_stuck
        self._release = release

    def _hang_up(self) -> None:
        if self.hung_up:
            return
        self.hung_up = True
        self.output_lost = _detach_terminal()
        threading.Thread(target=self._end_if_stuck, name="wsinspect-hangup", daemon=True).start()
        if self._release is None:
            self.set()
        else:
            self._releasing = asyncio.ensure_future(self._release_first(self._release))

    async def _release_first(self, release: Callable[[], Awaitable[None]]) -> None:
        try:
            await release()
        finally:
            self.set()

    def _end_if_stuck(self) -> None:
        time.sleep(HANGUP_GRACE)
        if self._if_stuck is not None:
            self._if_stuck()
        os._exit(HUNG_UP)


def _detach_terminal() -> bool:
    """Point stdin, stdout and stderr that were a terminal at /dev/null; returns whether
    stdout was one."""
    null = os.stat(os.devnull).st_rdev
    devnull = os.open(os.devnull, os.O_RDWR)
    detached = set()
    for fd in (0, 1, 2):
        try:
            status = os.fstat(fd)
        except OSError:
            continue  # not open
        if stat.S_ISCHR(status.st_mode) and status.st_rdev != null:
            os.dup2(devnull, fd)
            detached.add(fd)
    os.close(devnull)
    return 1 in detached


async def run_until_stopped(
    work: Awaitable[T], stop: asyncio.Event, *, end: Callable[[], object] | None = None
) -> T:
    """`work`'s result, unless `stop` is set first: then `end` asks the work to finish (without
    `end` it is cancelled), the work is awaited so it cleans up, and Stopped is raised."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if task.done():
        return task.result()
    if end is None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    else:
        end()
        await task
    raise Stopped


def new_capture_path(path: str | None) -> Path:
    """The capture file a command records into: the one named, or a new temporary one."""
    if path:
        return Path(path)
    return temporary_capture_path()


def remove_capture(path: str | os.PathLike) -> None:
    """Remove a capture and the files beside it (SQLite's, its payload file)."""
    for file in capture_files(path):
        file.unlink(missing_ok=True)


def quiet_loop_reports(loop: asyncio.AbstractEventLoop) -> None:
    """Drop asyncio's reports that repeat, with a traceback, what a command already said in its
    own line: a cancelled task (Python 3.11's start_server reports each connection handler
    cancelled at shutdown; 3.12 checks), and a network or TLS error in a task nobody awaited
    (3.11.2's SSL transport leaves one behind a failed handshake that the caller reported).
    Any other report goes to asyncio's default handler."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict) -> None:
        error = context.get("exception")
        if isinstance(error, asyncio.CancelledError):
            return
        if "never retrieved" in str(context.get("message", "")) and isinstance(error, OSError):
            return  # ssl.SSLError is an OSError
        loop.default_exception_handler(context)

    loop.set_exception_handler(handle)

