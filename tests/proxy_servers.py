"""Real proxies for the tests: nginx, Apache httpd 2.4, HAProxy, Caddy 2 and squid from the
Debian packages, each started in the foreground from a config written to a temporary
directory, listening on one loopback port, and stopped at teardown.

None of them can be told to pick a port itself, so a port another process grabs between
free_port() and the server's bind is retried with a new one.
"""

from __future__ import annotations

import abc
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.builders import free_port
from wsinspect.nginx import NginxProcess, stop_process


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def binary(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class ProxyServer(abc.ABC):
    """A proxy on 127.0.0.1:`port` in front of 127.0.0.1:`upstream_port` (a reverse proxy) or
    of any address (a forward proxy), configured by `config()`."""

    name: str  # as wsinspect.proxies names it
    log_name = "error.log"  # the file the server writes its errors to, in `folder`

    def __init__(self, folder: Path, upstream_port: int = 0) -> None:
        self.folder = folder
        self.upstream_port = upstream_port
        self.port = 0
        self.process: subprocess.Popen | None = None

    @abc.abstractmethod
    def config(self) -> str:
        """The configuration for `self.port` and `self.upstream_port`."""

    @abc.abstractmethod
    def command(self, conf: Path) -> list[str]:
        """The command line that runs the server in the foreground from `conf`."""

    conf_name = "server.conf"
    env: dict[str, str] = {}

    @property
    def error_log(self) -> str:
        path = self.folder / self.log_name
        text = path.read_text(errors="replace") if path.exists() else ""
        output = self.folder / "output.log"
        return text + (output.read_text(errors="replace") if output.exists() else "")

    def start(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            self.port = free_port()
            conf = self.folder / self.conf_name
            conf.write_text(self.config())
            with open(self.folder / "output.log", "wb") as output:
                self.process = subprocess.Popen(
                    self.command(conf),
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **self.env},
                )
            deadline = time.monotonic() + 10
            while self.process.poll() is None and time.monotonic() < deadline:
                if _accepts(self.port):
                    return self
                time.sleep(0.02)
            self.stop()
            if "in use" not in self.error_log:
                break
        raise RuntimeError(f"{self.name} did not start:\n{self.error_log}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        self.process = None


# ----- nginx ---------------------------------------------------------------------------------

NGINX_BROKEN = ""  # plain proxy_pass: HTTP/1.0 upstream, Upgrade and Connection dropped
NGINX_HALF_FIXED = "proxy_http_version 1.1;"  # still drops Upgrade, sends Connection: close
NGINX_FIXED = """
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
"""

_NGINX_SERVER = """
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_read_timeout {read_timeout};
            {location}
        }}
    }}
"""


class Nginx:
    """nginx proxying to the upstream with `location` lines, run by wsinspect's launcher (the
    one `wsinspect demo` uses)."""

    name = "nginx"

    def __init__(
        self, folder: Path, upstream_port: int, location: str, read_timeout: str = "60s"
    ) -> None:
        self.folder = folder
        self.upstream_port = upstream_port
        self.location = location
        self.read_timeout = read_timeout
        self.launcher = NginxProcess(binary("nginx"), folder, self.server)

    def server(self, port: int) -> str:
        return _NGINX_SERVER.format(
            port=port,
            upstream_port=self.upstream_port,
            location=self.location,
            read_timeout=self.read_timeout,
        )

    @property
    def port(self) -> int:
        return self.launcher.port

    @property
    def error_log(self) -> str:
        return self.launcher.error_log

    def start(self) -> Nginx:
        self.launcher.start()
        return self

    def stop(self) -> None:
        self.launcher.stop()


# ----- Apache httpd 2.4 ----------------------------------------------------------------------

APACHE_MODULES = "/usr/lib/apache2/modules"

_APACHE_MAIN = """
ServerRoot "{dir}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile "{dir}/httpd.pid"
DefaultRuntimeDir "{dir}"
ErrorLog "{dir}/error.log"
LogLevel warn
User nobody
Group nogroup
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule headers_module {modules}/mod_headers.so
LoadModule proxy_module {modules}/mod_proxy.so
LoadModule proxy_http_module {modules}/mod_proxy_http.so
LoadModule proxy_wstunnel_module {modules}/mod_proxy_wstunnel.so
Timeout {timeout}
{directives}
"""

APACHE_FIXED = "ProxyPass / http://127.0.0.1:{upstream_port}/ upgrade=websocket"
APACHE_BROKEN = "ProxyPass / http://127.0.0.1:{upstream_port}/"  # no upgrade=websocket


class Apache(ProxyServer):
    """Apache httpd 2.4 (event MPM, mod_proxy_http) with `directives` ({upstream_port} is
    filled in) and a `Timeout`."""

    name = "apache"
    conf_name = "httpd.conf"

    def __init__(
        self, folder: Path, upstream_port: int, directives: str, timeout: str = "60"
    ) -> None:
        super().__init__(folder, upstream_port)
        self.directives = directives
        self.timeout = timeout

    def config(self) -> str:
        return _APACHE_MAIN.format(
            dir=self.folder,
            port=self.port,
            modules=APACHE_MODULES,
            timeout=self.timeout,
            directives=self.directives.format(upstream_port=self.upstream_port),
        )

    def command(self, conf: Path) -> list[str]:
        return [binary("apache2"), "-d", str(self.folder), "-f", str(conf), "-DFOREGROUND"]


# ----- HAProxy -------------------------------------------------------------------------------

_HAPROXY = """
global
    log stderr format raw local0 warning
defaults
    mode http
    log global
    timeout connect 2s
    timeout client 30s
    timeout server 30s
{defaults}
frontend web
    bind 127.0.0.1:{port}
{frontend}
    default_backend app
backend app
    server app 127.0.0.1:{upstream_port}
"""


class HAProxy(ProxyServer):
    """HAProxy in HTTP mode with extra `defaults` and `frontend` lines."""

    name = "haproxy"
    conf_name = "haproxy.cfg"
    log_name = "output.log"

    def __init__(
        self, folder: Path, upstream_port: int, defaults: str = "", frontend: str = ""
    ) -> None:
        super().__init__(folder, upstream_port)
        self.defaults = defaults
        self.frontend = frontend

    def config(self) -> str:
        return _HAPROXY.format(
            port=self.port,
            upstream_port=self.upstream_port,
            defaults=self.defaults,
            frontend=self.frontend,
        )

    def command(self, conf: Path) -> list[str]:
        return [binary("haproxy"), "-db", "-f", str(conf)]


# ----- Caddy 2 -------------------------------------------------------------------------------

_CADDYFILE = """
{{
    admin off
    auto_https off
}}
http://127.0.0.1:{port} {{
    reverse_proxy 127.0.0.1:{upstream_port} {{
{directives}
    }}
}}
"""


class Caddy(ProxyServer):
    """Caddy 2's reverse_proxy with `directives` inside its block."""

    name = "caddy"
    conf_name = "Caddyfile"
    log_name = "output.log"

    def __init__(self, folder: Path, upstream_port: int, directives: str = "") -> None:
        super().__init__(folder, upstream_port)
        self.directives = directives

    @property
    def env(self) -> dict[str, str]:  # Caddy keeps its state under HOME/XDG folders
        return {
            "HOME": str(self.folder),
            "XDG_DATA_HOME": str(self.folder / "data"),
            "XDG_CONFIG_HOME": str(self.folder / "config"),
        }

    def config(self) -> str:
        return _CADDYFILE.format(
            port=self.port, upstream_port=self.upstream_port, directives=self.directives
        )

    def command(self, conf: Path) -> list[str]:
        return [binary("caddy"), "run", "--config", str(conf), "--adapter", "caddyfile"]


# ----- squid ---------------------------------------------------------------------------------

_SQUID = """
http_port 127.0.0.1:{port}
pid_filename {dir}/squid.pid
cache_log {dir}/cache.log
access_log {dir}/access.log
cache_store_log none
cache deny all
coredump_dir {dir}
cache_effective_user proxy
visible_hostname wsinspect-test
dns_nameservers 127.0.0.1
shutdown_lifetime 0 seconds
acl localnet src 127.0.0.0/8
http_access allow localnet
http_access deny all
{directives}
"""

SQUID_LOWER_CASE = "http_upgrade_request_protocols websocket allow all"
SQUID_CAPITALISED = "http_upgrade_request_protocols WebSocket allow all"  # squid's example
SQUID_FIXED = SQUID_LOWER_CASE + "\n" + SQUID_CAPITALISED  # squid matches the exact spelling


class Squid(ProxyServer):
    """squid as a forward proxy for loopback clients, with extra `directives`."""

    name = "squid"
    conf_name = "squid.conf"
    log_name = "cache.log"

    def __init__(self, folder: Path, directives: str = "") -> None:
        # squid drops to cache_effective_user, which must reach and write its folder: pytest's
        # are private to root, so it gets one of its own in /tmp, removed when it stops.
        super().__init__(Path(tempfile.mkdtemp(prefix=f"wsinspect-{folder.name}-")))
        shutil.chown(self.folder, "proxy", "proxy")
        self.directives = directives

    def config(self) -> str:
        return _SQUID.format(dir=self.folder, port=self.port, directives=self.directives)

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def command(self, conf: Path) -> list[str]:
        return [binary("squid"), "-N", "-f", str(conf)]


async def start_on_free_ports(start_proxy, tmp_path, modes_for, name: str = "wsinspect"):
    """Start wsinspect with `modes_for(front_port, back_port)`: a proxy in the middle must
    know the reverse listener's port, so the specs name their ports; one taken by another
    process between free_port() and the bind is retried with new ones. Returns the proxy and
    the back port."""
    from wsinspect.engine import EngineError

    for attempt in range(3):
        ports = free_port(), free_port()
        try:
            capture = tmp_path / f"{name}{attempt}.db"
            return await start_proxy(modes=modes_for(*ports), capture=capture), ports[1]
        except EngineError:
            if attempt == 2:
                raise
