"""The wsinspect app as its screens and widgets reach it: typed.

Textual types `self.app` as any `App`, so `self.app.store` or `self.app.resend(...)` is not
checked. Screens and widgets that use the app's own parts mix in `AppAccess` and write
`self.wsapp.store`; Textual's own API (`push_screen`, `copy_to_clipboard`) stays `self.app`.
`WsInspectApp` is described here by what the screens use of it (`InspectorApp`) rather than
imported, since the app imports every screen."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

if TYPE_CHECKING:
    from rich.console import Group
    from textual.app import App
    from textual.signal import Signal

    from ..engine import LogRecord
    from ..resend import Injection
    from ..store import SessionStore, StoreChanges
    from .colours import Colours
    from .format import SafeText
    from .pacing import LoopLoad


class InspectorApp(Protocol):
    """What screens and widgets use of `WsInspectApp` (wsinspect/ui/app.py)."""

    store: SessionStore
    clock: Callable[[], float]
    loop_load: LoopLoad
    store_changed_signal: Signal[StoreChanges]
    log_arrived_signal: Signal[LogRecord]

    def log_records(self) -> list[LogRecord]: ...
    def status_fields(self, colours: Colours) -> list[SafeText]: ...
    def empty_state(self) -> Group: ...
    def notify_problem(self, text: str, title: str = "") -> None: ...
    def live_proxy_missing(self, what: str) -> bool: ...
    def resend(
        self, session_id: int, index: int, to: str | None, payload: bytes | None = None
    ) -> Injection | None: ...
    def replay_session(self, session_id: int) -> None: ...
    def export_sessions(self, session_id: int | None) -> None: ...
    def open_session(self, session_id: int) -> None: ...


class AppAccess:
    """Mixed into a DOM node (a screen or a widget), which gives it `app`."""

    if TYPE_CHECKING:
        app: App[object]

    @property
    def wsapp(self) -> InspectorApp:
        return cast("InspectorApp", self.app)
