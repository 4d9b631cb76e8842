"""HAR 1.2 with Chrome DevTools' WebSocket extension.

Each hop is one entry with `_resourceType: "websocket"` and `_webSocketMessages`, whose items
are `{"type": "send"|"receive", "time": epoch seconds, "opcode": n, "data": …}`: text (opcode
1) as the text itself, every other opcode base64, as Chrome writes binary frames. wsinspect
also writes ping (9), pong (10) and close (8) frames, which Chrome shows by opcode, and keeps
what HAR cannot say (listener mode, session and hop, how it ended, exact timestamps) under
`_wsinspect`, which other tools ignore.

Reading takes HAR files from Chrome, mitmproxy's `hardump` and wsinspect: entries that are
WebSockets (`_resourceType`, messages, an Upgrade request header or a ws:// URL) become hops;
other entries are skipped.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, TextIO
from urllib.parse import unquote_plus, urlsplit

from .. import __version__
from ..http_rules import as_ws_url, request_line_parts
from ..model import (
    MAX_TIMESTAMP,
    Close,
    Hop,
    Message,
    RecordError,
    field_of,
    header_list,
    header_tokens,
    header_value,
    integer,
    text,
    timestamp,
)
from ..store import CaptureError, SessionStore
from .common import (
    OPCODES,
    TYPES_BY_OPCODE,
    ExportedHop,
    add_imported_hop,
    checked,
    hop_from_record,
    hop_record,
)

# The mode of hops read from HAR files that do not say which listener saw them.
HAR_MODE = "har"
_DEFAULT_PORTS = {"ws": 80, "wss": 443}


# ----- writing -------------------------------------------------------------------------------


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds")


def _har_headers(headers: list[tuple[str, str]]) -> list[dict]:
    return [{"name": name, "value": value} for name, value in headers]


def _query_string(url: str) -> list[dict]:
    query = urlsplit(url).query
    pairs = [part.partition("=") for part in query.split("&") if part]
    return [{"name": unquote_plus(n), "value": unquote_plus(v)} for n, _, v in pairs]


def _text(payload: bytes) -> str | None:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return None


def har_message(message: Message) -> dict:
    opcode = OPCODES[message.type]
    text = _text(message.payload) if opcode == 1 else None
    item = {
        "type": "send" if message.from_client else "receive",
        "time": message.timestamp,
        "opcode": opcode,
        "data": text if text is not None else base64.b64encode(message.payload).decode("ascii"),
    }
    if opcode == 1 and text is None:  # text cut inside a character by the payload size cap
        item["_encoding"] = "base64"
    if message.truncated:
        item["_size"] = message.size
        item["_sha256"] = message.sha256
    if message.injected:
        item["_injected"] = True
    if message.rtt is not None:
        item["_rtt"] = message.rtt
    return item


def har_entry(item: ExportedHop, messages: Iterable[Message]) -> dict:
    hop = item.hop
    method = request_line_parts(hop.request_line)[0] or "GET"
    waited = hop.timestamp_response - hop.timestamp_start if hop.timestamp_response else 0.0
    response = {
        "status": hop.response_status or 0,
        "statusText": hop.response_reason,
        "httpVersion": hop.response_http_version or "",
        "cookies": [],
        "headers": _har_headers(hop.response_headers),
        "content": {"size": 0, "mimeType": "x-unknown"},
        "redirectURL": header_value(hop.response_headers, "Location") or "",
        "headersSize": -1,
        "bodySize": -1 if hop.response_status is None else 0,
    }
    if hop.error:
        response["_error"] = hop.error
    entry = {
        "startedDateTime": _iso(hop.timestamp_start),
        "time": max(0.0, waited * 1000),
        "request": {
            "method": method,
            "url": hop.url,
            "httpVersion": hop.http_version,
            "cookies": [],
            "headers": _har_headers(hop.request_headers),
            "queryString": _query_string(hop.url),
            "headersSize": -1,
            "bodySize": 0,
        },
        "response": response,
        "cache": {},
        "timings": {"send": 0, "wait": max(0.0, waited * 1000), "receive": 0},
        "_resourceType": "websocket",
        "_webSocketMessages": [har_message(m) for m in messages],
        "_wsinspect": hop_record(item),
    }
    if hop.server_addr:
        entry["serverIPAddress"] = hop.server_addr[0]
    return entry


def write_har(store: SessionStore, hops: Iterable[ExportedHop], out: TextIO) -> None:
    """Write entries one at a time, so a large capture is never held in memory as JSON."""
    creator = {"name": "wsinspect", "version": __version__}
    out.write('{"log": {"version": "1.2", "creator": %s, "pages": [], "entries": [' % json.dumps(creator))
    for i, item in enumerate(hops):
        entry = har_entry(item, store.iter_messages(item.hop.id))
        out.write(("\n" if i == 0 else ",\n") + json.dumps(entry, ensure_ascii=False))
    out.write("\n]}}\n")


# ----- reading -------------------------------------------------------------------------------


def _timestamp(value: object, what: str) -> float:
    """Epoch seconds, or an ISO 8601 time as HAR's startedDateTime has."""
    if type(value) is str:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        value = moment.timestamp()
    timestamp(value, what)
    return float(value)


def _milliseconds(value: object, what: str) -> float:
    """A HAR duration ("time"), as seconds; absent or -1 is none."""
    if value is None or value == -1:
        return 0.0
    if type(value) not in (int, float) or not 0 <= value <= MAX_TIMESTAMP:
        raise RecordError(f"{what} is not a duration in milliseconds")
    return value / 1000


def _message(item: object, default_time: float) -> Message | None:
    direction = field_of(item, "type", "message")
    if direction not in ("send", "receive"):
        return None  # Chrome also lists frame errors here
    opcode = field_of(item, "opcode", "message")
    integer(0, 15)(opcode, "message opcode")
    if opcode not in TYPES_BY_OPCODE:
        raise RecordError(f"unknown opcode {opcode}")
    data = field_of(item, "data", "message", "")
    text(data, "message data")
    if opcode == 1 and field_of(item, "_encoding", "message", None) != "base64":
        payload = data.encode("utf-8")
    else:
        payload = base64.b64decode(data, validate=True)
    when = field_of(item, "time", "message", None)
    return Message(
        from_client=direction == "send",
        type=TYPES_BY_OPCODE[opcode],
        size=field_of(item, "_size", "message", len(payload)),
        payload=payload,
        timestamp=_timestamp(when, "message time") if when is not None else default_time,
        injected=field_of(item, "_injected", "message", False),
        sha256=field_of(item, "_sha256", "message", None),
        rtt=field_of(item, "_rtt", "message", None),
    )


def _derived_end(hop: Hop, messages: list[Message], entry: dict) -> None:
    """How a hop ended, for HAR files without wsinspect's record of it."""
    response = field_of(entry, "response", "HAR entry", None) or {}
    hop.error = field_of(response, "_error", "response", None) or None
    if hop.response_status is None:
        waited = _milliseconds(entry.get("time"), "entry time")
        hop.failed(hop.error, hop.timestamp_start + waited)
    elif hop.response_status == 101:
        closes = [m for m in messages if m.type.value == "close"]
        if closes:
            code, reason = closes[0].close_code_reason()
            by, ended = closes[0].direction, closes[-1].timestamp
            hop.ended(Close(code=code, reason=reason, by=by, timestamp=ended))


def _headers(items: object, what: str) -> list[tuple[str, str]]:
    if items is None:
        return []
    if type(items) is not list:
        raise RecordError(f"{what} is not a list")
    pairs = [
        (field_of(h, "name", f"{what} {n}"), field_of(h, "value", f"{what} {n}"))
        for n, h in enumerate(items, start=1)
    ]
    header_list(pairs, what)
    return pairs


def _optional_text(record: object, key: str, what: str) -> str:
    """A text field that may be absent or null (as empty)."""
    value = field_of(record, key, what, None)
    if value is None:
        return ""
    text(value, f"{what} {key}")
    return value


def _derived_hop(entry: dict, url: str, headers, response_headers) -> Hop:
    """A hop from a HAR entry's standard fields, as Chrome and mitmproxy write them."""
    request = field_of(entry, "request", "HAR entry")
    response = field_of(entry, "response", "HAR entry", None) or {}
    start = _timestamp(field_of(entry, "startedDateTime", "HAR entry"), "startedDateTime")
    status = field_of(response, "status", "response", 0)
    integer(0, 999)(status, "response status")
    http_version = _optional_text(request, "httpVersion", "request")
    split = urlsplit(url)
    target = (split.path or "/") + (f"?{split.query}" if split.query else "")
    server_addr = None
    if address := _optional_text(entry, "serverIPAddress", "HAR entry"):
        # HAR has no port: the URL's is the best guess
        server_addr = (address.strip("[]"), split.port or _DEFAULT_PORTS.get(split.scheme, 80))
    waited = _milliseconds(field_of(entry, "time", "HAR entry", None), "entry time")
    hop = Hop(
        mode=HAR_MODE,
        url=url,
        request_line=f"{_optional_text(request, 'method', 'request') or 'GET'} {target} "
        f"{http_version}",
        http_version=http_version,
        request_headers=headers,
        timestamp_start=start,
        server_addr=server_addr,
    )
    reason = _optional_text(response, "statusText", "response")
    if status:
        version = _optional_text(response, "httpVersion", "response") or None
        hop.answered(status, reason, response_headers, version, start + waited)
    else:  # no answer (status 0); what else the entry says of one is kept as it is
        hop.response_reason, hop.response_headers = reason, response_headers
    return hop


def hop_from_entry(entry: object) -> tuple[Hop, list[Message]] | None:
    request = field_of(entry, "request", "HAR entry")
    headers = _headers(field_of(request, "headers", "request", None), "request header")
    url = field_of(request, "url", "request")
    text(url, "request url")
    kind = field_of(entry, "_resourceType", "HAR entry", None)
    items = field_of(entry, "_webSocketMessages", "HAR entry", None) or []
    if not (
        kind == "websocket"
        or items
        or "websocket" in header_tokens(headers, "Upgrade")
        or url.startswith(("ws://", "wss://"))
    ):
        return None
    response = field_of(entry, "response", "HAR entry", None) or {}
    response_headers = _headers(field_of(response, "headers", "response", None), "response header")
    record = field_of(entry, "_wsinspect", "HAR entry", None)
    if record:
        hop = hop_from_record(record, headers, response_headers)
    else:
        hop = _derived_hop(entry, as_ws_url(url), headers, response_headers)
    if type(items) is not list:
        raise RecordError("_webSocketMessages is not a list")
    messages = []
    for number, item in enumerate(items, start=1):
        try:
            if (message := _message(item, hop.timestamp_start)) is not None:
                messages.append(message)
        except ValueError as e:
            raise RecordError(f"message {number}: {e}") from None
    if not record:
        _derived_end(hop, messages, entry)
    return checked(hop, messages)


def read_har(path: Path, fo: BinaryIO) -> SessionStore:
    """Entries become hops in file order (Chrome's is the order requests started); each
    entry's JSON is let go once its hop is in the store."""
    try:
        document = json.loads(fo.read().decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise CaptureError(f"{path}: not UTF-8 JSON ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise CaptureError(f"{path}: JSON nested too deeply to be a HAR file") from None
    except ValueError as e:
        raise CaptureError(f"{path}: not valid JSON, truncated or damaged ({e})") from None
    log = document.get("log") if isinstance(document, dict) else None
    if not isinstance(log, dict) or not isinstance(log.get("entries"), list):
        raise CaptureError(f"{path}: JSON but not a HAR file (no log.entries)")
    entries = log["entries"]
    store = SessionStore()
    for number in range(len(entries)):
        entry, entries[number] = entries[number], None
        try:
            read = hop_from_entry(entry)
        except (ValueError, OverflowError) as e:  # RecordError, and what parsing a field raised
            raise CaptureError(f"{path}: HAR entry {number + 1} is damaged ({e})") from None
        if read is not None:
            add_imported_hop(store, *read)
    store.flush()
    return store
