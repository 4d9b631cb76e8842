"""JSON-RPC 2.0: requests, notifications, responses and batches of them."""

from __future__ import annotations

from .parts import Part, json_prefix_fields, loads, scalar_id

PROTOCOL = "json-rpc"


def looks_like(text: str) -> bool:
    if '"jsonrpc"' not in text:  # the key as JSON-RPC peers write it: no need to parse
        return False
    data = loads(text)
    items = data if isinstance(data, list) else [data]
    return bool(items) and all(isinstance(i, dict) and i.get("jsonrpc") == "2.0" for i in items)


def _part(item) -> Part:
    if not isinstance(item, dict):
        return Part(PROTOCOL, "invalid", fields={"value": item})
    call_id = scalar_id(item.get("id"))
    method = item.get("method")
    if isinstance(method, str):
        fields = {"method": method, "params": item.get("params")}
        if "id" in item:
            fields["id"] = item["id"]
        return Part(PROTOCOL, method, id=call_id, fields=fields,
                    call_key=call_id if call_id is not None else None)
    if "result" in item or "error" in item:
        outcome = "result" if "result" in item else "error"
        return Part(PROTOCOL, None, fallback_label=outcome, id=call_id,
                    answer_key=call_id if call_id is not None else None,
                    fields={"id": item.get("id"), outcome: item.get(outcome)})
    event = item.get("notification")
    if isinstance(event, str):  # rpc-websockets' events: {"notification": name, "params": …}
        return Part(PROTOCOL, event, fields=item)
    return Part(PROTOCOL, "invalid", id=call_id, fields=item)


class Decoder:
    def decode(self, payload: bytes, from_client: bool, is_text: bool, truncated: bool):
        text = payload.decode("utf-8", errors="replace")
        data = loads(text)
        if data is None:
            if not truncated:
                return [Part(PROTOCOL, "invalid")]
            # Cut short: name the first member it shows.
            seen = json_prefix_fields(text)
            method = seen.get("method")
            call_id = seen.get("id")
            if isinstance(method, str):
                return [Part(PROTOCOL, method, id=call_id, call_key=call_id, fields=seen)]
            return [Part(PROTOCOL, None, fallback_label="result", id=call_id,
                         answer_key=call_id, fields=seen)]
        if isinstance(data, list):
            return [_part(item) for item in data] or [Part(PROTOCOL, "invalid")]
        return [_part(data)]
