"""Holding WebSocket messages in flight (the rule and the raw relay's queue: wsinspect/intercept.py).

`Interceptor` is the mitmproxy addon: its options set the rule and the timeout,

    --set wsinspect_intercept='~client /"op":"send"/'   (empty: off)
    --set wsinspect_intercept_timeout=60                 (seconds; a held message then goes on
                                                          unchanged)

and its commands act on held messages (ids as `wsinspect.held` lists them):

    wsinspect.intercept RULE        set the rule ("" turns it off)
    wsinspect.held                  list the held messages: id, sender, type, seconds, payload
    wsinspect.forward ID            send it on as it came
    wsinspect.edit ID PAYLOAD [text|hex|base64]   send PAYLOAD instead
    wsinspect.drop ID               never send it

On the raw relay, the relay holds the message and queues the rest of its direction (see
wsinspect/intercept.py); on the mitmproxy path it is mitmproxy's flow intercept: the
websocket_message hook waits, and mitmproxy's WebSocket layer with it, so nothing of that
connection moves either way until the message is decided (mitmproxy answers no pings itself).
Python callers (the app) use `held()`, `decide()` and `set_rule()`; `listeners` are called
(with no arguments) whenever the held list changes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mitmproxy import command, ctx, exceptions, http
from wsproto.frame_protocol import Opcode

from . import seams, wire
from .errors import ResendError
from .intercept import (
    DROPPED,
    EDITED,
    FATES,
    FORWARDED,
    Decision,
    Held,
    Rule,
    RuleError,
    parse_rule,
)
from .model import Message, MessageType
from .protocols.session import SessionDecoder
from .recorder import INTERCEPT_METADATA, Recorder
from .resend import PAYLOAD_ENCODINGS, decode_payload
from .text import printable

logger = logging.getLogger("wsinspect")

DEFAULT_TIMEOUT = "60"


@dataclass(slots=True)
class _Holding:
    flow: http.HTTPFlow
    held: Held
    timer: asyncio.TimerHandle | None
    decided: bool = False


class Interceptor:
    """The addon behind `wsinspect_intercept` and the forward/edit/drop commands."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self._rule: Rule | None = None
        self._timeout = float(DEFAULT_TIMEOUT)
        self._holding: dict[int, _Holding] = {}
        self._decoders: dict[str, SessionDecoder] = {}  # flow id -> labels for label: rules
        self._ids = itertools.count(1)
        self._master = None
        self.listeners: list[Callable[[], None]] = []

    def load(self, loader) -> None:
        self._master = loader.master
        seams.register_interceptor(self, loader.master.options)
        loader.add_option(
            "wsinspect_intercept", str, "",
            "Hold WebSocket messages matching this rule until forwarded, edited or dropped: "
            "terms ~client|~server, ~text|~binary, /regex/ or words in the text. Empty: off.",
        )
        loader.add_option(  # a str: mitmproxy's --set takes no float options
            "wsinspect_intercept_timeout", str, DEFAULT_TIMEOUT,
            "Seconds a held WebSocket message waits before it is forwarded unchanged.",
        )

    def configure(self, updated) -> None:
        if "wsinspect_intercept" in updated:
            try:
                self._rule = parse_rule(ctx.options.wsinspect_intercept)
            except RuleError as e:
                raise exceptions.OptionsError(f"wsinspect_intercept: {e}") from None
            self._changed()
        if "wsinspect_intercept_timeout" in updated:
            text = ctx.options.wsinspect_intercept_timeout
            try:
                timeout = float(text)
            except ValueError:
                timeout = -1.0
            if not 0 < timeout < 1e6:
                raise exceptions.OptionsError(
                    f"wsinspect_intercept_timeout: {text!r} is not a number of seconds above 0"
                )
            self._timeout = timeout

    def done(self) -> None:
        seams.unregister_interceptor(ctx.options)

    # ----- what the raw relay asks (seams.RelayInterceptor) -----------------------------

    def rule(self) -> Rule | None:
        return self._rule

    def matches(self, flow, message: wire.DataMessage) -> bool:
        rule = self._rule
        if rule is None:
            return False
        labels: frozenset[str] = frozenset()
        if rule.label is not None:
            labels = self._labels(flow, message)
        return rule.matches(message.from_client, message.type, message.payload, labels)

    def _labels(self, flow, message: wire.DataMessage) -> frozenset[str]:
        """The message's labels in the session's protocol, from a decoder fed with the
        messages the rule looked at (the directions it covers)."""
        decoder = self._decoders.get(flow.id)
        if decoder is None:
            fields = lambda headers: [
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in headers.fields
            ]
            decoder = self._decoders[flow.id] = SessionDecoder(
                fields(flow.request.headers),
                fields(flow.response.headers) if flow.response else [],
                flow.request.url,
            )
        decoded = decoder.feed(Message(
            from_client=message.from_client, type=MessageType(message.type), size=message.size,
            payload=message.payload, timestamp=message.timestamp,
        ))
        return frozenset(p.shown_label for p in decoded.parts) if decoded else frozenset()

    def websocket_end(self, flow) -> None:
        self._decoders.pop(flow.id, None)

    def hold(self, flow, message: wire.DataMessage) -> Held:
        held = Held(next(self._ids), message.from_client, message, time.time())
        timer = asyncio.get_running_loop().call_later(
            self._timeout, self._timed_out, held.id
        )
        self._holding[held.id] = _Holding(flow, held, timer)
        self._changed()
        return held

    def settled(self, flow, held: Held) -> None:
        holding = self._holding.pop(held.id, None)
        if holding is not None and holding.timer is not None:
            holding.timer.cancel()
        self._changed()

    # ----- the mitmproxy path -----------------------------------------------------------

    async def websocket_message(self, flow: http.HTTPFlow) -> None:
        if self.recorder.relay_path() != "mitmproxy" or self._rule is None:
            return
        message = flow.websocket.messages[-1]
        kind = "text" if message.type == Opcode.TEXT else "binary"
        if message.injected:
            return
        now = time.time()
        data = wire.DataMessage(message.from_client, now, 0, True, kind, len(message.content),
                                message.content, None, False, 1, message.timestamp)
        if not self.matches(flow, data):
            return
        held = self.hold(flow, data)
        original = message.content
        flow.intercept()
        await flow.wait_for_resume()
        holding = self._holding.pop(held.id, None)
        if holding is not None and holding.timer is not None:
            holding.timer.cancel()
        if held.fate is None:  # the flow was resumed by something else (mitmproxy's own UI)
            held.fate = FORWARDED
        if held.fate == EDITED:
            message.content = held.edited
        elif held.fate == DROPPED:
            message.drop()
        flow.metadata[INTERCEPT_METADATA] = (held.fate, time.time() - held.since, original)
        self._changed()

    # ----- deciding ---------------------------------------------------------------------

    def held(self) -> list[Held]:
        """The messages held now, oldest first (decided ones wait here behind an earlier
        undecided one of their direction)."""
        return [h.held for h in self._holding.values()]

    def pending_count(self) -> int:
        return sum(not h.decided for h in self._holding.values())

    def set_rule(self, text: str) -> None:
        """Set the rule (ctx.options, so `--set` and the command agree); raises RuleError."""
        parse_rule(text)
        self._master.options.update(wsinspect_intercept=text)

    def decide(self, held_id: int, fate: str, payload: bytes | None = None) -> None:
        """Forward, edit (with `payload`) or drop a held message; raises ResendError."""
        if fate not in FATES:
            raise ResendError(f"unknown fate {fate!r}; use one of {', '.join(FATES)}")
        holding = self._holding.get(held_id)
        if holding is None or holding.decided:
            raise ResendError(f"no held message #{held_id}")
        held = holding.held
        if fate == EDITED:
            if payload is None:
                raise ResendError("an edited message needs its new payload")
            if held.message.type == "text":
                try:
                    payload.decode("utf-8")
                except UnicodeDecodeError:
                    raise ResendError("a text message's payload must be valid UTF-8") from None
        holding.decided = True
        if holding.timer is not None:
            holding.timer.cancel()
        if self.recorder.relay_path() == "mitmproxy":
            held.fate, held.edited = fate, payload if fate == EDITED else None
            held.decided_at = time.time()
            holding.flow.resume()
            return
        event = seams.HoldDecided(holding.flow, Decision(held, fate, payload))
        try:
            self._master.addons.get("proxyserver").inject_event(event)
        except ValueError:
            logger.warning(f"wsinspect: held message #{held_id}: its connection has ended")
        self._changed()

    def _timed_out(self, held_id: int) -> None:
        holding = self._holding.get(held_id)
        if holding is not None and not holding.decided:
            logger.info(f"wsinspect: held message #{held_id} timed out; forwarded unchanged")
            self.decide(held_id, FORWARDED)

    def _changed(self) -> None:
        for listener in list(self.listeners):
            listener()

    # ----- mitmproxy commands -----------------------------------------------------------

    @command.command("wsinspect.intercept")
    def command_intercept(self, rule: str = "") -> None:
        """Hold WebSocket messages matching RULE (~client|~server ~text|~binary /regex/ or
        words); an empty rule turns intercepting off."""
        try:
            self.set_rule(rule)
        except RuleError as e:
            raise exceptions.CommandError(str(e)) from None

    @command.command("wsinspect.held")
    def command_held(self) -> Sequence[str]:
        """The messages held now, one a line: id, sender, type, seconds held, the payload's
        start (escaped)."""
        now = time.time()
        lines = []
        for held in self.held():
            m = held.message
            start = m.payload[:60].decode("utf-8", errors="replace") if m.type == "text" \
                else m.payload[:24].hex(" ")
            side = "client" if held.from_client else "server"
            lines.append(f"{held.id} {side} {m.type} {now - held.since:.0f}s {printable(start)}")
        return lines

    @command.command("wsinspect.forward")
    def command_forward(self, held: int) -> None:
        """Send a held WebSocket message on unchanged."""
        self._run(held, FORWARDED)

    @command.command("wsinspect.edit")
    def command_edit(self, held: int, payload: str, encoding: str = "text") -> None:
        """Send PAYLOAD (text, hex or base64) instead of a held WebSocket message."""
        if encoding not in PAYLOAD_ENCODINGS:
            raise exceptions.CommandError(f"unknown encoding {encoding!r}")
        try:
            self.decide(held, EDITED, decode_payload(payload, encoding))
        except ResendError as e:
            raise exceptions.CommandError(str(e)) from None

    @command.command("wsinspect.drop")
    def command_drop(self, held: int) -> None:
        """Never send a held WebSocket message."""
        self._run(held, DROPPED)

    def _run(self, held: int, fate: str) -> None:
        try:
            self.decide(held, fate)
        except ResendError as e:
            raise exceptions.CommandError(str(e)) from None
