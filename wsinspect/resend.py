"""Resending recorded messages into a live WebSocket session, through mitmproxy's injection.

`Resender` is a mitmproxy addon that works next to the `Recorder` it is given (the recorder
knows which mitmproxy flow carries each live hop). The Python API, for the app and scripts:

    injection = resender.inject(session_id, message_index, to=None, payload=None)

- `message_index` is the message's index in the session's first hop (as the store lists it).
- `to` is "client" or "server"; None (or "original") sends it where it originally went.
- `payload` replaces the recorded payload (bytes); a text message's must be valid UTF-8.
  `decode_payload(text, encoding)` turns what a user typed (text, hex or base64) into bytes.

It returns an `Injection` describing what was sent, or raises `ResendError` with a one-line
message; `SessionClosedError` (a `ResendError`) means the session has ended, so the caller can
offer `wsinspect.replay` instead. The injection itself runs on mitmproxy's event loop: the
recorder then records the message, marked `injected`, like any other.

The same actions are mitmproxy commands, for `mitmproxy -s addons/wsinspect.py` and scripts:

    wsinspect.resend SESSION MESSAGE [client|server|original]
    wsinspect.inject SESSION MESSAGE client|server|original PAYLOAD [text|hex|base64]
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass

from mitmproxy import command, exceptions, websocket
from mitmproxy.proxy.layers.websocket import WebSocketMessageInjected
from wsproto.frame_protocol import Opcode

from .errors import ResendError, SessionClosedError
from .model import MessageType, Outcome, Side
from .recorder import Recorder

logger = logging.getLogger("wsinspect")

DESTINATIONS = ("original", "client", "server")
PAYLOAD_ENCODINGS = ("text", "hex", "base64")


@dataclass(frozen=True, slots=True)
class Injection:
    """What was handed to mitmproxy to send."""

    session_id: int
    hop_id: int
    message_index: int  # the recorded message it was made from
    to: str  # "client" or "server"
    type: MessageType
    payload: bytes


def decode_payload(text: str, encoding: str = "text") -> bytes:
    """Bytes from a payload typed as text (UTF-8), hex (spaces allowed) or base64."""
    if encoding == "text":
        return text.encode("utf-8")
    try:
        if encoding == "hex":
            return bytes.fromhex(text)
        if encoding == "base64":
            return base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error) as e:
        raise ResendError(f"the payload is not valid {encoding}: {e}") from None
    choices = ", ".join(PAYLOAD_ENCODINGS)
    raise ResendError(f"unknown payload encoding {encoding!r}; use one of {choices}")


class Resender:
    """The addon behind `wsinspect.resend` and `wsinspect.inject`."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self._master = None

    def load(self, loader) -> None:
        self._master = loader.master

    def inject(
        self,
        session_id: int,
        message_index: int,
        to: str | None = None,
        payload: bytes | None = None,
    ) -> Injection:
        store = self.recorder.store
        if store is None or self._master is None:
            raise ResendError("the proxy is not running")
        try:
            session = store.session(session_id)
        except KeyError:
            raise ResendError(f"there is no session #{session_id}") from None
        messages = store.messages(session_id, message_index, message_index + 1)
        if message_index < 0 or not messages:
            raise ResendError(
                f"session #{session_id} has no message {message_index} "
                f"(it has {session.stats.count})"
            )
        message = messages[0]
        if message.type not in (MessageType.TEXT, MessageType.BINARY):
            raise ResendError(
                f"message {message_index} is a {message.type.value} frame; "
                "only text and binary messages can be resent"
            )
        if to in (None, "original"):
            to = message.direction.peer
        if to not in (Side.CLIENT, Side.SERVER):
            raise ResendError(f"unknown destination {to!r}; use client, server or original")
        if payload is None:
            if message.truncated:
                raise ResendError(
                    f"message {message_index} was stored truncated ({len(message.payload)} of "
                    f"{message.size} bytes); give the payload to send"
                )
            payload = message.payload
        if message.type is MessageType.TEXT:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                raise ResendError(
                    "a text message's payload must be valid UTF-8; resend it as binary data"
                ) from None
        flow, hop_id = self._live_flow(session)
        ws_message = websocket.WebSocketMessage(
            Opcode.TEXT if message.type is MessageType.TEXT else Opcode.BINARY,
            to == "server",  # from_client: a message for the server comes from the client side
            payload,
        )
        try:
            self._master.addons.get("proxyserver").inject_event(
                WebSocketMessageInjected(flow, ws_message)
            )
        except ValueError:
            raise SessionClosedError(self._closed_message(session_id)) from None
        logger.info(
            f"wsinspect: injected {message.type.value} message ({len(payload)} bytes) "
            f"to the {to} of session #{session_id}"
        )
        return Injection(session_id, hop_id, message_index, to, message.type, payload)

    def _live_flow(self, session):
        """The flow to inject into: the client-most hop this proxy still has open."""
        for hop in session.hops:
            flow = self.recorder.live_flow(hop.id)
            if flow is not None and flow.websocket is not None and flow.live:
                return flow, hop.id
        if session.outcome is Outcome.OPEN and session.status is None:
            raise ResendError(f"session #{session.id} has not finished its handshake yet")
        if session.outcome is Outcome.OPEN:
            raise ResendError(f"session #{session.id} is not live in this proxy")
        raise SessionClosedError(self._closed_message(session.id))

    @staticmethod
    def _closed_message(session_id: int) -> str:
        return (
            f"session #{session_id} is closed, so nothing can be sent into it; "
            f"replay it on a new connection instead (wsinspect replay CAPTURE {session_id})"
        )

    # ----- mitmproxy commands --------------------------------------------------------------

    @command.command("wsinspect.resend")
    def command_resend(self, session: int, message: int, to: str = "original") -> None:
        """Resend a recorded message of a live session, to its original destination or to
        "client" or "server"."""
        self._run(session, message, to, None)

    @command.command("wsinspect.inject")
    def command_inject(
        self, session: int, message: int, to: str, payload: str, encoding: str = "text"
    ) -> None:
        """Send an edited copy of a recorded message into a live session: `payload` is text,
        hex or base64 (`encoding`); `to` is client, server or original."""
        try:
            data = decode_payload(payload, encoding)
        except ResendError as e:
            raise exceptions.CommandError(str(e)) from None
        self._run(session, message, to, data)

    def _run(self, session: int, message: int, to: str, payload: bytes | None) -> None:
        try:
            self.inject(session, message, to, payload)
        except ResendError as e:
            raise exceptions.CommandError(str(e)) from None
