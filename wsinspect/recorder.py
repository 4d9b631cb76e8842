"""The mitmproxy addon that records WebSocket sessions into a SessionStore.

It is a plain addon class: `wsinspect` runs it in its own Master, and `addons/wsinspect.py`
hands it to `mitmdump -s` / `mitmproxy -s`, where it opens its own capture file.

Two relays carry a WebSocket after its 101 (option `wsinspect_relay`): "raw" (seams'
RawRelayLayer) forwards bytes unchanged and reports what a frame parser saw of them
(`on_wire_events`, `on_injected`, `on_relay_end`); "mitmproxy" is mitmproxy's WebSocket layer,
reported through mitmproxy's hooks and seams' frame tap.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field

import wsproto.events
from mitmproxy import ctx, exceptions, http
from mitmproxy.websocket import WebSocketMessage
from wsproto.frame_protocol import Opcode

from . import seams, wire
from .converters import ABNORMAL_CLOSURE, header_pairs, hop_from_request, is_upgrade_attempt
from .http_rules import (
    close_code_reason,
    close_payload,
    header_values,
    parse_head,
    request_line_parts,
)
from .model import (
    MAX_VIOLATIONS,
    Close,
    ConnectionEnd,
    Hop,
    Message,
    MessageType,
    Outcome,
    Side,
    Violation,
)
from .store import DEFAULT_MAX_PAYLOAD, SessionStore, temporary_capture_path
from .text import printable

logger = logging.getLogger("wsinspect")

@dataclass
class _CloseNotes:
    """What the frame tap saw of a WebSocket's end before mitmproxy's end hook."""

    protocol_error: tuple[str, int, str] | None = None  # offending side, code, reason
    told: dict[str, tuple[int | None, str]] = field(default_factory=dict)  # side -> close sent
    sent: dict[str, tuple[int | None, str]] = field(default_factory=dict)  # side -> its close
    ended: dict[str, ConnectionEnd] = field(default_factory=dict)  # side -> how it ended


RELAY_PATHS = ("raw", "mitmproxy")
NO_STATUS_RECEIVED = 1005  # what wsproto reports for a close frame without a status code
PENDING_PINGS = 256  # unanswered pings remembered per side, for pairing pongs
# message types by wire name/opcode: a dict lookup is cheaper than Enum member access per message
_CONTROL_TYPES = {0x8: MessageType.CLOSE, 0x9: MessageType.PING, 0xA: MessageType.PONG}
_DATA_TYPES = {"text": MessageType.TEXT, "binary": MessageType.BINARY}
# flow.metadata key under which wsinspect.interceptor leaves a held message's fate for the
# mitmproxy path's websocket_message: (fate, seconds held, the payload as it came)
INTERCEPT_METADATA = "wsinspect_intercept"


@dataclass
class _RawSession:
    """What the raw relay's record of one WebSocket needs beyond its hop."""

    hop: Hop
    # sender (from_client) -> pings (payload, timestamp) not yet answered, the newest kept
    pings: dict[bool, collections.deque] = field(
        default_factory=lambda: {
            side: collections.deque(maxlen=PENDING_PINGS) for side in (True, False)
        }
    )
    closes: list[wire.Control] = field(default_factory=list)  # each side's first close frame


def _answer_ping(pings: collections.deque, payload: bytes, timestamp: float) -> float | None:
    """The RTT of the ping a pong answers: the oldest with its payload, else the oldest."""
    for i, (ping_payload, sent) in enumerate(pings):
        if ping_payload == payload:
            del pings[i]
            return timestamp - sent
    if pings:
        return timestamp - pings.popleft()[1]
    return None


def _ended_how(how: str | None) -> str:
    return "reset the connection" if how == ConnectionEnd.RESET else "closed the connection (FIN)"



def _data_message(event: wire.DataMessage, **fate) -> Message:
    """The record of a data message the parser saw (and, for a held one, its fate)."""
    return Message(
        from_client=event.from_client,
        type=_DATA_TYPES[event.type],
        size=event.size,
        payload=event.payload,
        timestamp=event.timestamp,
        sha256=event.sha256,
        **fate,
    )

class Recorder:
    """Records every WebSocket upgrade attempt and its traffic."""

    def __init__(self, store: SessionStore | None = None, relay: str = "raw") -> None:
        """`relay` is the default of the `wsinspect_relay` option."""
        self.store = store
        self._owns_store = store is None
        self._default_relay = relay
        self._relay = relay
        self._raw: dict[str, _RawSession] = {}  # flow id -> raw relay record
        self._hops: dict[str, Hop] = {}  # flow id -> hop
        self._flow_by_conn: dict[str, str] = {}  # connection id -> flow id
        self._tunnelled: set[str] = set()  # client connections that sent CONNECT
        self._live_flows: dict[str, http.HTTPFlow] = {}  # flow id -> flow of an open WebSocket
        self._close_notes: dict[str, _CloseNotes] = {}  # flow id -> what the frame tap saw
        seams.install()

    def load(self, loader) -> None:
        seams.register(self, loader.master.options)
        loader.add_option(
            "wsinspect_capture",
            str,
            "",
            "Capture file wsinspect records into (a new file). Empty: a temporary file.",
        )
        loader.add_option(
            "wsinspect_max_payload",
            int,
            DEFAULT_MAX_PAYLOAD,
            "Bytes of each WebSocket payload to store; larger ones keep their size and SHA-256.",
        )
        loader.add_option(
            "wsinspect_relay",
            str,
            self._default_relay,
            "How WebSockets are relayed after the 101: raw (bytes forwarded unchanged, "
            "recorded beside) or mitmproxy (its WebSocket layer and websocket_message hook).",
            choices=RELAY_PATHS,
        )
        loader.add_option(
            "wsinspect_trim",
            bool,
            True,
            "Drop messages from mitmproxy's flows once recorded, so memory stays flat.",
        )

    def configure(self, updated) -> None:
        if {"mode", "keep_host_header"} & updated and not ctx.options.keep_host_header and any(
            spec.startswith("reverse:") for spec in ctx.options.mode
        ):
            logger.warning(
                "wsinspect: reverse listeners rewrite Host to their target before the request is "
                "recorded, so recorded Host headers are not what clients sent: "
                "--set keep_host_header=true keeps (and passes on) the client's"
            )
        if "wsinspect_relay" in updated:
            # mitmproxy checks an option's choices only where its own UI sets it, not on
            # `--set` or options.update: an unknown relay would otherwise run as the raw one.
            if ctx.options.wsinspect_relay not in RELAY_PATHS:
                raise exceptions.OptionsError(
                    f"wsinspect_relay must be {' or '.join(RELAY_PATHS)}, not "
                    f"{printable(ctx.options.wsinspect_relay)!r}"
                )
            self._relay = ctx.options.wsinspect_relay
        if self.store is not None and "wsinspect_max_payload" in updated:
            self.store.max_payload = ctx.options.wsinspect_max_payload
        if self._owns_store and self.store is None:
            path = ctx.options.wsinspect_capture
            if not path:
                path = temporary_capture_path()
            self.store = SessionStore(path, max_payload=ctx.options.wsinspect_max_payload)
            logger.info(f"wsinspect: recording WebSocket sessions to {path}")

    def done(self) -> None:
        seams.unregister(ctx.options)
        if self.store is not None:
            if self._owns_store:
                self.store.close()
            else:
                self.store.flush()

    # ----- HTTP: the handshake -------------------------------------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        self._tunnelled.add(flow.client_conn.id)

    def http_connect_error(self, flow: http.HTTPFlow) -> None:
        """A CONNECT whose server could not be reached, recorded as a failed session.

        With mitmproxy's default (eager) connection strategy the proxy connects to the CONNECT
        target before answering, and a server that is down gets the client a 502 before any
        WebSocket request is sent: without this, every wss client and every client told to use
        the proxy (`websockets` with `proxy=`) would fail with nothing in the capture. A CONNECT
        carries no Upgrade header, so the proxy cannot tell a WebSocket's tunnel from another;
        every CONNECT that failed to reach its server is recorded, since a missing session for
        the one that mattered costs a user of this inspector more than a failed row for an
        unrelated host (named by its CONNECT line). CONNECTs refused for another reason (407
        from proxy authentication, a response an addon set) reached no server and are left out:
        the client is expected to retry or has been told why.
        """
        error = flow.server_conn.error
        if not error or flow.response is None:
            return
        hop = hop_from_request(flow)
        hop.url = flow.request.authority  # a CONNECT does not say ws:// or wss://
        hop.request_line = (
            f"{flow.request.method} {flow.request.authority} {flow.request.http_version}"
        )
        # The server never answered (response_status stays None); what the client got is the
        # proxy's own answer to the CONNECT, beside mitmproxy's text of the failure.
        hop.failed(
            f"{error}; the client got {flow.response.status_code} {flow.response.reason} "
            f"for its CONNECT",
            time.time(),
        )
        self.store.add_hop(hop)

    def client_disconnected(self, client) -> None:
        self._tunnelled.discard(client.id)

    def _absolute_form(self, flow: http.HTTPFlow) -> bool:
        """Whether the client sent an absolute-form request line. mitmproxy rewrites it to
        origin form before any hook runs; outside a CONNECT tunnel, a regular proxy's HTTP/1
        requests arrive that way."""
        return (
            flow.client_conn.proxy_mode.type_name == "regular"
            and flow.client_conn.id not in self._tunnelled
            and not flow.request.is_http2
        )

    def request(self, flow: http.HTTPFlow) -> None:
        if not is_upgrade_attempt(flow.request) or flow.id in self._hops:
            return
        hop = hop_from_request(flow, self._absolute_form(flow))
        self._hops[flow.id] = hop
        self.store.add_hop(hop)

    def response(self, flow: http.HTTPFlow) -> None:
        hop = self._hops.get(flow.id)
        if hop is None or flow.response is None:
            return
        response = flow.response
        if flow.server_conn.address:
            hop.server_addr = tuple(flow.server_conn.address[:2])
        hop.answered(
            response.status_code,
            response.reason,
            header_pairs(response.headers),
            response.http_version,
            response.timestamp_start or time.time(),
            finished=response.timestamp_end or time.time(),
        )
        if hop.outcome is Outcome.REJECTED:
            del self._hops[flow.id]
        self.store.hop_changed(hop)

    def error(self, flow: http.HTTPFlow) -> None:
        hop = self._hops.pop(flow.id, None)
        if hop is None:
            if flow.response is None and is_upgrade_attempt(flow.request):
                # No request hook ran: the proxy refused the request itself (an invalid
                # header or scheme) and answered 400.
                hop = hop_from_request(flow, self._absolute_form(flow))
                self._record_refusal(hop, flow.error.msg if flow.error else "")
            return
        self._untap(flow)
        hop.errored(flow.error.msg if flow.error else "connection error", time.time())
        self.store.hop_changed(hop)

    def on_refused_request(self, client, head: bytes, reason: str) -> None:
        """An upgrade attempt mitmproxy's HTTP/1 parser refused with a 400 and no flow."""
        request_line, headers = parse_head(head)
        _, target, http_version = request_line_parts(request_line)
        host = next(iter(header_values(headers, "Host")), "")
        hop = Hop(
            mode=client.proxy_mode.full_spec,
            url=target if "://" in target else f"ws://{host}{target}",
            request_line=request_line,
            http_version=http_version,
            request_headers=headers,
            timestamp_start=time.time(),
            client_addr=tuple(client.peername[:2]) if client.peername else None,
        )
        self._record_refusal(hop, reason)

    def _record_refusal(self, hop: Hop, reason: str) -> None:
        hop.refused(reason, time.time())
        self.store.add_hop(hop)

    # ----- WebSocket: messages and the end -------------------------------------------------

    def websocket_start(self, flow: http.HTTPFlow) -> None:
        if flow.id not in self._hops:  # e.g. a flow that started before a script reload
            hop = hop_from_request(flow)
            self._hops[flow.id] = hop
            self.store.add_hop(hop)
            self.response(flow)
        taps = seams.frame_taps()
        for conn in (flow.client_conn, flow.server_conn):
            taps[conn.id] = self
            self._flow_by_conn[conn.id] = flow.id
        self._live_flows[flow.id] = flow

    def live_flow(self, hop_id: int) -> http.HTTPFlow | None:
        """The mitmproxy flow of a hop whose WebSocket is still open (to inject messages into),
        or None once it has ended or when this recorder never saw it."""
        return self._live_flows.get(self.store.hop(hop_id).flow_id)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        hop = self._hops.get(flow.id)
        assert flow.websocket is not None
        message: WebSocketMessage = flow.websocket.messages[-1]
        # what wsinspect.interceptor decided for a message it held: fate, seconds, what came
        held = flow.metadata.pop(INTERCEPT_METADATA, None)
        if hop is not None:
            kind = MessageType.TEXT if message.type == Opcode.TEXT else MessageType.BINARY
            payload = message.content if held is None else held[2]
            self.store.add_message(
                hop,
                Message(
                    from_client=message.from_client,
                    type=kind,
                    size=len(payload),
                    payload=payload,
                    timestamp=message.timestamp,
                    injected=message.injected,
                    intercept=None if held is None else held[0],
                    held=None if held is None else held[1],
                ),
            )
            if held is not None and held[0] == "edited":
                self.store.add_message(hop, Message(
                    from_client=message.from_client, type=kind, size=len(message.content),
                    payload=message.content, timestamp=time.time(), injected=True,
                ))
        if ctx.options.wsinspect_trim:
            # mitmproxy keeps every message for the flow's life (upstream #6620). Keep only
            # the newest, which later addons in this hook may still read.
            del flow.websocket.messages[:-1]

    def max_payload(self) -> int:
        """Bytes of a payload that are stored; a larger message is streamed (see seams)."""
        return self.store.max_payload

    def relay_path(self) -> str:
        return self._relay

    # ----- the raw relay ----------------------------------------------------------------

    def _raw_session(self, flow: http.HTTPFlow) -> _RawSession | None:
        raw = self._raw.get(flow.id)
        if raw is None:
            hop = self._hops.get(flow.id)
            if hop is None:
                return None
            raw = self._raw[flow.id] = _RawSession(hop)
        return raw

    def on_wire_events(self, flow: http.HTTPFlow, events: list) -> None:
        raw = self._raw_session(flow)
        if raw is None:
            return
        hop, add = raw.hop, self.store.add_message
        for event in events:
            kind = type(event)
            if kind is wire.DataMessage:
                add(hop, _data_message(event))
            elif kind is wire.Control:
                rtt = None
                if event.opcode == 0x9:
                    raw.pings[event.from_client].append((event.payload, event.timestamp))
                elif event.opcode == 0xA:
                    rtt = _answer_ping(
                        raw.pings[not event.from_client], event.payload, event.timestamp
                    )
                elif event.opcode == 0x8 and all(
                    c.from_client != event.from_client for c in raw.closes
                ):
                    raw.closes.append(event)
                add(hop, Message(
                    from_client=event.from_client,
                    type=_CONTROL_TYPES[event.opcode],
                    size=len(event.payload),
                    payload=event.payload,
                    timestamp=event.timestamp,
                    rtt=rtt,
                ))
            elif kind is wire.Violation or kind is wire.SyncLost:
                if len(hop.violations) < MAX_VIOLATIONS:
                    lost = kind is wire.SyncLost
                    hop.violations.append(Violation(
                        from_client=event.from_client,
                        rule="frame boundaries lost: later bytes were relayed unparsed"
                        if lost else event.rule,
                        detail=event.detail,
                        opcode=None if lost else event.opcode,
                        timestamp=event.timestamp,
                    ))
                    self.store.hop_changed(hop)

    def on_injected(
        self, flow: http.HTTPFlow, from_client: bool, is_text: bool, payload: bytes
    ) -> None:
        raw = self._raw_session(flow)
        if raw is not None:
            self.store.add_message(raw.hop, Message(
                from_client=from_client,
                type=MessageType.TEXT if is_text else MessageType.BINARY,
                size=len(payload),
                payload=payload,
                timestamp=time.time(),
                injected=True,
            ))

    def on_intercepted(self, flow: http.HTTPFlow, held) -> None:
        """A held message was decided: recorded as it came, with its fate; an edited one's
        replacement follows it, marked injected."""
        raw = self._raw_session(flow)
        if raw is None:
            return
        self.store.add_message(raw.hop, _data_message(
            held.message, intercept=held.fate, held=max(0.0, held.decided_at - held.since)
        ))
        if held.edited is not None:
            m = held.message
            self.on_injected(flow, m.from_client, m.type == "text", held.edited)

    def on_relay_end(self, flow: http.HTTPFlow, end: seams.RelayEnd) -> None:
        raw = self._raw_session(flow)
        self._raw.pop(flow.id, None)
        self._hops.pop(flow.id, None)
        self._untap(flow)
        if raw is None:
            return
        hop = raw.hop
        # Each side's close frame and connection end were passed on to the other unchanged.
        sent = {Side.of(frame.from_client): frame.close_code_reason() for frame in raw.closes}
        ends = {
            "client_end": end.client,
            "server_end": end.server,
            "client_sent": sent.get(Side.CLIENT),
            "server_sent": sent.get(Side.SERVER),
            "told_client_end": end.server,
            "told_server_end": end.client,
        }
        if raw.closes:
            first = raw.closes[0]
            code, reason = first.close_code_reason()
            close = Close(
                code=code,
                reason=reason,
                by=Side.of(first.from_client),
                timestamp=end.timestamp,
                told_client=sent.get(Side.SERVER),
                told_server=sent.get(Side.CLIENT),
                **ends,
            )
        else:
            by = Side(end.first)
            how, then = (end.client, end.server) if by is Side.CLIENT else (end.server, end.client)
            what = (
                f"the {by} {_ended_how(how)} without a close frame; wsinspect passed the "
                f"same {'reset' if how == 'reset' else 'FIN'} on to the {by.peer}"
            )
            if how == ConnectionEnd.FIN and then == ConnectionEnd.RESET:
                what += f"; then the {by.peer} reset the connection, passed on to the {by}"
            close = Close.lost(by, end.timestamp, what, **ends)
        if hop.violations:
            close.offender = hop.violations[0].sender
        hop.ended(close)
        self.store.hop_changed(hop)
        ws = flow.websocket
        if ws is not None:
            ws.timestamp_end = end.timestamp
            ws.closed_by_client = close.by == Side.CLIENT
            ws.close_code = close.code if close.code is not None else ABNORMAL_CLOSURE
            ws.close_reason = close.reason

    def on_streamed_message(self, flow: http.HTTPFlow, message: seams.StreamedMessage) -> None:
        """A message relayed fragment by fragment because it outgrew the stored payload."""
        hop = self._hops.get(flow.id)
        if hop is None:
            return
        kind = MessageType.TEXT if message.is_text else MessageType.BINARY
        self.store.add_message(hop, message.message(message.from_client, kind, message.timestamp))

    def websocket_end(self, flow: http.HTTPFlow) -> None:
        hop = self._hops.pop(flow.id, None)
        notes = self._close_notes.pop(flow.id, _CloseNotes())
        self._untap(flow)
        if hop is None:
            return
        ws = flow.websocket
        assert ws is not None
        side = Side.of(ws.closed_by_client)
        ended = ws.timestamp_end or time.time()
        if notes.protocol_error is not None:
            # mitmproxy's flow says the offending side closed; it was the proxy.
            offender, code, reason = notes.protocol_error
            close = Close(code=code, reason=reason, by=Side.PROXY, offender=offender, timestamp=ended)
        elif ws.close_code == ABNORMAL_CLOSURE:
            close = Close.lost(side, ended)
            if (how := notes.ended.get(side)) is not None:
                close.abnormal_reason += f": the {side} {_ended_how(how)}"
        else:
            code = int(ws.close_code) if ws.close_code is not None else None
            close = Close(code=code, reason=ws.close_reason or "", by=side, timestamp=ended)
        close.told_client, close.told_server = notes.told.get(Side.CLIENT), notes.told.get(Side.SERVER)
        close.client_sent, close.server_sent = notes.sent.get(Side.CLIENT), notes.sent.get(Side.SERVER)
        close.client_end, close.server_end = notes.ended.get(Side.CLIENT), notes.ended.get(Side.SERVER)
        # mitmproxy's layer closes both connections itself (a FIN), once it has told each
        # side; the one that vanished is gone by then.
        lost = close.by if close.abnormal else None
        close.told_client_end = None if lost == Side.CLIENT else ConnectionEnd.FIN
        close.told_server_end = None if lost == Side.SERVER else ConnectionEnd.FIN
        hop.ended(close)
        self.store.hop_changed(hop)

    def on_frame_event(
        self, conn_id: str, from_client: bool, event: wsproto.events.Event, protocol_error: bool
    ) -> None:
        """Ping, pong and close frames, which mitmproxy's message hook does not report, and
        frames that broke the protocol."""
        flow_id = self._flow_by_conn.get(conn_id)
        hop = self._hops.get(flow_id) if flow_id else None
        if hop is None:
            return
        if protocol_error:
            side = Side.of(from_client)
            notes = self._close_notes.setdefault(flow_id, _CloseNotes())
            notes.protocol_error = (side, int(event.code), event.reason or "")
            return
        if isinstance(event, (wsproto.events.Ping, wsproto.events.Pong)):
            kind = MessageType.PING if isinstance(event, wsproto.events.Ping) else MessageType.PONG
            payload = bytes(event.payload)
        elif isinstance(event, wsproto.events.CloseConnection):
            if event.code == ABNORMAL_CLOSURE:
                return  # no frame: the connection was lost; websocket_end records it
            kind = MessageType.CLOSE
            payload = close_payload(event.code, event.reason or "")
            notes = self._close_notes.setdefault(flow_id, _CloseNotes())
            notes.sent.setdefault(
                Side.of(from_client),
                (None, "") if event.code == NO_STATUS_RECEIVED else close_code_reason(payload),
            )
        else:
            return
        self.store.add_message(
            hop,
            Message(
                from_client=from_client,
                type=kind,
                size=len(payload),
                payload=payload,
                timestamp=time.time(),
            ),
        )

    def on_close_sent(self, conn_id: str, to_client: bool, code: int | None, reason: str) -> None:
        """The close frame the proxy sent one side: what that side was told."""
        flow_id = self._flow_by_conn.get(conn_id)
        if flow_id is not None:
            notes = self._close_notes.setdefault(flow_id, _CloseNotes())
            notes.told[Side.of(to_client)] = (code, reason)

    def on_connection_end(self, conn_id: str, how: str) -> None:
        """A side ended its connection before mitmproxy's relay closed it (the others it
        closes itself, with a FIN)."""
        flow_id = self._flow_by_conn.get(conn_id)
        flow = self._live_flows.get(flow_id) if flow_id else None
        if flow is not None:
            notes = self._close_notes.setdefault(flow_id, _CloseNotes())
            notes.ended[Side.of(conn_id == flow.client_conn.id)] = ConnectionEnd(how)

    def _untap(self, flow: http.HTTPFlow) -> None:
        self._live_flows.pop(flow.id, None)
        taps = seams.frame_taps()
        for conn in (flow.client_conn, flow.server_conn):
            if taps.get(conn.id) is self:
                del taps[conn.id]
            self._flow_by_conn.pop(conn.id, None)
