"""The Calls tab: the session's protocol and call statistics, its slowest calls and the
unanswered ones; choosing one shows its message in the message list."""

from __future__ import annotations

import json

from textual.message import Message as TextualMessage
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from ..protocols import Call, CallStats
from .format import SafeText, milliseconds

UNANSWERED_LISTED = 50


def calls_head(stats: CallStats, decoded: int, total: int) -> SafeText:
    """The protocol, counts and latencies; how far decoding has gone while it goes on."""
    if stats.protocol is None:
        return SafeText("No application protocol: the handshake names none and the first "
                        "messages do not show one (Socket.IO, GraphQL over WebSocket, STOMP, "
                        "MQTT, SignalR, JSON-RPC).", style="italic")
    text = SafeText.line(stats.protocol, style="bold")
    text.append(f"  {stats.calls} calls, {stats.answered} answered")
    if stats.latency_p50 is not None:
        text.append(f" (p50 {milliseconds(stats.latency_p50)}, "
                    f"max {milliseconds(stats.latency_max)})")
    text.append(f", {stats.unanswered} unanswered")
    if decoded < total:
        text.append(f"  decoding… {100 * decoded // max(1, total)}%", style="bold")
    return text


def call_line(call: Call) -> SafeText:
    """`   12.3 ms  #42     C→S chat room (id 3)`: latency (or "no answer"), the call's
    message, direction, label and detail."""
    latency = milliseconds(call.latency) if call.latency is not None else "no answer"
    text = SafeText.line(f"{latency:>11}  ", style="bold")
    text.append(f"#{call.index:<7} {'C→S' if call.from_client else 'S→C'} ")
    text.append(call.label, style="bold")
    detail = call.operation or call.destination or call.topic
    if detail:
        text.append(f" {detail}")
    if call.id is not None:
        text.append(f" (id {json.dumps(call.id, ensure_ascii=False)})", style="dim")
    return text


class CallsList(OptionList):
    """The slowest answered calls, then the unanswered ones, each an option."""

    class Chosen(TextualMessage):
        """A call was chosen: `index` is its message's index in the hop."""

        def __init__(self, index: int) -> None:
            super().__init__()
            self.index = index

    def show(self, stats: CallStats) -> None:
        highlighted = self.highlighted
        self._indexes: list[int] = []  # by option id: the message each call is in
        options: list[Option | None] = []

        def call_option(call: Call) -> Option:
            self._indexes.append(call.index)
            return Option(call_line(call), id=str(len(self._indexes) - 1))

        if stats.slowest:
            options.append(Option(SafeText.line("Slowest", style="bold underline"),
                                  disabled=True))
            options += [call_option(c) for c in stats.slowest]
        if stats.unanswered_calls:
            if options:
                options.append(None)
            options.append(Option(SafeText.line("Unanswered", style="bold underline"),
                                  disabled=True))
            listed = stats.unanswered_calls[:UNANSWERED_LISTED]
            options += [call_option(c) for c in listed]
            if len(stats.unanswered_calls) > len(listed):
                more = len(stats.unanswered_calls) - len(listed)
                options.append(Option(SafeText.line(f"… and {more} more"), disabled=True))
        self.set_options(options)
        if highlighted is not None and highlighted < self.option_count:
            self.highlighted = highlighted

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id:
            self.post_message(self.Chosen(self._indexes[int(event.option.id)]))
