"""A real nginx for the tests: a config written to a temporary directory, one loopback port,
started as a subprocess in the foreground and stopped at teardown."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from wsinspect.demo import nginx_config

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# The location blocks of the three configurations the README's story is about.
BROKEN = ""  # plain proxy_pass: HTTP/1.0 upstream, Upgrade and Connection dropped
HALF_FIXED = "proxy_http_version 1.1;"  # still drops Upgrade, sends Connection: close
FIXED = """
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
"""

SERVER = """
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_read_timeout {read_timeout};
            {location}
        }}
    }}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


class Nginx:
    """nginx proxying 127.0.0.1:`port` to 127.0.0.1:`upstream_port` with `location` lines."""

    def __init__(
        self, folder: Path, upstream_port: int, location: str, read_timeout: str = "60s"
    ) -> None:
        self.folder = folder
        self.upstream_port = upstream_port
        self.location = location
        self.read_timeout = read_timeout
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def error_log_path(self) -> Path:
        return self.folder / "error.log"

    @property
    def error_log(self) -> str:
        path = self.error_log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> Nginx:
        self.folder.mkdir(parents=True, exist_ok=True)
        # nginx cannot be told to pick a port itself; a port that another process grabs
        # between free_port() and nginx's bind() is retried with a new one.
        for _ in range(5):
            self.port = free_port()
            conf = self.folder / "nginx.conf"
            conf.write_text(
                nginx_config(
                    self.folder,
                    SERVER.format(
                        port=self.port,
                        upstream_port=self.upstream_port,
                        location=self.location,
                        read_timeout=self.read_timeout,
                    ),
                )
            )
            self.process = subprocess.Popen(
                [NGINX, "-p", str(self.folder), "-c", str(conf), "-e", str(self.error_log_path)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            deadline = time.monotonic() + 5
            while self.process.poll() is None and time.monotonic() < deadline:
                if _accepts(self.port):
                    return self
                time.sleep(0.02)
            self.stop()
            if "Address already in use" not in self.error_log:
                break
        raise RuntimeError(f"nginx did not start:\n{self.error_log}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None
