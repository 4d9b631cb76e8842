"""A hop's messages decoded in order and kept small, for a list of millions of messages.

The app shows a label for every message and lists the session's calls, so it decodes the
whole hop once, in steps, in the background (`advance`). What it keeps per message is an
index into a table of distinct labels and protocols, and the latency of answers; the decoded
structure of one message is made again when it is asked for (`detail`), from a copy of the
protocol decoder's state saved every CHECKPOINT_EVERY messages."""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Sequence

from ..model import Hop, Message
from .parts import Part
from .session import (
    DATA_TYPES,
    DETECT_WITHIN,
    CallStats,
    Decoded,
    SessionDecoder,
    decode_from,
    decoder_for,
    detect_content,
    detect_handshake,
)

CHECKPOINT_EVERY = 256

Reader = Callable[[int, int], Sequence[Message]]


class Names:
    """Distinct strings, each stored once, by number (0 is the empty string)."""

    def __init__(self) -> None:
        self.names: list[str] = [""]
        self._ids: dict[str, int] = {"": 0}

    def id(self, name: str) -> int:
        found = self._ids.get(name)
        if found is None:
            found = self._ids[name] = len(self.names)
            self.names.append(name)
        return found


class HopTrack:
    """One hop's protocol and what each of its messages is, decoded up to `decoded`.

    Feed it with `advance(messages)`, the messages from index `position` on, in order: while
    the protocol is still being detected from the content, `position` counts the messages
    looked at; once one tells, it goes back to 0 and decoding starts from the first message."""

    def __init__(self, hop: Hop) -> None:
        self.protocol = detect_handshake(hop.request_headers, hop.response_headers, hop.url)
        self.undetected = False  # DETECT_WITHIN data messages told no protocol
        self._looked_at = 0  # messages looked at for detection
        self._data_looked_at = 0
        self._decoder = SessionDecoder(protocol=self.protocol) if self.protocol else None
        self._checkpoints: list = []
        self._labels = array("I")  # per message: the label's id in `_names`
        self._summaries = array("I")  # per message: label and operation/destination/topic
        self._protocols = array("I")  # per message: its protocol's id (socket.io, engine.io)
        self._names = Names()
        self._latency = array("d")  # per message: an answer's seconds since its call, or NaN

    @property
    def decoded(self) -> int:
        """Messages decoded so far (0 while the protocol is being detected)."""
        return len(self._labels)

    @property
    def position(self) -> int:
        return self.decoded if self._decoder else self._looked_at

    def wants(self, total: int) -> bool:
        """Whether messages up to `total` have more to tell this track."""
        return not self.undetected and self.position < total

    def advance(self, messages: Sequence[Message]) -> None:
        if self._decoder is None:
            self._detect(messages)
            return
        for message in messages:
            if self.decoded % CHECKPOINT_EVERY == 0:
                self._checkpoints.append(self._decoder.unit_state())
            found = self._decoder.feed(message)
            if found is None:
                self._labels.append(0)
                self._summaries.append(0)
                self._protocols.append(0)
                self._latency.append(math.nan)
                continue
            self._labels.append(self._names.id(found.label))
            self._summaries.append(self._names.id(found.summary))
            self._protocols.append(self._names.id(found.protocol))
            self._latency.append(math.nan if found.latency is None else found.latency)

    def _detect(self, messages: Sequence[Message]) -> None:
        for message in messages:
            self._looked_at += 1
            if message.type not in DATA_TYPES:
                continue
            if (protocol := detect_content(message)):
                self.protocol = protocol
                self._decoder = SessionDecoder(protocol=protocol)
                return  # decoding starts again from the first message
            self._data_looked_at += 1
            if self._data_looked_at >= DETECT_WITHIN:
                self.undetected = True
                return

    # ----- what a message is ---------------------------------------------------------------

    def summary(self, index: int) -> str | None:
        """The label and its operation, destination or topic; "" for a message that is not
        in the protocol (a ping frame); None when not decoded yet."""
        if index >= self.decoded:
            return None
        return self._names.names[self._summaries[index]]

    def label(self, index: int) -> str | None:
        return self._names.names[self._labels[index]] if index < self.decoded else None

    def message_protocol(self, index: int) -> str | None:
        return self._names.names[self._protocols[index]] if index < self.decoded else None

    def latency(self, index: int) -> float | None:
        if index >= self.decoded or math.isnan(latency := self._latency[index]):
            return None
        return latency

    def glance(self, message: Message) -> str:
        """The summary of a message not decoded yet, decoded alone (from the decoder's last
        saved state, past the handshakes): an answer shows its own type until the session's
        pairing gives it its call's label."""
        if self.protocol is None or message.type not in DATA_TYPES:
            return ""
        state = self._checkpoints[-1] if self._checkpoints else decoder_for(self.protocol)
        return Decoded.of(decode_from(self.protocol, state, [message])).summary

    def detail(self, index: int, read: Reader) -> Decoded | None:
        """What message `index` is, every field of it, once decoded; None otherwise. `read`
        gives messages by index range (start, stop)."""
        if index >= self.decoded or self._summaries[index] == 0:
            return None
        start = index - index % CHECKPOINT_EVERY
        parts = decode_from(self.protocol, self._checkpoints[index // CHECKPOINT_EVERY],
                            read(start, index + 1))
        decoded = Decoded.of(parts or [Part(self.protocol, "empty")])
        decoded.label = self.label(index) or decoded.label
        decoded.latency = self.latency(index)
        if len(parts) == 1 and parts[0].label is None:
            parts[0].label = decoded.label
        return decoded

    def stats(self, slowest: int = 5) -> CallStats:
        if self._decoder is None:
            return CallStats(self.protocol, 0, 0, 0, None, None, [], [])
        return self._decoder.stats(slowest)
