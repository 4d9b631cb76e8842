"""Turning recorded data into display text: the one way text gets into the app's widgets.

Payloads, URLs, headers, addresses, close codes, hashes: whatever came from the network or a
file is data, never markup and never a terminal control. Widgets are given `SafeText` (or
strings from the helpers here); every string that enters a `SafeText` is made printable on the
way in (`printable`: ANSI/OSC escapes show as `\\x1b…` instead of acting on the terminal), so
no field can be forgotten. The other ui modules do not import rich's `Text` at all (a test
checks), and the app's `notify` does the same for notifications."""

from __future__ import annotations

import json
import time

from rich.measure import Measurement
from rich.text import Text

from ..model import Message, MessageType, Session
from ..report import _size as format_size, printable

__all__ = [
    "SafeText", "format_size", "printable", "clock", "preview", "pretty_json", "hex_dump",
    "milliseconds", "rtt_summary",
]

PREVIEW_BYTES = 512
HEX_WIDTH = 16


def safe_lines(text: str) -> str:
    """Multi-line text with every control character except the newline made visible."""
    return "\n".join(printable(line) for line in text.split("\n"))


class SafeText(Text):
    """Rich text whose every string is made printable as it enters: in the constructor, in
    `append` and in `assemble`. Newlines stay line breaks (the app's own layout); every other
    control character shows escaped. `SafeText.line(...)` also escapes newlines, for text that
    must stay on one line (table cells, the summary, notifications)."""

    one_line = False

    def __init__(self, text: str = "", *args, **kwargs) -> None:
        super().__init__(self._clean(text), *args, **kwargs)

    def _clean(self, text: str) -> str:
        return printable(text) if self.one_line else safe_lines(text)

    def append(self, text, style=None) -> "SafeText":
        if isinstance(text, str):
            text = self._clean(text)
        elif self._clean(text.plain) != text.plain:  # a Text made elsewhere, not yet safe:
            text = Text(self._clean(text.plain), style=text.style)  # its own spans go
        return super().append(text, style)

    def append_text(self, text: Text) -> "SafeText":
        return self.append(text)

    @staticmethod
    def line(text: str = "", style: str = "", **kwargs) -> "SafeText":
        """A SafeText that escapes newlines too."""
        return OneLineText(text, style=style, **kwargs)


class OneLineText(SafeText):
    one_line = True


FIELD_GAP = "  "


def fit_fields(fields: list[SafeText], width: int, gap: str = FIELD_GAP) -> SafeText:
    """`fields` on one line of `width` cells, by whole fields: those that do not fit are left
    out, except the first, which is shortened with an ellipsis instead."""
    line = SafeText.line()
    for position, field in enumerate(fields):
        room = width - line.cell_len - (len(gap) if position else 0)
        if field.cell_len <= room:
            if position:
                line.append(gap)
            line.append(field)
        elif position == 0 and room > 1:
            shortened = field.copy()
            shortened.truncate(room, overflow="ellipsis")
            line.append(shortened)
    return line


class MiddleShortened:
    """One line that, given less room than it needs, keeps its start and its end with an
    ellipsis between: URLs in a list differ at the end of their path more than at their
    host. (A renderable: it shortens to whatever width its table column has.)"""

    def __init__(self, text: SafeText) -> None:
        self.text = text

    @property
    def cell_len(self) -> int:
        return self.text.cell_len

    def __rich_measure__(self, console, options) -> Measurement:
        return Measurement(self.text.cell_len, self.text.cell_len)

    def __rich_console__(self, console, options):
        width, text = options.max_width, self.text.copy()
        if text.cell_len > width > 2:
            head = width // 3
            text = text[:head] + Text("…") + text[len(text) - (width - head - 1):]
            text.truncate(width)
        text.end, text.no_wrap = "", True
        yield text


def clock(timestamp: float, millis: bool = True) -> str:
    """Local wall-clock time of an epoch timestamp."""
    text = time.strftime("%H:%M:%S", time.localtime(timestamp))
    return f"{text}.{int(timestamp * 1000) % 1000:03d}" if millis else text


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def milliseconds(seconds: float) -> str:
    """A round-trip time as "1.2 ms" (with the report's one decimal)."""
    return f"{seconds * 1000:.1f} ms"


def rtt_summary(session: Session) -> str | None:
    """"rtt 0.4/1.2/3.0 ms": min/mean/max of the session's answered pings, or None."""
    rtt = session.ping_rtt
    if rtt is None:
        return None
    return "rtt " + "/".join(f"{value * 1000:.1f}" for value in (rtt.min, rtt.mean, rtt.max)) + " ms"


def preview(message: Message) -> str:
    """One line that says what a message holds."""
    head = message.payload[:PREVIEW_BYTES]
    if message.type is MessageType.CLOSE:
        code, reason = message.close_code_reason()
        return f"close {code if code is not None else '(no code)'} {printable(reason)}".rstrip()
    if message.type is MessageType.BINARY:
        return head[:32].hex(" ") + (" …" if message.size > 32 else "")
    return printable(head.decode("utf-8", errors="replace"))


def is_text(message: Message) -> bool:
    if message.type is MessageType.TEXT:
        return True
    if message.type is MessageType.BINARY:
        return False
    try:
        message.payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def pretty_json(payload: bytes) -> str | None:
    """The payload indented as JSON, or None when it does not parse."""
    try:
        value = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(value, (dict, list)):
        return None
    return json.dumps(value, indent=2, ensure_ascii=False)


def hex_dump(payload: bytes, offset: int = 0) -> str:
    """Classic offset / hex / ASCII dump."""
    lines = []
    for start in range(0, len(payload), HEX_WIDTH):
        chunk = payload[start : start + HEX_WIDTH]
        hex_part = " ".join(
            chunk[i : i + 8].hex(" ") for i in range(0, len(chunk), 8)
        )
        ascii_part = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{offset + start:08x}  {hex_part:<{HEX_WIDTH * 3}} {ascii_part}")
    return "\n".join(lines)
