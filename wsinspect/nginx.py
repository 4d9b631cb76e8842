"""A real nginx as a child process: a config written to a folder of its own, run in the
foreground on a port chosen just before it starts (nginx cannot pick one itself; a port taken
by another process in between is retried with another), told to end with the thread that
started it. `wsinspect demo` runs it as its hop, the tests in front of their servers: one
launcher for both."""

from __future__ import annotations

import asyncio
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .addresses import free_port
from .errors import NginxError

HOST = "127.0.0.1"
START_ATTEMPTS = 5
START_TIMEOUT = 10.0  # seconds for nginx to accept on its port
POLL_INTERVAL = 0.02  # seconds between checks that it does

_NGINX_MAIN = """
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 1024; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      close;
    }}
{server}
}}
"""


def nginx_config(folder: Path, server: str) -> str:
    """A config for nginx in the foreground, all its files in `folder`, with the map a
    WebSocket location needs and one `server` block."""
    return _NGINX_MAIN.format(dir=folder, server=server)


def find_nginx() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


PR_SET_PDEATHSIG = 1


def ends_with_parent() -> Callable[[], None] | None:
    """For Popen's preexec_fn: the child gets SIGTERM when its parent dies, even by SIGKILL,
    which leaves no chance to stop it otherwise (Linux; elsewhere, None). The libc function is
    looked up here, before the fork. The "parent" is the thread that forked, not the process:
    start the child from a thread that lives as long as the process (see NginxProcess)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _accepts(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=0.2).close()
        return True
    except OSError:
        return False


class NginxProcess:
    """nginx serving `server(port)` (a `server { … }` block for the port it gets) from
    `folder`. `start` blocks until nginx accepts; on an event loop, `start_on_loop` waits
    without blocking it. Either spawns nginx from the calling thread, which nginx ends with."""

    def __init__(self, binary: str, folder: Path, server: Callable[[int], str]) -> None:
        self.binary = binary
        self.folder = folder
        self.server = server
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def error_log(self) -> str:
        path = self.folder / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        for _ in self._starting():
            time.sleep(POLL_INTERVAL)

    async def start_on_loop(self) -> None:
        for _ in self._starting():
            await asyncio.sleep(POLL_INTERVAL)

    def _starting(self) -> Iterator[None]:
        """Spawns nginx and yields while it does not accept yet (its caller waits between
        checks, each its own way); returns once it does, raises NginxError when it never
        will."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(START_ATTEMPTS):
            self._spawn()
            deadline = time.monotonic() + START_TIMEOUT
            while self.process.poll() is None and time.monotonic() < deadline:
                if _accepts(self.port):
                    return
                yield
            self.stop()
            if "Address already in use" not in self.error_log:
                break
        last = self.error_log.strip().splitlines()
        raise NginxError(f"nginx did not start: {last[-1] if last else 'no error log'}")

    def _spawn(self) -> None:
        self.port = free_port(HOST)
        conf = self.folder / "nginx.conf"
        conf.write_text(nginx_config(self.folder, self.server(self.port)))
        self.process = subprocess.Popen(
            [
                self.binary,
                *("-p", str(self.folder), "-c", str(conf)),
                *("-e", str(self.folder / "error.log")),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=ends_with_parent(),
            # Its own process group: the terminal's signals (Ctrl-C, hangup) reach its
            # parent only, which stops nginx itself; SIGHUP would make nginx reload.
            process_group=0,
        )

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None


def stop_process(process: subprocess.Popen, grace: float = 5.0) -> None:
    """Terminate a server process, killing it if it has not ended within `grace` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
