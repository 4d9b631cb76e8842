"""Holding WebSocket messages in flight: the rule, and one direction's queue at the raw relay.

A rule is a few space-separated terms, all of which a data message must meet:

    ~client | ~server     the direction it travels (from the client, from the server)
    ~text | ~binary       its type
    label:NAME            what it is in the session's application protocol (a Socket.IO
                          event, a JSON-RPC method, a STOMP command…: the app's Label column)
    /regex/               a regular expression searched in its text (UTF-8, invalid bytes
                          replaced)
    anything else         words searched for, as one string, in its text

e.g. `~client ~text /"op":\\s*"send"/` or `~server hello`. Control frames are never held.

`HeldQueue` is one direction of a raw-relayed WebSocket while a rule covers it: the direction
is relayed message by message (store-and-forward, so the rule can see a whole message); a
matching message is held, and the data messages and close after it wait behind it in order.
Pings and pongs between messages go on ahead of a held message (RFC 6455 §5.4 lets control
frames come between a fragmented message's frames, so a peer takes them in any place), so a
peer's keepalive is answered while a message is held; pings and pongs *inside* a fragmented
message travel with it.

A held message forwarded unchanged goes out as its original bytes; an edited one as a new
unfragmented frame (masked toward the server, RSV1 clear); a dropped one not at all. When the
message was compressed and its direction keeps its deflate context, the receiver never inflates
it, so later compressed messages of that direction could refer to bytes it never saw: from
then on the queue inflates each later compressed message (the FrameParser has) and deflates it
again with a compressor of its own, which the receiver's context follows.
"""

from __future__ import annotations

import collections
import re
import time
import zlib
from dataclasses import dataclass, field

from . import wire

FORWARDED, EDITED, DROPPED = "forwarded", "edited", "dropped"
FATES = (FORWARDED, EDITED, DROPPED)


class RuleError(ValueError):
    """A rule that cannot be read; its message is one line for the user."""


@dataclass(frozen=True, slots=True)
class Rule:
    text: str  # as the user wrote it
    from_client: bool | None = None
    type: str | None = None  # "text" | "binary"
    pattern: re.Pattern | None = None
    label: str | None = None

    def covers(self, from_client: bool) -> bool:
        return self.from_client is None or self.from_client == from_client

    def matches(self, from_client: bool, type_: str, payload: bytes,
                labels: frozenset[str] = frozenset()) -> bool:
        """`labels`: what the message is in its application protocol (asked for only when
        the rule names a label)."""
        if not self.covers(from_client) or self.type not in (None, type_):
            return False
        if self.label is not None and self.label not in labels:
            return False
        return self.pattern is None or bool(
            self.pattern.search(payload.decode("utf-8", errors="replace"))
        )


_KEYWORDS = {
    "~client": ("from_client", True),
    "~server": ("from_client", False),
    "~text": ("type", "text"),
    "~binary": ("type", "binary"),
}


def parse_rule(text: str) -> Rule | None:
    """The rule `text` says; None for an empty one (intercept off). Raises RuleError."""
    terms: dict[str, object] = {}
    words: list[str] = []
    regex: str | None = None
    for token in re.findall(r"/(?:\\.|[^/\\])*/|\S+", text.strip()):
        if token in _KEYWORDS:
            name, value = _KEYWORDS[token]
            if terms.get(name, value) != value:
                raise RuleError(f"the rule names two of {token} and its opposite")
            terms[name] = value
        elif len(token) >= 2 and token.startswith("/") and token.endswith("/"):
            if regex is not None or words:
                raise RuleError("a rule has one /regex/ or words, not both")
            regex = token[1:-1]
        elif token.startswith("label:") and len(token) > len("label:"):
            if "label" in terms:
                raise RuleError("a rule names one label:")
            terms["label"] = token[len("label:"):]
        elif token.startswith("~"):
            raise RuleError(
                f"unknown rule term {token}; use ~client, ~server, ~text, ~binary, label:NAME"
            )
        else:
            if regex is not None:
                raise RuleError("a rule has one /regex/ or words, not both")
            words.append(token)
    if not terms and regex is None and not words:
        return None
    try:
        pattern = re.compile(regex) if regex is not None else None
    except re.error as e:
        raise RuleError(f"the rule's /regex/ does not compile: {e}") from None
    if words:
        pattern = re.compile(re.escape(" ".join(words)))
    return Rule(text.strip(), pattern=pattern, **terms)


@dataclass(slots=True)
class Held:
    """A message held at the relay, until it is decided."""

    id: int
    from_client: bool
    message: wire.DataMessage
    since: float  # when it was held
    wire_bytes: bytes = b""  # its frames as they arrived
    events: list = field(default_factory=list)  # the parser's events for those bytes
    fate: str | None = None
    edited: bytes | None = None  # the payload sent instead (EDITED)
    decided_at: float | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """What the user (or the timeout) decided for a held message."""

    held: Held
    fate: str
    payload: bytes | None = None  # the payload to send instead (EDITED)


@dataclass(slots=True)
class Passing:
    """Bytes that pass unchanged (once what is held before them is decided)."""

    wire_bytes: bytes
    events: list


class HeldQueue:
    """One direction of a raw-relayed WebSocket under an intercept rule (see the module's
    docstring). `take` and `decide` return what to send now and what to record, in order:
    a list of ("send", bytes) and ("record", Passing | Held) steps."""

    def __init__(self, from_client: bool, deflate: wire.Deflate | None, offset: int,
                 at_boundary: bool) -> None:
        self.from_client = from_client
        self.deflate = deflate
        self.unsent = bytearray()  # taken bytes not yet cut into a Passing or Held
        self.events: list = []  # events for those bytes
        self.queue: collections.deque[Passing | Held] = collections.deque()
        self.mid_message = not at_boundary  # the first message began before the queue did
        self.compressor = None  # set when the receiver's deflate context left the sender's
        self.lost = False  # the parser lost the frame boundaries: bytes pass as they come
        self.offset = offset

    @property
    def idle(self) -> bool:
        """Nothing waits and no compressed message needs deflating again: the direction
        can be relayed as it arrives."""
        return not self.queue and not self.unsent and (self.compressor is None or self.lost)

    def take(self, data: bytes, events: list, matches, hold,
             at_boundary: bool = False) -> list[tuple[str, object]]:
        """`data` arrived; `events` are what the parser made of it; `at_boundary`: the parser
        is at a message boundary after it. `matches(message)` says whether a data message is
        to be held; `hold(message)` makes its Held."""
        if self.lost:
            return [("send", data)]
        self.unsent += data
        self.offset += len(data)
        steps: list[tuple[str, object]] = []
        for event in events:
            kind = type(event)
            if kind is wire.SyncLost:
                self.events.append(event)
                self.lost = True
                steps += self.release_all()
                continue
            self.events.append(event)
            if kind is wire.DataMessage:
                chunk = self._cut(event.end)
                if self.mid_message:
                    self.mid_message = False
                    steps += self._put(Passing(chunk, self._take_events()))
                elif matches(event):
                    held = hold(event)
                    held.wire_bytes, held.events = chunk, self._take_events()
                    self.queue.append(held)
                else:
                    steps += self._put(Passing(chunk, self._take_events()))
            elif kind is wire.Control and event.boundary:
                item = Passing(self._cut(event.end), self._take_events())
                if event.opcode == wire.CLOSE:
                    steps += self._put(item)
                else:  # a ping or pong between messages goes on ahead of what is held
                    steps += self._out(item)
        if at_boundary and self.unsent:  # frames that are no message (reserved opcodes)
            steps += self._put(Passing(self._cut(self.offset), self._take_events()))
        return steps

    def _cut(self, end: int) -> bytes:
        n = max(0, len(self.unsent) - (self.offset - end))
        chunk = bytes(self.unsent[:n])
        del self.unsent[:n]
        return chunk

    def _take_events(self) -> list:
        events, self.events = self.events, []
        return events

    def _put(self, item: Passing) -> list[tuple[str, object]]:
        if self.queue:
            self.queue.append(item)
            return []
        return self._out(item)

    def decide(self, held: Held, fate: str, now: float,
               payload: bytes | None = None) -> list[tuple[str, object]]:
        """Settle `held` (once); returns the steps it frees."""
        if held.fate is not None:
            return []
        held.fate, held.decided_at = fate, now
        if fate == EDITED:
            held.edited = payload
        return self._flush()

    def _flush(self) -> list[tuple[str, object]]:
        steps: list[tuple[str, object]] = []
        while self.queue and (type(self.queue[0]) is Passing or self.queue[0].fate is not None):
            steps += self._out(self.queue.popleft())
        return steps

    def release_all(self, fate: str = FORWARDED) -> list[tuple[str, object]]:
        """Settle everything undecided as `fate` and let it out (the frame boundaries were
        lost, or the sender's connection ended); the rest of the direction passes as is."""
        steps: list[tuple[str, object]] = []
        now = time.time()
        for item in self.queue:
            if type(item) is Held and item.fate is None:
                item.fate, item.decided_at = fate, now
        steps += self._flush()
        if self.unsent or self.events:
            steps += self._out(Passing(bytes(self.unsent), self._take_events()))
            self.unsent.clear()
        self.mid_message = True
        return steps

    def _out(self, item: Passing | Held) -> list[tuple[str, object]]:
        steps: list[tuple[str, object]] = [("record", item)]
        if type(item) is Held:
            message = item.message
            if item.fate == FORWARDED:
                steps.insert(0, ("send", self._reencoded(item.wire_bytes, item.events)))
                return steps
            if message.compressed and self._keeps_context() and self.compressor is None:
                self.compressor = self._new_compressor()
            if item.fate == EDITED:
                opcode = wire.TEXT if message.type == "text" else wire.BINARY
                frame = wire.encode_frame(opcode, item.edited, mask=self.from_client)
                steps.insert(0, ("send", frame))
            return steps
        if item.wire_bytes:
            steps.insert(0, ("send", self._reencoded(item.wire_bytes, item.events)))
        return steps

    def _reencoded(self, data: bytes, events: list) -> bytes:
        """`data` as is, or with its compressed message deflated again (see the docstring)."""
        if self.compressor is None:
            return data
        message = next((e for e in events if type(e) is wire.DataMessage), None)
        if message is None or not message.compressed or message.sha256 is not None:
            return data  # nothing compressed in it (or only the capped part of it is known)
        body = self.compressor.compress(message.payload) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        body = body.removesuffix(wire.DEFLATE_TAIL)
        opcode = wire.TEXT if message.type == "text" else wire.BINARY
        frame = bytearray(wire.encode_frame(opcode, body, mask=self.from_client))
        frame[0] |= 0x40  # RSV1: compressed
        controls = b"".join(  # pings and pongs that came between its frames
            wire.encode_frame(e.opcode, e.payload, mask=self.from_client)
            for e in events if type(e) is wire.Control
        )
        return bytes(frame) + controls

    def _keeps_context(self) -> bool:
        d = self.deflate
        if d is None:
            return False
        return not (d.client_no_context_takeover if self.from_client
                    else d.server_no_context_takeover)

    def _new_compressor(self):
        d = self.deflate
        bits = d.client_max_window_bits if self.from_client else d.server_max_window_bits
        return zlib.compressobj(wbits=-max(9, bits))
