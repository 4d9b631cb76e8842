"""Turning recorded data into display text. Payloads, URLs and headers are data, never markup:
everything here returns plain strings passed through `report.printable` (so ANSI/OSC escapes
show as `\\x1b…` instead of acting on the terminal), to be wrapped in rich `Text` objects."""

from __future__ import annotations

import json
import time

from ..model import Message, MessageType
from ..report import _size as format_size, printable

__all__ = ["format_size", "printable", "clock", "preview", "pretty_json", "hex_dump"]

PREVIEW_BYTES = 512
HEX_WIDTH = 16


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


def safe_lines(text: str) -> str:
    """Multi-line text with every control character except the newline made visible."""
    return "\n".join(printable(line) for line in text.split("\n"))


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
