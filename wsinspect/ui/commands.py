"""The command palette's entries for a screen, made from its key bindings.

A binding with a tooltip is a command: its description is the command's name and its tooltip
the help line. The palette then offers what the keys do, declared once, and only what they can
do right now (a binding its node's `check_action` turns off is not offered). What the app
offers on every screen (the log, the theme) are the app's own system commands."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider


class BindingCommands(Provider):
    """Commands from the bindings active on the screen the palette was opened over: its own
    and those of its focused widget (the sessions table's "Open", for one), not the app's."""

    def commands(self) -> Iterator[tuple[str, str, Callable[[], object]]]:
        seen: set[str] = set()
        for active in self.screen.active_bindings.values():
            binding = active.binding
            if active.node is self.app or not binding.tooltip or binding.description in seen:
                continue  # the app's own bindings are Textual's: its commands are its own
            seen.add(binding.description)
            yield (binding.description, binding.tooltip,
                   partial(self.app.run_action, binding.action, active.node))

    async def discover(self) -> Hits:
        for name, help_text, run in sorted(self.commands()):
            yield DiscoveryHit(name, run, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, run in self.commands():
            if (score := matcher.match(name)) > 0:
                yield Hit(score, matcher.highlight(name), run, help=help_text)
