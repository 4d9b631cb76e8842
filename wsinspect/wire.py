"""The passive WebSocket frame parser that runs beside the raw relay.

One `FrameParser` per direction of a session is fed exactly the bytes the relay forwards, in
order and in whatever pieces they arrived. It finds frame boundaries, unmasks, joins fragments
into messages, inflates permessage-deflate for the record and reports every RFC 6455 rule a
frame breaks, without ever refusing a byte: the relay forwards regardless, and nothing raised
here may stop it. Memory per message is bounded by `max_payload` (bytes past it are hashed and
dropped as they arrive), a frame header and zlib's window.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import os
import time
import zlib
from dataclasses import dataclass

from wsinspect.http_rules import close_code_reason
from wsinspect.model import header_values

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
KNOWN_OPCODES = frozenset((CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG))

# Close codes a peer may put on the wire (RFC 6455 §7.4.1 and the IANA registry); 1004-1006
# and 1015 are reserved or local-only, 1016-2999 unassigned, 3000-4999 for libraries and apps.
VALID_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                               1013, 1014))

RSV_WITHOUT_EXTENSION = "RFC 6455 §5.2: RSV bit set without a negotiated extension"
RSV1_NOT_FIRST = ("RFC 7692 §6: RSV1 (compressed) set on a control frame or on a fragment "
                  "after the first")
RESERVED_OPCODE = "RFC 6455 §5.2: reserved opcode"
CONTROL_TOO_LONG = "RFC 6455 §5.5: control frame payload longer than 125 bytes"
CONTROL_FRAGMENTED = "RFC 6455 §5.5: control frame fragmented (FIN clear)"
CLIENT_UNMASKED = "RFC 6455 §5.3: client frame not masked"
SERVER_MASKED = "RFC 6455 §5.1: server frame masked"
ORPHAN_CONTINUATION = "RFC 6455 §5.4: continuation frame without a message to continue"
DATA_INSIDE_MESSAGE = "RFC 6455 §5.4: new data frame inside a fragmented message"
INVALID_UTF8 = "RFC 6455 §8.1: text message is not valid UTF-8"
CLOSE_ONE_BYTE = "RFC 6455 §5.5.1: close payload of 1 byte (a code takes 2)"
INVALID_CLOSE_CODE = "RFC 6455 §7.4: invalid close code"
CLOSE_REASON_UTF8 = "RFC 6455 §5.5.1: close reason is not valid UTF-8"
NON_MINIMAL_LENGTH = "RFC 6455 §5.2: payload length not in the minimal number of bytes"
LENGTH_TOP_BIT = "RFC 6455 §5.2: 64-bit payload length with the most significant bit set"
INFLATE_FAILED = "RFC 7692 §7.2.2: compressed message does not inflate"
FRAME_AFTER_CLOSE = "RFC 6455 §5.5.1: frame sent after a Close frame"

# A header breaking this many framing rules at once is taken for garbage, not a frame.
GARBAGE_FAULTS = 3
INFLATE_CHUNK = 256 * 1024  # most bytes one zlib call may produce (deflate-bomb bound)
UTF8_CHUNK = 64 * 1024  # most bytes decoded at once to validate UTF-8
DEFLATE_TAIL = b"\x00\x00\xff\xff"  # RFC 7692 §7.2.2: appended before inflating a message


@dataclass(frozen=True, slots=True)
class Deflate:
    """permessage-deflate as the 101 response negotiated it."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int = 15
    client_max_window_bits: int = 15


@dataclass(slots=True)
class WireEvent:
    from_client: bool
    timestamp: float  # of the feed that completed the event
    end: int  # stream offset just after its last byte
    boundary: bool  # the stream is at a message boundary right after `end`


@dataclass(slots=True)
class DataMessage(WireEvent):
    type: str  # "text" | "binary"
    size: int  # bytes after inflate
    payload: bytes  # the first max_payload bytes, unmasked and inflated
    sha256: str | None  # hex of the whole payload, set when size > max_payload
    compressed: bool
    frames: int
    timestamp_start: float


@dataclass(slots=True)
class Control(WireEvent):
    opcode: int  # CLOSE, PING or PONG
    payload: bytes  # as on the wire, unmasked: an empty close payload stays b""

    def close_code_reason(self) -> tuple[int | None, str]:
        """Code and reason of a close frame; (None, "") when the payload carries no code."""
        return close_code_reason(self.payload) if self.opcode == CLOSE else (None, "")


@dataclass(slots=True)
class Violation(WireEvent):
    rule: str  # the RFC section and the rule in words
    detail: str
    opcode: int | None


@dataclass(slots=True)
class SyncLost(WireEvent):
    detail: str


_XOR_TABLES = [bytes(a ^ b for a in range(256)) for b in range(256)]


def unmask_python(data: bytes, key: bytes) -> bytes:
    """`data` XORed with the 4-byte `key` repeated, in pure Python: one int XOR for short data,
    four strided byte translations (faster from about 512 bytes) for longer."""
    n = len(data)
    if n < 512:
        if not n:
            return b""
        mask = (key * ((n >> 2) + 1))[:n]
        return (int.from_bytes(data, "little") ^ int.from_bytes(mask, "little")).to_bytes(
            n, "little")
    out = bytearray(data)
    for lane in range(4):
        out[lane::4] = out[lane::4].translate(_XOR_TABLES[key[lane]])
    return bytes(out)


try:  # websockets' C extension masks at tens of GB/s where Python manages hundreds of MB/s
    from websockets.speedups import apply_mask as unmask_c
except ImportError:  # websockets is not installed, or was installed without its C extension
    unmask_c = None

# unmask(data, key): `data` XORed with the 4-byte `key` repeated (masking is the same thing)
unmask = unmask_python if unmask_c is None else unmask_c


def encode_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool) -> bytes:
    """One frame with RSV bits clear; `mask` picks a random key (frames toward the server)."""
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head = bytes((first, mask_bit | n))
    elif n < 0x10000:
        head = bytes((first, mask_bit | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, mask_bit | 127)) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + unmask(payload, key)


_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_WINDOW_BITS = {str(bits): bits for bits in range(8, 16)}


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t":
        i += 1
    return i


def parse_extensions(value: str) -> list[tuple[str, list[tuple[str, str | None]]]] | None:
    """The extensions of a Sec-WebSocket-Extensions value (RFC 6455 §9.1), each its lower-cased
    name and its (name, value or None) parameters, quoted values unquoted; None if malformed."""
    extensions: list[tuple[str, list[tuple[str, str | None]]]] = []
    items: list[tuple[str, str | None]] = []
    i, n = 0, len(value)
    while True:
        i = _skip_space(value, i)
        j = i
        while j < n and value[j] in _TCHAR:
            j += 1
        if j == i:
            if items:  # a ";" or "=" without a name after it
                return None
            if j == n:
                break
            if value[j] != ",":
                return None
            i = j + 1  # an empty list element
            continue
        name = value[i:j].lower()
        i = _skip_space(value, j)
        param: str | None = None
        if i < n and value[i] == "=":
            if not items:
                return None  # the extension name itself takes no value
            i = _skip_space(value, i + 1)
            if i < n and value[i] == '"':
                chars = []
                i += 1
                while i < n and value[i] != '"':
                    if value[i] == "\\":
                        i += 1
                        if i == n:
                            return None
                    chars.append(value[i])
                    i += 1
                if i == n:
                    return None  # unterminated quoted string
                param = "".join(chars)
                i += 1
            else:
                j = i
                while j < n and value[j] in _TCHAR:
                    j += 1
                if j == i:
                    return None
                param = value[i:j]
                i = j
            i = _skip_space(value, i)
        items.append((name, param))
        if i == n or value[i] == ",":
            extensions.append((items[0][0], items[1:]))
            items = []
            if i == n:
                break
        elif value[i] != ";":
            return None
        i += 1
    return extensions


def negotiated_deflate(response_headers: list[tuple[str, str]]) -> Deflate | None:
    """permessage-deflate as the Sec-WebSocket-Extensions of a 101 response accepted it; None
    when not negotiated or when the header is anything a client would refuse."""
    try:
        values = header_values(response_headers, "Sec-WebSocket-Extensions")
    except (TypeError, ValueError, AttributeError):
        return None
    if not values or not all(isinstance(v, str) for v in values):
        return None
    extensions = parse_extensions(",".join(values))
    if extensions is None:
        return None
    accepted = [params for name, params in extensions if name == "permessage-deflate"]
    if len(accepted) != 1:
        return None
    found: dict[str, bool | int] = {}
    for name, value in accepted[0]:
        if name in found:
            return None
        if name in ("server_no_context_takeover", "client_no_context_takeover"):
            if value is not None:
                return None
            found[name] = True
        elif name in ("server_max_window_bits", "client_max_window_bits"):
            if value not in _WINDOW_BITS:
                return None
            found[name] = _WINDOW_BITS[value]
        else:
            return None
    return Deflate(**found)  # type: ignore[arg-type]


def _header_length(b1: int) -> int:
    """Length of a frame header from its second byte."""
    code = b1 & 0x7F
    return 2 + (4 if b1 & 0x80 else 0) + (2 if code == 126 else 8 if code == 127 else 0)


_DATA, _CONTROL, _SKIP = 0, 1, 2  # what a frame's payload goes to
_TYPE_NAMES = {TEXT: "text", BINARY: "binary"}


class FrameParser:
    """The frames and messages of one direction of a WebSocket, from its raw bytes."""

    __slots__ = (
        "from_client", "deflate", "max_payload", "offset", "in_sync",
        "_events", "_ts", "_head", "_head_ts", "_frame_ts", "_remaining",
        "_fin", "_opcode", "_key", "_frame_pos", "_kind", "_faults", "_closed", "_ctl",
        "_msg_open", "_msg_type", "_msg_compressed", "_msg_tail", "_msg_failed", "_msg_frames",
        "_msg_start", "_msg_end", "_msg_faults", "_msg_wire", "_first", "_buf", "_size", "_hash", "_utf8",
        "_utf8_bad",
        "_inflater", "_wbits", "_no_takeover",
    )  # fmt: skip

    def __init__(self, from_client: bool, deflate: Deflate | None = None,
                 max_payload: int = 16 * 1024 * 1024) -> None:
        self.from_client = from_client
        self.deflate = deflate
        self.max_payload = max_payload
        self.offset = 0
        self.in_sync = True
        self._events: list[WireEvent] = []
        self._ts = 0.0
        self._head = b""  # the start of a frame header split across feeds
        self._head_ts = self._frame_ts = 0.0  # when that start, and the current frame, arrived
        self._remaining = 0  # payload bytes of the current frame still to come; 0: a header next
        self._fin = False
        self._opcode = 0
        self._key: bytes | None = None
        self._frame_pos = 0
        self._kind = _DATA
        self._faults: list[tuple[str, str]] | None = None
        self._closed = False
        self._ctl = bytearray()
        self._reset_message()
        self._inflater = None
        # Inflate with the window the peer agreed to, as its receiver does. (zlib cannot deflate
        # raw with an 8-bit window, so zlib-based peers agree to 9 at least, and its 9-bit
        # deflate keeps distances under 251 bytes, which an 8-bit inflater takes.)
        if deflate is None:
            self._wbits, self._no_takeover = -15, False
        elif from_client:
            self._wbits = -deflate.client_max_window_bits
            self._no_takeover = deflate.client_no_context_takeover
        else:
            self._wbits = -deflate.server_max_window_bits
            self._no_takeover = deflate.server_no_context_takeover

    @property
    def at_message_boundary(self) -> bool:
        """The bytes fed so far end at a frame end with no fragmented data message open."""
        return self.in_sync and not self._remaining and not self._head and not self._msg_open

    def feed(self, data: bytes, timestamp: float | None = None) -> list[WireEvent]:
        """The events the bytes `data` complete. Never raises: the relay forwards regardless."""
        n = len(data)
        base = self.offset
        self.offset = base + n
        if not n or not self.in_sync:
            return []
        self._ts = time.time() if timestamp is None else timestamp
        self._events = events = []
        try:
            self._consume(data if type(data) is bytes else bytes(data), base, n)
        except Exception as exc:  # noqa: BLE001 - a parser bug must not take the relay down
            self._lose_sync(self.offset, f"parser error at this point: {exc!r}")
        return events

    def _consume(self, data: bytes, base: int, n: int) -> None:
        pos = 0
        while pos < n:
            remaining = self._remaining
            if not remaining:
                head = self._head
                if head:
                    buf = head + data[pos:pos + 14]
                    need = _header_length(buf[1])
                    if len(buf) < need:  # all of data went into it
                        self._head = buf
                        return
                    pos += need - len(head)
                    self._head = b""
                    self._frame_ts = self._head_ts
                    self._header(buf, 0, base + pos)
                else:
                    pos = self._whole_frames(data, pos, n, base)
                    if pos == n:
                        return
                    need = _header_length(data[pos + 1]) if n - pos > 1 else 2
                    if n - pos < need:
                        self._head = data[pos:]
                        self._head_ts = self._ts
                        return
                    pos += need
                    self._frame_ts = self._ts
                    self._header(data, pos - need, base + pos)
                if not self.in_sync:
                    return
                continue
            take = n - pos
            if take > remaining:
                take = remaining
            chunk = data[pos:pos + take] if take != n else data
            pos += take
            key = self._key
            if key is not None:
                phase = self._frame_pos & 3
                if phase:
                    key = key[phase:] + key[:phase]
                chunk = unmask(chunk, key)
            self._frame_pos += take
            self._remaining = remaining = remaining - take
            kind = self._kind
            if kind == _DATA:
                if self._msg_compressed:
                    if not remaining and self._fin:
                        chunk += DEFLATE_TAIL
                        self._msg_tail = True
                    self._inflate(chunk)
                else:
                    self._append(chunk)
            elif kind == _CONTROL:
                room = self.max_payload - len(self._ctl)
                if room > 0:
                    self._ctl += chunk[:room]
            if not remaining:
                self._frame_end(base + pos)

    def _whole_frames(self, data: bytes, pos: int, n: int, base: int) -> int:
        """Parse the frames at data[pos:] that are whole, rule-abiding, unfragmented messages
        or pings and pongs within the cap: the common case, without the per-frame state of
        `_header` (a compressed one may still report an inflate failure, or inflate past the
        cap); returns where it stopped, at anything else."""
        if self._msg_open or self._closed:
            return pos
        events = self._events
        from_client = self.from_client
        mask_bit = 0x80 if from_client else 0
        ts = self._ts
        cap = self.max_payload
        while n - pos > 1:
            b0 = data[pos]
            b1 = data[pos + 1]
            if b1 & 0x80 != mask_bit:
                break
            length = b1 & 0x7F
            start = pos + 2
            if length == 126:
                if n - start < 2:
                    break
                length = (data[start] << 8) | data[start + 1]
                if length < 126:
                    break
                start += 2
            elif length == 127:
                break
            if mask_bit:
                key = data[start:start + 4]
                start += 4
            end = start + length
            if end > n or length > cap:
                break
            if b0 == 0x81 or b0 == 0x82:
                payload = data[start:end]
                if mask_bit:
                    payload = unmask(payload, key)
                if b0 == 0x81:
                    if length > UTF8_CHUNK:
                        break
                    try:
                        payload.decode("utf-8")
                    except UnicodeDecodeError:
                        break
                    kind = "text"
                else:
                    kind = "binary"
                events.append(DataMessage(from_client, ts, base + end, True, kind, length,
                                          payload, None, False, 1, ts))
            elif (b0 == 0xC1 or b0 == 0xC2) and self.deflate is not None:
                payload = data[start:end]
                if mask_bit:
                    payload = unmask(payload, key)
                self._frame_ts = ts
                self._start_message("text" if b0 == 0xC1 else "binary", True)
                self._msg_wire = length
                self._msg_tail = True
                self._inflate(payload + DEFLATE_TAIL)
                self._msg_frames = 1
                self._finish_message(base + end)
            elif (b0 == 0x89 or b0 == 0x8A) and length < 126:
                payload = data[start:end]
                if mask_bit:
                    payload = unmask(payload, key)
                events.append(Control(from_client, ts, base + end, True, b0 & 0x0F, payload))
            else:
                break
            pos = end
        return pos

    def _header(self, b: bytes, at: int, end: int) -> None:
        """Take the frame header at b[at:]; `end` is the stream offset just after it."""
        b0 = b[at]
        b1 = b[at + 1]
        opcode = b0 & 0x0F
        length = b1 & 0x7F
        i = at + 2
        faults = None
        if length >= 126:
            if length == 126:
                length = (b[i] << 8) | b[i + 1]
                i += 2
                if length < 126:
                    faults = [(NON_MINIMAL_LENGTH, f"{length} in 2 bytes")]
            else:
                length = int.from_bytes(b[i:i + 8], "big")
                i += 8
                if length >> 63:
                    self._emit_faults([(LENGTH_TOP_BIT, f"length {length:#x}")], opcode, end,
                                      False)
                    self._lose_sync(end, f"frame header at offset {end - i + at} declares "
                                         f"{length} payload bytes")
                    return
                if length < 0x10000:
                    faults = [(NON_MINIMAL_LENGTH, f"{length} in 8 bytes")]
        if b1 & 0x80:
            self._key = b[i:i + 4]
            if not self.from_client:
                faults = (faults or []) + [(SERVER_MASKED, "mask bit set on a server frame")]
        else:
            self._key = None
            if self.from_client:
                faults = (faults or []) + [(CLIENT_UNMASKED, "mask bit clear on a client frame")]
        fin = bool(b0 & 0x80)
        rsv = b0 & 0x70
        if ((rsv and (rsv != 0x40 or self.deflate is None or opcode not in (TEXT, BINARY)))
                or opcode not in KNOWN_OPCODES or (opcode & 8 and (not fin or length > 125))):
            faults = self._header_faults(faults or [], fin, rsv, opcode, length)
            if len(faults) >= GARBAGE_FAULTS:
                self._emit_faults(faults, opcode, end, False)
                start = end - _header_length(b1)
                self._lose_sync(end, f"frame header at offset {start} breaks {len(faults)} "
                                     "framing rules at once: not a frame")
                return
        if self._closed:
            faults = (faults or []) + [(FRAME_AFTER_CLOSE, f"opcode {opcode:#x}")]
        self._fin = fin
        self._opcode = opcode
        self._frame_pos = 0
        self._remaining = length
        if opcode & 8:
            self._kind = _CONTROL if opcode <= PONG else _SKIP
            self._ctl = bytearray()
        elif opcode in (TEXT, BINARY):
            self._kind = _DATA
            if self._msg_open:
                faults = (faults or []) + [(
                    DATA_INSIDE_MESSAGE,
                    f"the open {self._msg_type} message ({self._msg_frames} frames, "
                    f"{self._size} bytes) is reported unfinished",
                )]
                self._finish_message(self._msg_end, boundary=False)
            self._start_message(_TYPE_NAMES[opcode], bool(rsv & 0x40) and self.deflate is not None)
        elif opcode == CONTINUATION:
            self._kind = _DATA
            if not self._msg_open:
                faults = (faults or []) + [(
                    ORPHAN_CONTINUATION, "its data is reported as a binary message"
                )]
                self._start_message("binary", False)
        else:
            self._kind = _SKIP
        if self._kind == _DATA:
            self._msg_wire += length
        self._faults = faults
        if not length:
            self._frame_end(end)

    def _header_faults(self, faults: list[tuple[str, str]], fin: bool, rsv: int, opcode: int,
                       length: int) -> list[tuple[str, str]]:
        if rsv & 0x40:
            if self.deflate is None:
                faults.append((RSV_WITHOUT_EXTENSION, f"RSV1 on opcode {opcode:#x}"))
            elif opcode not in (TEXT, BINARY):
                faults.append((RSV1_NOT_FIRST, f"RSV1 on opcode {opcode:#x}"))
        for bit, name in ((0x20, "RSV2"), (0x10, "RSV3")):
            if rsv & bit:
                faults.append((RSV_WITHOUT_EXTENSION, f"{name} on opcode {opcode:#x}"))
        if opcode not in KNOWN_OPCODES:
            faults.append((RESERVED_OPCODE, f"opcode {opcode:#x}, {length} payload bytes"))
        elif opcode & 8:
            if not fin:
                faults.append((CONTROL_FRAGMENTED, f"opcode {opcode:#x}"))
            if length > 125:
                faults.append((CONTROL_TOO_LONG, f"{length} bytes"))
        return faults

    def _frame_end(self, end: int) -> None:
        faults = self._faults
        kind = self._kind
        if kind == _DATA:
            self._msg_frames += 1
            self._msg_end = end
            if faults:
                self._emit_faults(faults, self._opcode, end, self._fin)
            if self._fin:
                self._finish_message(end)
            return
        boundary = not self._msg_open
        if kind == _CONTROL:
            payload = bytes(self._ctl)
            self._ctl = bytearray()
            if self._opcode == CLOSE:
                self._closed = True
                faults = self._close_faults(faults, payload)
            if faults:
                self._emit_faults(faults, self._opcode, end, boundary)
            self._events.append(Control(self.from_client, self._ts, end, boundary,
                                        self._opcode, payload))
        elif faults:
            self._emit_faults(faults, self._opcode, end, boundary)

    @staticmethod
    def _close_faults(faults: list[tuple[str, str]] | None,
                      payload: bytes) -> list[tuple[str, str]] | None:
        if len(payload) == 1:
            return (faults or []) + [(CLOSE_ONE_BYTE, f"payload {payload.hex()}")]
        if len(payload) >= 2:
            code = int.from_bytes(payload[:2], "big")
            if code not in VALID_CLOSE_CODES and not 3000 <= code <= 4999:
                faults = (faults or []) + [(INVALID_CLOSE_CODE, f"code {code}")]
            try:
                payload[2:].decode("utf-8")
            except UnicodeDecodeError as exc:
                faults = (faults or []) + [(CLOSE_REASON_UTF8, str(exc))]
        return faults

    def _emit_faults(self, faults: list[tuple[str, str]], opcode: int | None, end: int,
                     boundary: bool) -> None:
        for rule, detail in faults:
            self._events.append(Violation(self.from_client, self._ts, end, boundary, rule,
                                          detail, opcode))

    def _lose_sync(self, end: int, detail: str) -> None:
        self.in_sync = False
        self._events.append(SyncLost(self.from_client, self._ts, end, False, detail))
        self._head = b""
        self._remaining = 0
        self._first, self._buf = b"", None
        self._ctl = bytearray()
        self._inflater = None

    # --- the data message being assembled -------------------------------------------------

    def _reset_message(self) -> None:
        self._msg_open = False
        self._msg_type = "binary"
        self._msg_compressed = self._msg_tail = self._msg_failed = False
        self._msg_frames = 0
        self._msg_wire = 0  # payload bytes of its frames as sent (compressed, if it is)
        self._msg_start = 0.0
        self._msg_end = 0
        self._msg_faults: list[tuple[str, str]] | None = None
        self._first = b""  # the message's kept bytes while they came in one piece
        self._buf: io.BytesIO | None = None  # the kept bytes once there were more pieces
        self._size = 0
        self._hash = None
        self._utf8 = None
        self._utf8_bad = False

    def _start_message(self, type_name: str, compressed: bool) -> None:
        self._msg_open = True
        self._msg_type = type_name
        self._msg_compressed = compressed
        self._msg_start = self._frame_ts
        if compressed and self._inflater is None:
            self._inflater = zlib.decompressobj(wbits=self._wbits)

    def _append(self, data: bytes) -> None:
        """Keep the message's bytes up to the cap; past it, hash (and validate) and drop them."""
        size = self._size
        self._size = size + len(data)
        if self._hash is None:
            room = self.max_payload - size
            if len(data) <= room:
                self._keep(data)
                return
            self._keep(data[:room])
            data = data[room:]
            if self._buf is None:
                self._hash = hashlib.sha256(self._first)
            else:
                with self._buf.getbuffer() as kept:
                    self._hash = hashlib.sha256(kept[:self._buf.tell()])
            if self._msg_type == "text":
                self._utf8 = codecs.getincrementaldecoder("utf-8")()
                self._check_utf8(self._kept())
        self._hash.update(data)
        if self._utf8 is not None:
            self._check_utf8(data)

    def _keep(self, data: bytes) -> None:
        # A BytesIO hands its buffer over without a copy when it is full, so the kept bytes
        # never exist twice (a bytearray would be copied into the payload's bytes). It is made
        # the size the frame announced (up to the cap) at once: grown 64 KiB read by read, it
        # reallocated (and copied) itself a dozen times per MiB.
        if self._buf is not None:
            self._buf.write(data)
        elif not self._first:
            self._first = data
        elif data:
            self._buf = buf = io.BytesIO()
            have = len(self._first) + len(data)
            announced = have if self._msg_compressed else have + self._remaining
            expected = min(announced, self.max_payload)
            if expected > have:
                buf.seek(expected - 1)
                buf.write(b"\0")
                buf.seek(0)
            buf.write(self._first)
            buf.write(data)
            self._first = b""

    def _kept(self) -> bytes:
        """The kept bytes (a message cut short leaves part of the size made for it unused)."""
        if self._buf is None:
            return self._first
        self._buf.truncate()
        return self._buf.getvalue()

    def _check_utf8(self, data: bytes, final: bool = False) -> None:
        if self._utf8_bad:
            return
        view = memoryview(data)
        try:
            for i in range(0, len(view), UTF8_CHUNK):  # a whole str of it could be the cap again
                self._utf8.decode(view[i:i + UTF8_CHUNK])
            if final:
                self._utf8.decode(b"", True)
        except UnicodeDecodeError:
            self._utf8_bad = True

    def _inflate(self, data: bytes) -> None:
        """Inflate a piece of the compressed message at most INFLATE_CHUNK bytes at a time."""
        if self._msg_failed:
            return
        inflater = self._inflater
        if inflater.eof:  # a final deflate block ended the stream: the rest cannot inflate
            return
        try:
            while True:
                out = inflater.decompress(data, INFLATE_CHUNK)
                if out:
                    self._append(out)
                data = inflater.unconsumed_tail
                if not data and len(out) < INFLATE_CHUNK:
                    return
        except zlib.error as exc:
            self._msg_failed = True
            self._msg_faults = [(INFLATE_FAILED, f"zlib: {exc}")]

    def _finish_message(self, end: int, boundary: bool = True) -> None:
        """Emit the message; boundary=False: a new data frame cut it short (reported as is, with
        the end of its last frame, so it is the one event whose end precedes an earlier one's)."""
        unfinished = not boundary
        faults = self._msg_faults
        if self._msg_compressed:
            if not unfinished and not self._msg_tail:
                self._inflate(DEFLATE_TAIL)
            if self._no_takeover or self._msg_failed or unfinished or self._inflater.eof:
                self._inflater = None  # a fresh window for the next message
        if self._msg_failed:
            # How much inflated before the error depends on how the bytes were split into
            # reads; report none of it, so the record does not depend on that.
            faults = [(rule, f"{detail}; {self._msg_wire} compressed bytes in "
                             f"{self._msg_frames} frames, reported with no payload")
                      for rule, detail in faults]
            self._first, self._buf, self._size, self._hash = b"", None, 0, None
        payload = self._kept()
        digest = self._hash
        if self._msg_type == "text" and not unfinished and not self._msg_failed:
            if digest is None and len(payload) <= UTF8_CHUNK:
                try:
                    payload.decode("utf-8")
                except UnicodeDecodeError as exc:
                    faults = (faults or []) + [(INVALID_UTF8, str(exc))]
            else:
                if digest is None:
                    self._utf8 = codecs.getincrementaldecoder("utf-8")()
                    self._check_utf8(payload)
                self._check_utf8(b"", final=True)
                if self._utf8_bad:
                    faults = (faults or []) + [(INVALID_UTF8, f"in a message of {self._size} "
                                                              "bytes")]
        message = DataMessage(
            self.from_client, self._ts, end, boundary, self._msg_type, self._size, payload,
            None if digest is None else digest.hexdigest(), self._msg_compressed,
            self._msg_frames, self._msg_start,
        )
        self._reset_message()
        if faults:
            self._emit_faults(faults, TEXT if message.type == "text" else BINARY, end, boundary)
        self._events.append(message)
