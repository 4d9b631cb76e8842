"""The wsinspect app as its screens and widgets reach it: typed.

Textual types `self.app` as any `App`, so `self.app.store` or `self.app.resend(...)` is not
checked. Screens and widgets that use the app's own parts mix in `AppAccess` and write
`self.wsapp.store`; Textual's own API (`push_screen`, `copy_to_clipboard`) stays `self.app`."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from textual.app import App

    from .app import WsInspectApp


class AppAccess:
    """Mixed into a DOM node (a screen or a widget), which gives it `app`."""

    if TYPE_CHECKING:
        app: App[object]

    @property
    def wsapp(self) -> WsInspectApp:
        return cast("WsInspectApp", self.app)
