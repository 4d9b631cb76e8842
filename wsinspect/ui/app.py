"""The wsinspect app: sessions list, session view, log, in one Textual App.

The app talks to the core through a small interface: it subscribes to the store's change
batches and to the engine's log records, turns each into a Textual message, and reads sessions
and messages from the store. It never starts or stops the proxy; `run_live` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections.abc import Callable, Iterable

from rich.console import Group
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.signal import Signal

from ..engine import Engine, LogRecord
from ..errors import WsinspectError
from ..formats import export
from ..lineup import LinedUpStore
from ..replay import ProxyRoute, ReplayPlan, replay
from ..resend import Injection, SessionClosedError
from ..runtime import Stopped, run_until_stopped
from ..store import SessionStore, StoreChanges
from .colours import Colours
from .dialogs import ComparisonScreen, ExportRequest, ExportScreen
from .format import SafeText, printable
from .intercept import HeldScreen, RuleScreen, intercept_fields
from .logs import LogScreen
from .pacing import SAMPLE_INTERVAL, LoopLoad
from .session_view import SessionScreen
from .sessions import SessionsScreen

THEMES = ("textual-dark", "textual-light")
PROBLEM_LEVELS = ("warning", "error")


def listener_label(spec: str, addrs: list[tuple[str, int]]) -> str:
    """A listener's mode without its `@port` when the address beside it shows the port."""
    mode, at, port = spec.rpartition("@")
    if at and port.isdigit() and any(p == int(port) for _, p in addrs):
        return mode
    return spec


def settle_heap() -> None:
    """Keep the garbage collector's full passes from stalling the screen.

    What exists once the first screen is up (mitmproxy, Textual, the widgets: ~130,000
    objects) lives as long as the app, so it is frozen out of collection. Under live traffic
    a full pass still walks everything made since (20-40 ms), and by default runs about once
    a second at 20,000 messages a second: one per 100 middle-generation passes instead.
    Reference counting frees almost everything anyway; full passes only find cycles."""
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 100)


class StoreChanged(Message):
    def __init__(self, changes: StoreChanges) -> None:
        super().__init__()
        self.changes = changes


class LogArrived(Message):
    def __init__(self, record: LogRecord) -> None:
        super().__init__()
        self.record = record


def client_examples(spec: str, host: str, port: int) -> list[str]:
    """Commands that send a WebSocket through a listener of mode `spec`, each short enough
    for one line at 80 columns and working when pasted: through a regular proxy, a test
    session to a local echo server; into a reverse proxy, websockets' interactive client."""
    kind = spec.split(":", 1)[0].split("@", 1)[0]
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if kind == "regular":
        return [f"wsinspect hello --proxy {address}"]
    if kind == "reverse":
        return [f"python -m websockets ws://{address}/"]
    return []


def home_relative(path: str) -> str:
    """`path` with the home directory written as ~ (shorter, and a shell expands it)."""
    home = os.path.expanduser("~")
    expanded = os.path.expanduser(path)
    if home not in ("", "/") and expanded.startswith(home + os.sep):
        return "~" + expanded[len(home):]
    return expanded


def command_line(command: str) -> SafeText:
    """A command to paste, on a line of its own, short enough for 80 columns; only one
    longer than the screen (a long confdir) is folded."""
    return SafeText.line(f"  {command}", style="bold", overflow="fold")


class WsInspectApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "wsinspect"
    BINDINGS = [
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(
        self,
        store: SessionStore,
        engine: Engine | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.store = store
        self.engine = engine
        self.clock = clock
        self.theme = THEMES[0]
        self._unsubscribe: Callable[[], None] | None = None
        self._counted_messages = self._message_total()
        self.messages_per_second = 0.0
        self.problems = 0
        self.loop_load = LoopLoad()
        # Screens and widgets subscribe on mount; Textual drops a subscriber once it is gone.
        self.store_changed_signal: Signal[StoreChanges] = Signal(self, "store-changed")
        self.log_arrived_signal: Signal[LogRecord] = Signal(self, "log-arrived")

    # ----- wiring to the core --------------------------------------------------------------

    def on_mount(self) -> None:
        self._unsubscribe = self.store.subscribe(lambda c: self.post_message(StoreChanged(c)))
        if self.engine is not None:
            self.engine.logs.listeners.append(self._log_listener)
        self.set_interval(1.0, self._measure_rate)
        self.store.notify_interval = self.loop_load.notify_interval
        self.set_interval(SAMPLE_INTERVAL, self._sample_load)
        self.call_after_refresh(settle_heap)

    def get_default_screen(self) -> Screen:
        return SessionsScreen()

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self.engine is not None and self._log_listener in self.engine.logs.listeners:
            self.engine.logs.listeners.remove(self._log_listener)

    def _log_listener(self, record: LogRecord) -> None:
        self.post_message(LogArrived(record))

    def _sample_load(self) -> None:
        self.loop_load.sample()
        self.store.notify_interval = self.loop_load.notify_interval

    def on_store_changed(self, event: StoreChanged) -> None:
        self.store_changed_signal.publish(event.changes)

    def on_log_arrived(self, event: LogArrived) -> None:
        record = event.record
        if record.level in PROBLEM_LEVELS:
            self.problems += 1
        if record.level == "error":
            self.notify(record.message, title="proxy error", severity="error")
        self.log_arrived_signal.publish(record)

    def log_records(self) -> list[LogRecord]:
        return list(self.engine.logs.records) if self.engine is not None else []

    # ----- status --------------------------------------------------------------------------

    def _message_total(self) -> int:
        return sum(s.stats.count for s in self.store.sessions())

    def _measure_rate(self) -> None:
        total = self._message_total()
        self.messages_per_second = total - self._counted_messages
        self._counted_messages = total

    def status_fields(self, colours: Colours) -> list[SafeText]:
        """The status line's parts, most telling first: the status bar leaves out whole
        parts from the end when the screen is narrow."""
        fields = [SafeText.line(" wsinspect ", style="bold reverse")]
        if self.engine is not None:
            for spec, addrs in self.engine.servers():
                listening = ", ".join(f"{h}:{p}" for h, p in addrs)
                fields.append(SafeText.line(f"{listener_label(spec, addrs)} {listening}"))
            fields.append(SafeText.line(f"{self.messages_per_second:.0f} msg/s"))
            if self.loop_load.saturated:
                fields.append(SafeText.line("proxy busy, screen paced", style="bold"))
            fields += intercept_fields(self.engine.interceptor)
        elif isinstance(self.store, LinedUpStore):  # wsinspect open a.db b.db
            fields.append(SafeText.line(self.store.status_text()))
        else:
            where = str(self.store.path) if self.store.path else "(in memory)"
            fields.append(SafeText.line(f"capture {where}"))
        if self.problems:
            fields.append(SafeText.line(f"{self.problems} problems, press l",
                                        style=colours["status--problems"]))
        sessions = self.store.sessions()
        by_outcome: dict[str, int] = {}
        for session in sessions:
            by_outcome[session.outcome.value] = by_outcome.get(session.outcome.value, 0) + 1
        counts = ", ".join(f"{n} {outcome}" for outcome, n in sorted(by_outcome.items()))
        noun = "session" if len(sessions) == 1 else "sessions"
        fields.append(SafeText.line(f"{len(sessions)} {noun}" + (f" ({counts})" if counts else "")))
        return fields

    def empty_state(self) -> Group:
        """What to do when there are no sessions: prose wraps, commands to paste never do."""
        if self.engine is None:
            return Group(SafeText("This capture holds no WebSocket sessions.", style="bold"))
        parts: list[SafeText] = [SafeText("No WebSocket sessions yet.\n", style="bold")]
        for spec, addrs in self.engine.servers():
            for host, port in addrs:
                parts.append(SafeText(
                    f"The {listener_label(spec, addrs)} proxy listens at {host}:{port}."
                ))
                examples = client_examples(spec, host, port)
                if examples:
                    parts.append(SafeText("Send a WebSocket through it, for example:"))
                    parts += [command_line(example) for example in examples]
                else:
                    parts.append(
                        SafeText("Route a client's traffic through this machine to see it here.")
                    )
        parts += [
            SafeText("\nOr see every screen with sample sessions (a proxy of its own):"),
            command_line("wsinspect demo"),
            SafeText("\nFor wss://, the client must trust the proxy's CA (as root):"),
            command_line(f"cp {home_relative(self.engine.confdir)}/mitmproxy-ca-cert.pem \\"),
            command_line("   /usr/local/share/ca-certificates/mitmproxy.crt"),
            command_line("update-ca-certificates"),
            SafeText("or hand the file to the client (Python: ssl=, Node: NODE_EXTRA_CA_CERTS)."),
            SafeText("\nPress l for the proxy's log, ctrl+p for all commands, q to quit."),
        ]
        return Group(*parts)

    # ----- what reaches the terminal -------------------------------------------------------

    def notify(self, message: str, *, title: str = "", severity="information",
               timeout: float | None = None, markup: bool = False) -> None:
        """Every notification, the widgets' too: shown as data (made printable, no markup)."""
        super().notify(printable(message), title=printable(title), severity=severity,
                       timeout=timeout, markup=False)

    # ----- resend, replay, export ----------------------------------------------------------

    def notify_problem(self, text: str, title: str = "") -> None:
        self.notify(text, title=title, severity="error", timeout=8)

    def live_proxy_missing(self, what: str) -> bool:
        """Without a running proxy (wsinspect open FILE), say so; True when missing."""
        if self.engine is not None and self.engine.resender is not None:
            return False
        self.notify_problem(
            f"{what} needs a live proxy; this is a capture file. Start wsinspect as a proxy, "
            "or replay from the shell: wsinspect replay FILE SESSION_ID"
        )
        return True

    def resend(
        self, session_id: int, index: int, to: str | None, payload: bytes | None = None
    ) -> Injection | None:
        if self.live_proxy_missing("Resending"):
            return None
        try:
            injection = self.engine.resender.inject(session_id, index, to, payload)
        except SessionClosedError as e:
            self.notify_problem(f"{e}; or press p to replay it here", "cannot resend")
            return None
        except WsinspectError as e:
            self.notify_problem(str(e), "cannot resend")
            return None
        self.notify(
            f"sent {injection.type.value} message ({len(injection.payload)} bytes) to the "
            f"{injection.to} of session #{session_id}",
            timeout=3,
        )
        return injection

    def replay_session(self, session_id: int) -> None:
        if self.live_proxy_missing("Replaying"):
            return
        try:
            plan = ReplayPlan.from_store(self.store, session_id)
            route = ProxyRoute.for_engine(self.engine)
        except WsinspectError as e:
            self.notify_problem(str(e), "cannot replay")
            return
        self.notify(f"replaying session #{session_id} through the proxy…", timeout=3)
        self.run_worker(self._replay(plan, route), group="replay")

    async def _replay(self, plan: ReplayPlan, route: ProxyRoute) -> None:
        try:
            result = await replay(plan, self.store, via=route)
        except WsinspectError as e:
            self.notify_problem(str(e), f"replay of session #{plan.original.id} failed")
            return
        title = f"Replay of session #{plan.original.id}: new session #{result.session.id}"
        self.push_screen(ComparisonScreen(title, result.comparison.lines()))

    def export_sessions(self, session_id: int | None) -> None:
        """Ask where to, then export `session_id` (or all sessions), redacted by default."""
        stem = f"wsinspect-{session_id}" if session_id is not None else "wsinspect-sessions"

        def write(request: ExportRequest | None) -> None:
            if request is None:
                return
            ids = None if request.all_sessions else [session_id]
            try:
                result = export(self.store, request.path, request.fmt, redact=request.redact,
                                session_ids=ids)
            except (WsinspectError, OSError) as e:
                self.notify_problem(str(e), "export failed")
                return
            redacted = "redacted" if request.redact else "NOT redacted"
            self.notify(
                f"exported {result.sessions} session{'s' if result.sessions != 1 else ''} "
                f"({result.messages} messages, {redacted}) "
                f"to {request.path} as {request.fmt}",
            )

        self.push_screen(ExportScreen(stem, session_id), write)

    # ----- actions -------------------------------------------------------------------------

    def action_export(self) -> None:
        self.export_sessions(None)

    def open_session(self, session_id: int) -> None:
        self.push_screen(SessionScreen(session_id))

    def action_intercept(self) -> None:
        if self.live_proxy_missing("Intercepting"):
            return
        interceptor = self.engine.interceptor
        current = interceptor.rule()

        def set_rule(rule: str | None) -> None:
            if rule is not None:
                interceptor.set_rule(rule)
                self.notify(f"holding messages matching {rule}" if rule else "intercept off",
                            timeout=3)

        self.push_screen(RuleScreen(current.text if current else ""), set_rule)

    def action_held(self) -> None:
        if not self.live_proxy_missing("Intercepting"):
            self.push_screen(HeldScreen(self.engine.interceptor))

    def action_show_log(self) -> None:
        if not isinstance(self.screen, LogScreen):
            self.push_screen(LogScreen())

    def action_toggle_theme(self) -> None:
        self.theme = THEMES[(THEMES.index(self.theme) + 1) % len(THEMES)] if (
            self.theme in THEMES
        ) else THEMES[0]

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        """The app's commands, on every screen; each screen adds its own (BindingCommands)."""
        yield from super().get_system_commands(screen)
        yield SystemCommand("Show log", "The proxy's log records and errors", self.action_show_log)
        yield SystemCommand(
            "Toggle dark/light", "Switch between the dark and light theme", self.action_toggle_theme
        )


async def run_live(store: SessionStore, engine: Engine, stop: asyncio.Event) -> None:
    """Run the app on the current loop next to the running engine until the user quits or
    `stop` is set (a signal)."""
    app = WsInspectApp(store, engine)
    with contextlib.suppress(Stopped):
        await run_until_stopped(app.run_async(), stop, end=app.exit)
