"""The Textual app. Only this package imports Textual; the domain modules never do."""

from .app import WsInspectApp, run_live

__all__ = ["WsInspectApp", "run_live"]
