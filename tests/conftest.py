"""Real parts for the tests: WebSocket servers on OS-chosen loopback ports, a real mitmproxy
Master with the wsinspect recorder, and a temporary mitmproxy confdir (never ~/.mitmproxy).

Every test is marked `unit` or `functional` here, by what it uses: a test is functional when
it, a fixture it uses or a helper of tests/ they call names a real part (REAL_PARTS: a
socket, a process, a server, the proxy engine), or it carries an outside program's marker.
`pytest -m unit` runs the fast, socket-free rest; a unit test that opens a network socket or
starts a process all the same fails, naming what it did, so the split stays true.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import inspect
import ipaddress
import socket
import ssl
import sys
import time
import types
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


# ----- unit and functional tests ------------------------------------------------------------

# Names that, used by a test, its fixtures or the tests/ helpers they call, mean a real socket,
# process or server: modules, their functions and the helpers that wrap them.
REAL_PARTS = frozenset({
    "socket", "subprocess", "Popen", "create_subprocess_exec", "create_subprocess_shell",
    "open_connection", "start_server", "create_connection", "create_server", "serve",
    "connect", "free_port", "Engine", "Demo", "NginxProcess", "mitmdump", "fork", "pty",
    "make_lab", "to_png",  # helpers some tests import inside themselves
})  # fmt: skip
# Markers of tests that run an outside program (see pyproject.toml).
PROGRAM_MARKERS = ("nginx", "apache", "haproxy", "caddy", "squid", "netns")
WATCHED_EVENTS = ("socket.connect", "socket.bind", "subprocess.Popen", "os.fork",
                  "os.posix_spawn", "os.exec")  # fmt: skip


def _code_uses_real_parts(code: types.CodeType, namespace: dict, seen: set) -> bool:
    if code in seen:
        return False
    seen.add(code)
    for name in code.co_names:
        if name in REAL_PARTS:
            return True
        helper = namespace.get(name)
        if _helper_uses_real_parts(helper, seen):
            return True
    return any(
        _code_uses_real_parts(const, namespace, seen)
        for const in code.co_consts
        if isinstance(const, types.CodeType)
    )


def _helper_uses_real_parts(helper: object, seen: set) -> bool:
    """Whether a function or class of tests/ (not of the product or a library, whose use is
    the test's subject) uses a real part."""
    if not getattr(helper, "__module__", "").startswith("tests"):
        return False
    if inspect.isclass(helper):
        return any(
            _helper_uses_real_parts(member, seen)
            for member in vars(helper).values()
            if inspect.isfunction(member)
        )
    function = inspect.unwrap(helper) if callable(helper) else None
    if not inspect.isfunction(function):
        return False
    return _code_uses_real_parts(function.__code__, function.__globals__, seen)


def uses_real_parts(item: pytest.Item) -> bool:
    if any(item.get_closest_marker(name) for name in PROGRAM_MARKERS):
        return True
    seen: set = set()
    functions = [getattr(item, "function", None)]
    for name in getattr(item, "fixturenames", ()):
        for fixturedef in item._fixtureinfo.name2fixturedefs.get(name, ()):
            functions.append(fixturedef.func)
    for function in functions:
        function = inspect.unwrap(function) if function is not None else None
        if inspect.isfunction(function) and _code_uses_real_parts(
            function.__code__, function.__globals__, seen
        ):
            return True
    return False


def pytest_configure(config):
    config.addinivalue_line("markers", "unit: socket- and process-free (set by tests/conftest.py)")
    config.addinivalue_line(
        "markers", "functional: uses real sockets, processes or servers (set by tests/conftest.py)"
    )


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker("functional" if uses_real_parts(item) else "unit")


_watching: list[str] | None = None  # what the running unit test did that it should not
_UNIT_TRESPASS = pytest.StashKey[list]()


def _audit(event: str, args: tuple) -> None:
    if _watching is None or not event.startswith(WATCHED_EVENTS):
        return
    if event.startswith("socket.") and args[0].family not in (socket.AF_INET, socket.AF_INET6):
        return
    _watching.append(f"{event} {args[1:]!r}"[:200])


sys.addaudithook(_audit)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global _watching
    _watching = [] if item.get_closest_marker("unit") else None
    item.stash[_UNIT_TRESPASS] = _watching
    try:
        return (yield)
    finally:
        _watching = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    trespass = item.stash.get(_UNIT_TRESPASS, None)
    if call.when == "teardown" and trespass:
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} is marked unit but used a real part ({trespass[0]}); name what it "
            "calls for it in tests/conftest.py's REAL_PARTS so it is marked functional"
        )
    return report


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


@pytest.fixture
async def closed_chat(start_proxy):
    """`await closed_chat(path, capture=…)`: a new proxy through which tests/test_ui.py's `chat`
    ran and closed, its session recorded; the chat's echo server listens until the test ends
    (a replay can reach it)."""
    from tests.test_ui import chat, chat_server  # the chat the app's tests read back

    async with contextlib.AsyncExitStack() as servers:

        async def record(path: str = "/chat", capture: Path | None = None) -> Proxy:
            proxy = await start_proxy(capture=capture)
            server = await servers.enter_async_context(await chat_server())
            await chat(proxy, server.sockets[0].getsockname()[1], path)
            await proxy.wait_session(lambda s: s.outcome.value == "closed")
            return proxy

        yield record
