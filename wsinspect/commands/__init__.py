"""The `wsinspect` commands: one module each, with its parser and its `main(argv) -> int`.

`COMMANDS` names each command's module; the dispatcher (wsinspect.cli) imports a module only
when its command runs, so `wsinspect report` loads neither the proxy nor Textual. A plain
`wsinspect [OPTIONS]` runs the proxy command (wsinspect.commands.proxy).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass

from ..text import print_error


@dataclass(frozen=True, slots=True)
class Command:
    module: str  # its `main(argv) -> int` runs the command
    usage: str  # after "wsinspect "
    summary: str  # one line for `wsinspect --help`

    def run(self, argv: Sequence[str]) -> int:
        return importlib.import_module(self.module).main(argv)


COMMANDS = {
    "report": Command(
        "wsinspect.commands.report", "report FILE...", "captures' sessions and findings (--json)"
    ),
    "open": Command("wsinspect.commands.open", "open FILE...", "browse captures in the app"),
    "export": Command(
        "wsinspect.commands.export", "export FILE... -o OUT", "a capture as HAR, flows or JSON lines"
    ),
    "replay": Command(
        "wsinspect.commands.replay",
        "replay FILE SESSION_ID",
        "replay a session, compare the answers",
    ),
    "hello": Command(
        "wsinspect.commands.hello",
        "hello [--proxy HOST:PORT]",
        "send a test session through wsinspect",
    ),
    "demo": Command(
        "wsinspect.commands.demo", "demo", "three local sessions, wsinspect and nginx"
    ),
    "gateway": Command(
        "wsinspect.commands.gateway",
        "gateway setup|teardown|check",
        "a lab gateway for transparent mode",
    ),
    "help": Command(
        "wsinspect.commands.help", "help [COMMAND]", "wsinspect's or a command's options"
    ),
}


def commands_text() -> str:
    width = max(len(c.usage) for c in COMMANDS.values())
    return "\n".join(f"  {c.usage:<{width}}  {c.summary}" for c in COMMANDS.values())


def unknown_command(word: str) -> int:
    if word in COMMANDS:  # e.g. `wsinspect -w cap.db report …`
        print_error(f"a command comes first, before any option: wsinspect {word} …")
        return 2
    print_error(
        f"{word!r} is not a wsinspect command; the commands are "
        f"{', '.join(COMMANDS)} (wsinspect --help lists them)"
    )
    return 2
