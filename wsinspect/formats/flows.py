"""mitmproxy flow files, as `mitmdump -w` writes them and `mitmproxy -r` reads them.

A WebSocket is an HTTPFlow with `flow.websocket` (its text and binary messages, close code,
reason and who closed); a rejected or failed upgrade attempt is a plain HTTPFlow with Upgrade
headers. mitmproxy keeps no ping, pong or close frames and no listener-independent request
line, so wsinspect writes those into `flow.metadata["wsinspect"]`, which mitmproxy carries
along and shows in its flow details; flows without it are read the way the recorder reads live
ones.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from mitmproxy import connection, exceptions, http
from mitmproxy import flow as mitmproxy_flow
from mitmproxy import io as mitmproxy_io
from mitmproxy.proxy.mode_specs import ProxyMode
from mitmproxy.websocket import WebSocketData, WebSocketMessage
from wsproto.frame_protocol import Opcode

from ..converters import ABNORMAL_CLOSURE, header_pairs, hop_from_request, is_upgrade_attempt
from ..http_rules import request_line_parts
from ..model import (
    CLOSE_CODE,
    COUNT,
    Close,
    Hop,
    Message,
    MessageType,
    Outcome,
    RecordError,
    Side,
    field_of,
    integer,
    member,
    mode,
    optional,
    payload,
    tuple_of,
)
from ..store import CaptureError, SessionStore
from .common import (
    TYPES_BY_OPCODE,
    ExportedHop,
    add_imported_hop,
    checked,
    hop_from_record,
    hop_record,
)

_DATA_OPCODES = {MessageType.TEXT: Opcode.TEXT, MessageType.BINARY: Opcode.BINARY}


# ----- writing -------------------------------------------------------------------------------


def _wire(text: str) -> bytes:
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:  # e.g. a header read from a HAR file
        return text.encode("utf-8")


def _mitmproxy_headers(headers: list[tuple[str, str]]) -> http.Headers:
    return http.Headers([(_wire(name), _wire(value)) for name, value in headers])


def flow_for_hop(item: ExportedHop, messages: Iterable[Message]) -> http.HTTPFlow:
    hop = item.hop
    try:
        mode = ProxyMode.parse(hop.mode)
    except ValueError:  # not a listener's mode, e.g. a hop read from a HAR file
        mode = ProxyMode.parse("regular")
    client = connection.Client(
        peername=hop.client_addr or ("", 0),
        sockname=("", 0),
        timestamp_start=hop.timestamp_start,
        proxy_mode=mode,
    )
    flow = http.HTTPFlow(client, connection.Server(address=hop.server_addr))
    flow.id = hop.flow_id or str(uuid.uuid4())
    flow.timestamp_created = hop.timestamp_start
    url = urlsplit(hop.url)
    secure = url.scheme in ("wss", "https")
    flow.request = http.Request(
        host=url.hostname or "",
        port=url.port or (443 if secure else 80),
        method=_wire(request_line_parts(hop.request_line)[0] or "GET"),
        scheme=b"https" if secure else b"http",
        authority=b"",
        path=_wire((url.path or "/") + (f"?{url.query}" if url.query else "")),
        http_version=_wire(hop.http_version),
        headers=_mitmproxy_headers(hop.request_headers),
        content=b"",
        trailers=None,
        timestamp_start=hop.timestamp_start,
        timestamp_end=hop.timestamp_start,
    )
    if hop.response_status is not None:
        answered = hop.timestamp_response or hop.timestamp_start
        flow.response = http.Response(
            http_version=_wire(hop.response_http_version or hop.http_version),
            status_code=hop.response_status,
            reason=_wire(hop.response_reason),
            headers=_mitmproxy_headers(hop.response_headers),
            content=b"",
            trailers=None,
            timestamp_start=answered,
            timestamp_end=answered,
        )
    control, capped, rtts = [], [], []
    if hop.response_status == 101:
        websocket = WebSocketData(timestamp_end=hop.timestamp_end)
        for message in messages:
            if message.type in _DATA_OPCODES:
                websocket.messages.append(
                    WebSocketMessage(
                        _DATA_OPCODES[message.type],
                        message.from_client,
                        message.payload,
                        message.timestamp,
                        injected=message.injected,
                    )
                )
            else:
                control.append(
                    [message.index, message.from_client, message.type.value, message.payload,
                     message.timestamp]
                )
            if message.truncated:
                capped.append([message.index, message.size, message.sha256])
            if message.rtt is not None:
                rtts.append([message.index, message.rtt])
        if hop.close is not None:
            websocket.closed_by_client = hop.close.by == Side.CLIENT
            websocket.close_code = ABNORMAL_CLOSURE if hop.close.abnormal else hop.close.code
            websocket.close_reason = hop.close.reason
        flow.websocket = websocket
    if hop.error:
        flow.error = mitmproxy_flow.Error(hop.error, hop.timestamp_end or hop.timestamp_start)
    flow.metadata["wsinspect"] = {
        **hop_record(item), "control": control, "capped": capped, "rtt": rtts
    }
    return flow


def write_flows(store: SessionStore, hops: Iterable[ExportedHop], out: BinaryIO) -> None:
    writer = mitmproxy_io.FlowWriter(out)
    for item in hops:
        writer.add(flow_for_hop(item, store.iter_messages(item.hop.id)))


# ----- reading -------------------------------------------------------------------------------


def _messages(flow: http.HTTPFlow, extra: dict) -> list[Message]:
    """The flow's messages, with the control frames wsinspect kept aside put back in place."""
    data = []
    for m in flow.websocket.messages if flow.websocket else []:
        integer(0, 15)(int(m.type) if isinstance(m.type, int) else m.type, "message opcode")
        payload(m.content, "message content")
        if int(m.type) in TYPES_BY_OPCODE:
            data.append(Message(
                from_client=m.from_client,
                type=TYPES_BY_OPCODE[int(m.type)],
                size=len(m.content),
                payload=m.content,
                timestamp=m.timestamp,
                injected=m.injected,
            ))
    control = {}
    for item in _records(extra, "control", 5):
        index, from_client, kind, content, timestamp = item
        COUNT(index, "control frame index")
        payload(content, "control frame payload")
        control[index] = Message(
            from_client=from_client,
            type=member(MessageType, kind, "control frame type"),
            size=len(content),
            payload=content,
            timestamp=timestamp,
        )
    total = len(data) + len(control)
    if any(index >= total for index in control):
        raise RecordError("a control frame's index is past the last message")
    remaining = iter(data)
    messages = [control[i] if i in control else next(remaining) for i in range(total)]
    for index, size, sha256 in _records(extra, "capped", 3):
        integer(0, total - 1)(index, "capped message index")
        messages[index].size = size
        messages[index].sha256 = sha256
    for index, rtt in _records(extra, "rtt", 2):  # pongs' round-trip times
        integer(0, total - 1)(index, "rtt message index")
        messages[index].rtt = rtt
    return messages


def _records(extra: dict, key: str, length: int) -> list[tuple]:
    """wsinspect's list of `length`-item records under `key` of the flow's metadata."""
    items = field_of(extra, key, "wsinspect's metadata", [])
    if type(items) is not list:
        raise RecordError(f"wsinspect's {key} list is not a list")
    return [tuple_of(item, f"wsinspect's {key} record", length) for item in items]


def _end_as_recorded(hop: Hop, flow: http.HTTPFlow) -> None:
    """How a hop was answered and ended, the way the recorder's hooks would have recorded this
    flow."""
    response, websocket, error = flow.response, flow.websocket, flow.error
    if response is not None:
        hop.answered(
            response.status_code,
            response.reason,
            header_pairs(response.headers),
            response.http_version,
            response.timestamp_start,
            finished=response.timestamp_end,
        )
    closed = websocket is not None and websocket.closed_by_client is not None
    if hop.response_status == 101 and closed:
        by = Side.of(websocket.closed_by_client)
        optional(CLOSE_CODE)(websocket.close_code, "close code")
        if error is not None:
            hop.error = error.msg
        ended = websocket.timestamp_end or (error.timestamp if error is not None else None)
        if websocket.close_code == ABNORMAL_CLOSURE:
            hop.ended(Close.lost(by, ended))
        else:
            hop.ended(
                Close(
                    code=websocket.close_code,
                    reason=websocket.close_reason or "",
                    by=by,
                    timestamp=ended,
                )
            )
    elif error is not None:
        if hop.outcome is Outcome.REJECTED:  # the answer ended it; the error is beside it
            hop.error = error.msg
        else:
            hop.errored(error.msg, error.timestamp)


def hop_from_flow(flow: mitmproxy_flow.Flow) -> tuple[Hop, list[Message]] | None:
    if not isinstance(flow, http.HTTPFlow) or (
        flow.websocket is None and not is_upgrade_attempt(flow.request)
    ):
        return None
    if type(flow.metadata) is not dict:  # mitmproxy loads it unchecked
        raise RecordError("the flow's metadata is not an object")
    record = flow.metadata.get("wsinspect")
    if record:
        hop = hop_from_record(
            record,
            header_pairs(flow.request.headers),
            header_pairs(flow.response.headers) if flow.response else [],
        )
        return checked(hop, _messages(flow, record))
    mode(flow.client_conn.proxy_mode.full_spec, "proxy mode")
    hop = hop_from_request(flow)
    _end_as_recorded(hop, flow)
    return checked(hop, _messages(flow, {}))


def _read(path: Path, fo: BinaryIO) -> Iterator[mitmproxy_flow.Flow]:
    """mitmproxy's reader, its errors (from any of its layers) made into CaptureErrors."""
    stream = iter(mitmproxy_io.FlowReader(fo).stream())
    number = 0
    while True:
        number += 1
        try:
            flow = next(stream)
        except StopIteration:
            return
        except exceptions.FlowReadException as e:
            raise CaptureError(
                f"{path}: flow {number} cannot be read, the file is truncated or damaged ({e})"
            ) from None
        except Exception as e:  # mitmproxy's state loading raises whatever the data provokes
            raise CaptureError(f"{path}: flow {number} is damaged ({type(e).__name__}: {e})") from None
        yield flow


def read_flows(path: Path, fo: BinaryIO) -> SessionStore:
    """Flows become hops in file order (mitmdump writes a flow when it ends), as mitmproxy
    lists them; one flow at a time is held."""
    store = SessionStore()
    for number, flow in enumerate(_read(path, fo), start=1):
        try:
            read = hop_from_flow(flow)
        except (ValueError, OverflowError) as e:  # RecordError, and what parsing a field raised
            raise CaptureError(f"{path}: flow {number} is damaged ({e})") from None
        except (TypeError, AttributeError) as e:  # mitmproxy loads some of a flow unchecked
            raise CaptureError(f"{path}: flow {number} is damaged ({type(e).__name__})") from None
        if read is not None:
            add_imported_hop(store, *read)
    store.flush()
    return store
