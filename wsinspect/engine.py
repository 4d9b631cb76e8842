"""Runs a mitmproxy Master in the caller's asyncio loop with the addons wsinspect needs.

Not DumpMaster: nothing is printed to stdout and nothing calls sys.exit; startup problems (a
port in use, a bad mode spec) become an EngineError with a one-line message, and mitmproxy's
log records are kept for the app to show.
"""

from __future__ import annotations

import collections
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mitmproxy import exceptions, master, options
from mitmproxy.addons import core, next_layer, proxyauth, proxyserver, tlsconfig, upstream_auth

from .addresses import DEFAULT_LISTEN_HOST, DEFAULT_LISTEN_PORT, is_loopback
from .errors import EngineError
from .interceptor import Interceptor
from .loopguard import LoopGuard
from .recorder import Recorder
from .resend import Resender
from .store import SessionStore

@dataclass(frozen=True, slots=True)
class LogRecord:
    timestamp: float
    level: str
    message: str


class _LogKeeper(logging.Handler):
    """Keeps the newest mitmproxy and wsinspect log records and passes them on to listeners."""

    def __init__(self, maxlen: int = 2000) -> None:
        super().__init__(logging.INFO)
        self.records: collections.deque[LogRecord] = collections.deque(maxlen=maxlen)
        self.listeners: list[Callable[[LogRecord], None]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call must not break the proxy
            message = str(record.msg)
        entry = LogRecord(record.created, record.levelname.lower(), message.splitlines()[0] if message else "")
        self.records.append(entry)
        for listener in list(self.listeners):
            listener(entry)


def reverse_target_error(spec: str) -> str | None:
    """Why `spec` is not a reverse listener wsinspect accepts, or None. mitmproxy takes
    `reverse:anything` as `reverse:https://anything:443`; a target with no scheme is far more
    often a mistake than that."""
    if not spec.startswith("reverse:"):
        return None
    target = spec[len("reverse:") :].rsplit("@", 1)[0]
    if "://" in target:
        return None
    return f"--mode {spec}: the reverse target must be a URL, e.g. reverse:http://HOST:PORT"


def listen_error(message: str) -> str:
    """mitmproxy's "[Errno 98] HTTP(S) proxy failed to listen on H:P with [Errno 98] error while
    attempting to bind on address ('H', P): address already in use" as one statement."""
    message = re.sub(r"\[Errno (-?\d+|None)\] ", "", message, flags=re.IGNORECASE)
    message = re.sub(r" out of \[\(.*?\)\]", "", message)  # Python 3.13 repeats the address
    message = re.sub(r"error while attempting to bind on address \(.*?\): ", "", message)
    message = message.replace(" with ", ": ", 1)
    if "in use" in message:
        message += " (choose another with --listen-port, or @PORT in --mode)"
    return message


class Engine:
    def __init__(
        self,
        store: SessionStore,
        modes: Sequence[str] = ("regular",),
        *,
        listen_host: str = DEFAULT_LISTEN_HOST,
        listen_port: int | None = DEFAULT_LISTEN_PORT,
        confdir: str = "~/.mitmproxy",
        settings: Sequence[str] = (),
    ) -> None:
        self.store = store
        self.modes = list(modes)
        self.listen_host = listen_host
        self.listen_port = listen_port
        self.confdir = confdir
        self.settings = list(settings)
        self.logs = _LogKeeper()
        self.master: master.Master | None = None
        self.recorder: Recorder | None = None
        self.resender: Resender | None = None  # resends messages into live sessions
        self._watched_loggers = [logging.getLogger("mitmproxy"), logging.getLogger("wsinspect")]
        self._saved_levels: list[int] = []

    async def start(self) -> None:
        """Bring the listeners up; raises EngineError when they cannot."""
        for log in self._watched_loggers:
            self._saved_levels.append(log.level)
            log.setLevel(logging.INFO)
            log.addHandler(self.logs)
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        # Before any Master exists: one shut down before its confdir is set makes a CA in the
        # default ~/.mitmproxy.
        for spec in self.modes:
            if (problem := reverse_target_error(spec)) is not None:
                raise EngineError(problem)
        opts = options.Options()
        self.master = master.Master(opts)
        self.recorder = Recorder(self.store)
        self.resender = Resender(self.recorder)
        # before the recorder: on the mitmproxy path, a held message is recorded once decided
        self.interceptor = Interceptor(self.recorder)
        self.master.addons.add(
            core.Core(),
            proxyauth.ProxyAuth(),
            proxyserver.Proxyserver(),
            next_layer.NextLayer(),
            tlsconfig.TlsConfig(),
            upstream_auth.UpstreamAuth(),
            LoopGuard(),
            self.interceptor,
            self.recorder,
            self.resender,
        )
        try:
            # On its own: an update that fails (a bad mode) is rolled back whole, and mitmproxy
            # would then make its CA in the default ~/.mitmproxy while shutting down.
            opts.update(confdir=self.confdir)
            # A reverse listener otherwise rewrites Host to its target before any hook runs:
            # wsinspect would record, and diff, a Host no proxy sent. `--set` can undo this.
            opts.update(
                mode=self.modes,
                keep_host_header=any(m.startswith("reverse:") for m in self.modes),
                listen_host=self.listen_host,
                **({"listen_port": self.listen_port} if self.listen_port is not None else {}),
            )
        except exceptions.OptionsError as e:
            raise EngineError(str(e)) from None
        self._apply_settings(opts)
        first_error = len(self.logs.records)
        server = self.master.addons.get("proxyserver")
        if not await server.setup_servers():
            records = list(self.logs.records)[first_error:]
            errors = [r.message for r in records if r.level == "error"]
            raise EngineError(listen_error(errors[-1]) if errors else "the proxy could not start")
        await self.master.running()

    def _apply_settings(self, opts: options.Options) -> None:
        """`--set NAME=VALUE`s, all at once; a failure names the option it came from (but not
        its value, which may be a credential)."""
        if not self.settings:
            return
        try:
            opts.set(*self.settings)
            return
        except exceptions.OptionsError as e:
            error = str(e)
        for setting in self.settings:  # which one? (the batch was rolled back)
            try:
                opts.set(setting)
            except exceptions.OptionsError as e:
                name = setting.split("=", 1)[0]
                # mitmproxy 11 says "Not an integer: abc"; 12 names the option itself
                raise EngineError(str(e) if name in str(e) else f"--set {name}: {e}") from None
        raise EngineError(error)

    def listen_addrs(self) -> list[tuple[str, int]]:
        if self.master is None:
            return []
        addrs = self.master.addons.get("proxyserver").listen_addrs()
        return list(dict.fromkeys(tuple(a[:2]) for a in addrs))

    def servers(self) -> list[tuple[str, list[tuple[str, int]]]]:
        """Each listener's mode spec and addresses."""
        if self.master is None:
            return []
        # A reverse listener to https:// also listens on UDP (HTTP/3), at the same address.
        return [
            (s.mode.full_spec, list(dict.fromkeys(tuple(a[:2]) for a in s.listen_addrs)))
            for s in self.master.addons.get("proxyserver").servers
        ]

    def exposed_without_auth(self) -> bool:
        """Listening beyond loopback with no proxy authentication configured."""
        if self.master is None:
            return False
        hosts = [a[0] for a in self.listen_addrs()]
        return any(not is_loopback(h) for h in hosts) and not self.master.options.proxyauth

    async def stop(self) -> None:
        if self.master is not None:
            server = self.master.addons.get("proxyserver")
            if server is not None:
                await server.servers.update([])
            await self.master.done()
            self.master = None
        self.store.flush()
        for log, level in zip(self._watched_loggers, self._saved_levels):
            log.removeHandler(self.logs)
            log.setLevel(level)
        self._saved_levels.clear()
