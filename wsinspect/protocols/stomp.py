"""STOMP 1.0–1.2 frames: `COMMAND\\nheader:value\\n…\\n\\nbody\\0`, several per message
possible; a message of bare end-of-lines is a heart-beat. A frame with a `receipt` header is
answered by a RECEIPT (or an ERROR) with that `receipt-id`."""

from __future__ import annotations

from .parts import Part

PROTOCOL = "stomp"

CLIENT_COMMANDS = {"CONNECT", "STOMP", "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "BEGIN", "COMMIT",
                   "ABORT", "ACK", "NACK", "DISCONNECT"}
SERVER_COMMANDS = {"CONNECTED", "MESSAGE", "RECEIPT", "ERROR"}
_ESCAPES = {"n": "\n", "r": "\r", "c": ":", "\\": "\\"}


def looks_like(payload: bytes) -> bool:
    head = payload.split(b"\n", 1)[0].rstrip(b"\r")
    return head in (b"CONNECT", b"STOMP", b"CONNECTED") and b"\n" in payload


def _unescape(value: str) -> str:
    out, chars = [], iter(value)
    for ch in chars:
        out.append(_ESCAPES.get(next(chars, ""), "") if ch == "\\" else ch)
    return "".join(out)


def frames(payload: bytes):
    """(command, headers, body) of each frame, ("heartbeat", {}, b"") for a message of bare
    end-of-lines; a frame cut short ends the list with what it shows. End-of-lines after a
    frame's NUL belong to that frame."""
    if payload and not payload.strip(b"\r\n"):
        yield "heartbeat", {}, b""
        return
    position = 0
    while position < len(payload):
        while position < len(payload) and payload[position] in b"\r\n":
            position += 1
        if position == len(payload):
            return
        header_end = payload.find(b"\n\n", position)
        crlf_end = payload.find(b"\r\n\r\n", position)
        if crlf_end != -1 and (header_end == -1 or crlf_end < header_end):
            head, body_start = payload[position:crlf_end], crlf_end + 4
        elif header_end != -1:
            head, body_start = payload[position:header_end], header_end + 2
        else:
            head, body_start = payload[position:], len(payload)
        lines = head.decode("utf-8", errors="replace").replace("\r\n", "\n").split("\n")
        command = lines[0]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon and name not in headers:  # the first of repeated headers counts
                if command not in ("CONNECT", "CONNECTED"):
                    name, value = _unescape(name), _unescape(value)
                headers[name] = value
        length = headers.get("content-length", "")
        if length.isdigit() and len(length) < 12:
            body_end = min(body_start + int(length), len(payload))
        else:
            body_end = payload.find(b"\0", body_start)
            body_end = len(payload) if body_end == -1 else body_end
        yield command, headers, payload[body_start:body_end]
        position = body_end + 1


class Decoder:
    def decode(self, payload: bytes, from_client: bool, is_text: bool, truncated: bool):
        parts = []
        for command, headers, body in frames(payload):
            if command == "heartbeat":
                parts.append(Part(PROTOCOL, "heartbeat"))
                continue
            known = CLIENT_COMMANDS if from_client else SERVER_COMMANDS
            if command not in known:
                parts.append(Part(PROTOCOL, "invalid", fields={"command": command}))
                continue
            fields = {"headers": headers, "body": body.decode("utf-8", errors="replace")}
            part = Part(PROTOCOL, command, destination=headers.get("destination"),
                        fields=fields)
            if from_client and "receipt" in headers:
                part.id = part.call_key = headers["receipt"]
            elif command in ("RECEIPT", "ERROR") and "receipt-id" in headers:
                part.id = part.answer_key = headers["receipt-id"]
            parts.append(part)
        return parts or [Part(PROTOCOL, "invalid")]
