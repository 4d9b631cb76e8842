"""Real parts for the tests: WebSocket servers on OS-chosen loopback ports, a real mitmproxy
Master with the wsinspect recorder, and a temporary mitmproxy confdir (never ~/.mitmproxy)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.server import serve

from wsinspect.engine import Engine
from wsinspect.store import SessionStore


def pytest_addoption(parser):
    parser.addoption(
        "--relay",
        choices=("raw", "mitmproxy"),
        default="raw",
        help="the relay the wsinspect engines under test use after the 101 (wsinspect_relay)",
    )


@pytest.fixture
def relay_path(request) -> str:
    """The relay this run's engines use: tests whose expectations differ by path ask it."""
    return request.config.getoption("--relay")


async def wait_for(predicate: Callable[[], object], timeout: float = 5.0, what: str = ""):
    """Poll until `predicate()` is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)


async def echo_handler(ws):
    async for message in ws:
        await ws.send(message)


@pytest.fixture
async def echo_server():
    """A real websockets echo server; yields its port."""
    async with serve(echo_handler, "127.0.0.1", 0) as server:
        yield server.sockets[0].getsockname()[1]


@pytest.fixture(scope="session")
def server_cert(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, for wss:// backends."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("cert")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
async def tls_echo_server(server_cert):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*server_cert)
    async with serve(echo_handler, "127.0.0.1", 0, ssl=context) as server:
        yield server.sockets[0].getsockname()[1]


@pytest.fixture(scope="session", autouse=True)
def no_mitmproxy_home_left_behind():
    """The suite never makes ~/.mitmproxy (a machine that had one before is not judged)."""
    home = Path.home() / ".mitmproxy"
    existed = home.exists()
    yield
    assert existed or not home.exists(), f"the tests created {home}"


def mitmdump(confdir: Path) -> list[str]:
    """A mitmdump command line using `confdir`, with a HOME of its own: mitmdump makes a CA in
    ~/.mitmproxy before it reads `--set confdir` (its TLS addon is configured with the default
    when it is added, before the command line is parsed)."""
    home = confdir.parent / "mitmdump-home"
    home.mkdir(exist_ok=True)
    mitmdump = Path(sys.executable).parent / "mitmdump"
    # Unbuffered, so that "listening at" reaches a pipe at once (not only where the machine's
    # environment happens to set PYTHONUNBUFFERED).
    environment = [f"HOME={home}", "PYTHONUNBUFFERED=1"]
    return ["env", *environment, str(mitmdump), "--set", f"confdir={confdir}"]


@pytest.fixture
def confdir(tmp_path) -> Path:
    path = tmp_path / "mitmproxy-conf"
    path.mkdir()
    return path


class Proxy:
    """A running wsinspect engine and its store."""

    def __init__(self, engine: Engine, store: SessionStore, confdir: Path) -> None:
        self.engine = engine
        self.store = store
        self.confdir = confdir

    @property
    def port(self) -> int:
        return self.engine.listen_addrs()[0][1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_ssl(self) -> ssl.SSLContext:
        """A client TLS context that trusts the proxy's CA (and nothing else)."""
        return ssl.create_default_context(cafile=str(self.confdir / "mitmproxy-ca-cert.pem"))

    async def wait_session(self, predicate=lambda s: True, timeout: float = 5.0):
        return await wait_for(
            lambda: next((s for s in self.store.sessions() if predicate(s)), None),
            timeout,
            "a matching session",
        )


@pytest.fixture
async def start_proxy(tmp_path, confdir, relay_path):
    """Start a wsinspect engine on an OS-chosen loopback port; stopped at teardown. Its relay
    is the run's --relay unless `settings` names one."""
    started: list[Proxy] = []

    async def start(modes=("regular",), settings=(), capture: Path | None = None) -> Proxy:
        store = SessionStore(capture or tmp_path / f"capture{len(started)}.db")
        engine = Engine(
            store,
            modes,
            listen_port=0,
            confdir=str(confdir),
            settings=[
                *settings,
                *([] if any(s.startswith("wsinspect_relay=") for s in settings)
                  else [f"wsinspect_relay={relay_path}"]),
            ],
        )
        await engine.start()
        proxy = Proxy(engine, store, confdir)
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        await proxy.engine.stop()
        proxy.store.close()


@pytest.fixture
async def proxy(start_proxy) -> Proxy:
    return await start_proxy()
