"""One session: its handshakes, messages, calls, findings, hop boundaries and timeline, in
tabs; resending messages, replaying and exporting the session."""

from __future__ import annotations

import os
import time
from pathlib import Path

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.reactive import reactive
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Input, Select, Static, TabbedContent, TabPane

from ..diagnosis import diagnose
from ..model import Message, MessageType
from ..resend import ResendError, decode_payload
from ..store import CaptureError, SessionStore, StoreChanges
from .app_access import AppAccess
from .calls import CallsList, calls_head
from .colours import Coloured
from .commands import BindingCommands
from .dialogs import EditedPayload, EditPayloadScreen
from .findings import findings_text, hops_text
from .format import SafeText, is_text, printable
from .handshake import session_handshakes
from .intercept import INTERCEPT_BINDINGS
from .message_list import FilterError, MessageFilter, MessageList, list_header
from .pacing import BUSY_SUMMARY_INTERVAL
from .payload import PayloadPane, SavePayloadScreen, payload_for_clipboard
from .sessions import MESSAGE_COUNTS_INTERVAL
from .status import SessionSummary, StatusBar
from .timeline import TimelineView

TABS = Binding.Group("Tabs")
RESEND = Binding.Group("Resend")
# The keys that act on the message list and its payload: offered on the Messages tab only.
MESSAGE_ACTIONS = frozenset({
    "focus_filter", "next_match", "previous_match", "cycle_direction", "cycle_type",
    "toggle_only_matches", "copy_payload", "save_payload", "cycle_view", "resend",
    "resend_other_side", "edit_resend",
})
TAB_SCROLLS = {"handshake": "#handshake-scroll", "findings": "#findings-scroll",
               "hops": "#hops-scroll", "calls": "#calls-list", "timeline": "#timeline-view"}
CALLS_LISTED = 10  # the slowest calls the Calls tab lists
CALLS_REFRESH = 0.5  # seconds between refreshes of the Calls tab while decoding goes on
WIDE_FOOTER = 100  # from this width, the footer also shows ctrl+p for the command palette
SAVED_FILE_MODE = 0o600  # a payload may hold credentials: private, like captures and exports

DIRECTIONS = [("both ways", "both"), ("client → server", "client"), ("server → client", "server")]
TYPES = [("all types", "all")] + [(t.value, t.value) for t in MessageType]


class MessageHeader(Widget):
    """The message list's column titles (they follow its layout at this width), and how far
    a filter has scanned."""

    progress = reactive("")
    labels = reactive(False)  # the session speaks a protocol: a Label column

    def render(self) -> SafeText:
        text = SafeText.line(list_header(self.size.width, self.labels))
        if self.progress:
            text.append(f"   {self.progress}", style="bold")
        return text


class SessionScreen(AppAccess, Coloured, Screen):
    """Tabs: Handshake, Messages, Calls, Findings, Hops and Timeline. The footer offers what the
    current tab can do, most used first (at 80 columns the rightmost keys are cut before the
    left ones)."""

    # A tooltip makes a binding a command of the palette too (see commands.py).
    BINDINGS = [
        Binding("escape", "back", "Back", tooltip="Back to the list of sessions"),
        Binding("h", "show_tab('handshake')", "Handshake", group=TABS,
                tooltip="Show the handshake of each hop"),
        Binding("m", "show_tab('messages')", "Messages", group=TABS,
                tooltip="Show the message list"),
        Binding("a", "show_tab('calls')", "Calls", group=TABS,
                tooltip="The slowest and the unanswered calls of the session's protocol"),
        Binding("i", "show_tab('findings')", "Findings", group=TABS,
                tooltip="What went wrong and how to fix it"),
        Binding("b", "show_tab('hops')", "Hops", group=TABS,
                tooltip="Header changes at each proxy between hops"),
        Binding("t", "show_tab('timeline')", "Timeline", group=TABS,
                tooltip="Rates each way, silences and ping round trips over time"),
        Binding("r", "resend", "Resend", group=RESEND,
                tooltip="Send the selected message where it went"),
        Binding("R", "resend_other_side", "Resend to the other side", group=RESEND,
                tooltip="Send the selected message to the other peer"),
        Binding("e", "edit_resend", "Edit and resend", group=RESEND,
                tooltip="Edit the selected payload, then send it"),
        Binding("p", "replay", "Replay", tooltip="Replay the session and compare the answers"),
        *INTERCEPT_BINDINGS,
        Binding("x", "export", "Export", tooltip="Write HAR, flows or JSON lines (redacted)"),
        Binding("slash", "focus_filter", "Filter", show=False,  # the filter box shows "/"
                tooltip="Filter by text, /regex/, label:NAME or protocol:NAME"),
        Binding("v", "cycle_view", "View", tooltip="Show the payload decoded, as text, JSON or hex"),
        Binding("c", "copy_payload", "Copy", tooltip="Copy the selected payload to the clipboard"),
        Binding("s", "save_payload", "Save", tooltip="Save the selected payload to a file"),
        Binding("n", "next_match", "Next match", show=False,
                tooltip="Jump to the next matching message"),
        Binding("N", "previous_match", "Prev match", show=False,
                tooltip="Jump to the previous matching message"),
        Binding("d", "cycle_direction", "Direction", show=False,
                tooltip="Filter by direction: both ways, client → server, server → client"),
        Binding("y", "cycle_type", "Type", show=False, tooltip="Filter by message type"),
        Binding("o", "toggle_only_matches", "Only matches", show=False,
                tooltip="Show only matching messages, or mark them among all"),
    ]
    COMMANDS = {BindingCommands}

    def __init__(self, session_id: int) -> None:
        super().__init__()
        self.session_id = session_id
        self.only_matches = True
        self._summary_stale = False
        self._summary_shown = 0.0
        self._calls_shown = 0.0

    @property
    def store(self) -> SessionStore:
        return self.wsapp.store

    def compose(self) -> ComposeResult:
        session = self.store.session(self.session_id)
        yield StatusBar()
        yield SessionSummary(id="session-summary")
        initial = "messages" if session.status == 101 else "handshake"
        with TabbedContent(initial=initial, id="session-tabs"):
            with TabPane("Handshake", id="handshake"):
                with VerticalScroll(id="handshake-scroll"):
                    yield Static(id="handshake-text")
            with TabPane("Messages", id="messages"):
                with Horizontal(id="filter-bar"):
                    yield Input(placeholder="/ filter: text, /regex/, label:x, protocol:x",
                                id="filter-text", compact=True)
                    yield Select(DIRECTIONS, value="both", allow_blank=False,
                                 id="filter-direction", compact=True)
                    yield Select(TYPES, value="all", allow_blank=False, id="filter-type",
                                 compact=True)
                yield MessageHeader(id="message-header")
                yield MessageList(self.store, self.session_id, load=self.wsapp.loop_load,
                                  id="message-list")
                yield PayloadPane(session.timestamp_start, id="payload")
            with TabPane("Calls", id="calls"):
                yield Static(id="calls-head")
                yield CallsList(id="calls-list")
            with TabPane("Findings", id="findings"):
                with VerticalScroll(classes="tab-scroll", id="findings-scroll"):
                    yield Static(id="findings-text")
            with TabPane("Hops", id="hops"):
                with VerticalScroll(classes="tab-scroll", id="hops-scroll"):
                    yield Static(id="hops-text")
            with TabPane("Timeline", id="timeline"):
                yield TimelineView(self.store, self.session_id, self.wsapp.clock,
                                   id="timeline-view")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        # Kept, not queried per store batch: a query walks the whole screen's DOM, and batches
        # come up to 50 times a second under load.
        self._summary = self.query_one(SessionSummary)
        self._message_list = self.query_one(MessageList)
        self._timeline = self.query_one(TimelineView)
        self._header = self.query_one(MessageHeader)
        self._payload = self.query_one(PayloadPane)
        self._tabs = self.query_one(TabbedContent)
        self._show_session()
        self.set_interval(MESSAGE_COUNTS_INTERVAL, self._refresh_summary)
        self._message_list.messages_arrived()  # any that came while the screen was built
        self._show_decoding()
        self._focus_tab(self.query_one(TabbedContent).active)
        # The widgets read the store as they mounted; from here on they follow its changes.
        self.wsapp.store_changed_signal.subscribe(self, self.store_changed, immediate=True)
        self.app.theme_changed_signal.subscribe(self, lambda _: self._show_session())

    def _refresh_summary(self) -> None:
        if not self._summary_stale or not self._summary.is_attached:  # shutting down
            return
        if self.wsapp.loop_load.saturated and (
            time.monotonic() - self._summary_shown < BUSY_SUMMARY_INTERVAL
        ):
            return  # each repaint is taken from the proxy: see pacing
        self._show_session(handshakes=False)

    def _show_session(self, handshakes: bool = True) -> None:
        self._summary_stale = False
        self._summary_shown = time.monotonic()
        session = self.store.session(self.session_id)
        self._summary.show(session, self.wsapp.clock())
        if handshakes:
            colours = self.colours()
            self.query_one("#handshake-text", Static).update(session_handshakes(session, colours))
            self.query_one("#findings-text", Static).update(
                findings_text(diagnose(session), colours)
            )
            self.query_one("#hops-text", Static).update(hops_text(session, colours))

    def store_changed(self, changes: StoreChanges) -> None:
        if self.session_id in changes.messages:
            self._message_list.messages_arrived()
            self._timeline.messages_arrived()
        if self.session_id in changes.updated:
            self._show_session()
            self._timeline.draw()
        elif self.session_id in changes.messages:
            self._summary_stale = True  # shown by _refresh_summary, a few times a second

    # ----- tabs ----------------------------------------------------------------------------

    def on_resize(self, event: events.Resize) -> None:
        # At 80 columns the footer's room goes to the tab's own keys; ctrl+p still works.
        self.query_one(Footer).show_command_palette = event.size.width >= WIDE_FOOTER

    def action_back(self) -> None:
        """Esc: in the filter box with a filter typed, clears it; otherwise leaves."""
        filter_input = self.query_one("#filter-text", Input)
        if self.focused is filter_input and filter_input.value:
            filter_input.value = ""
            return
        self.dismiss()

    def action_show_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        self._focus_tab(tab)

    def _focus_tab(self, tab: str) -> None:
        """Give the keyboard to the tab's content, so arrows and PageDown scroll it."""
        if tab == "messages":
            self.query_one(MessageList).focus()
        else:
            self.query_one(TAB_SCROLLS[tab]).focus()
        if tab == "calls":
            self._show_calls()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self._focus_tab(event.pane.id)  # a click on a tab, as well as its key
        if event.pane.id == "timeline":
            self._timeline.start()
        self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in MESSAGE_ACTIONS and self.is_mounted:
            tabs = self.query(TabbedContent)
            return bool(tabs) and tabs.first().active == "messages"
        return True

    # ----- filtering -----------------------------------------------------------------------

    def action_focus_filter(self) -> None:
        self.action_show_tab("messages")
        self.query_one("#filter-text", Input).focus()

    def current_filter(self) -> MessageFilter:
        direction = self.query_one("#filter-direction", Select).value
        kind = self.query_one("#filter-type", Select).value
        return MessageFilter(
            query=self.query_one("#filter-text", Input).value,
            direction=None if direction == "both" else direction,
            type=None if kind == "all" else MessageType(kind),
            only_matches=self.only_matches,
        )

    def apply_filter(self) -> None:
        text_input = self.query_one("#filter-text", Input)
        try:
            self.query_one(MessageList).set_filter(self.current_filter())
        except FilterError as e:
            text_input.add_class("-invalid")
            self.notify(str(e), severity="error", timeout=3)
            return
        text_input.remove_class("-invalid")

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter-text":
            self.apply_filter()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter-text":
            message_list = self.query_one(MessageList)
            message_list.focus()
            message_list.jump_to_hit()

    def on_select_changed(self, event: Select.Changed) -> None:
        self.apply_filter()

    def _cycle(self, select_id: str, options: list[tuple[str, str]]) -> None:
        select = self.query_one(select_id, Select)
        values = [value for _, value in options]
        select.value = values[(values.index(select.value) + 1) % len(values)]

    def action_cycle_direction(self) -> None:
        self._cycle("#filter-direction", DIRECTIONS)

    def action_cycle_type(self) -> None:
        self._cycle("#filter-type", TYPES)

    def action_toggle_only_matches(self) -> None:
        self.only_matches = not self.only_matches
        self.notify(
            "showing only matching messages" if self.only_matches else "marking matches (▶)",
            timeout=2,
        )
        self.apply_filter()

    def action_next_match(self) -> None:
        if not self.query_one(MessageList).jump_to_hit(forward=True):
            self.notify("no matches", timeout=2)

    def action_previous_match(self) -> None:
        if not self.query_one(MessageList).jump_to_hit(forward=False):
            self.notify("no matches", timeout=2)

    def on_message_list_scan_progress(self, event: MessageList.ScanProgress) -> None:
        header = self.query_one(MessageHeader)
        header.progress = (
            f"filtering… {100 * event.scanned // max(1, event.total)}%"
            if event.scanned < event.total else ""
        )

    # ----- the session's protocol and its calls --------------------------------------------

    def on_message_list_decode_progress(self, event: MessageList.DecodeProgress) -> None:
        self._show_decoding()

    def _show_decoding(self) -> None:
        """The protocol in the summary and the list's header; the calls, when shown; the
        selected message's decoded view once decoding reaches it."""
        track = self._message_list.track
        self._summary.show_protocol(track.protocol)
        self._header.labels = track.protocol is not None
        done = not track.wants(self._message_list.total)
        if self._tabs.active == "calls" and (
            done or time.monotonic() - self._calls_shown >= CALLS_REFRESH
        ):
            self._show_calls()
        pane = self._payload
        if (pane.message is not None and pane.decoded is None
                and track.summary(pane.message.index)):
            self._show_payload(pane.message.index)

    def _show_calls(self) -> None:
        self._calls_shown = time.monotonic()
        message_list = self._message_list
        stats = message_list.track.stats(CALLS_LISTED)
        self.query_one("#calls-head", Static).update(
            calls_head(stats, message_list.track.decoded, message_list.total)
        )
        self.query_one(CallsList).show(stats)

    def on_calls_list_chosen(self, event: CallsList.Chosen) -> None:
        """A call chosen in the Calls tab: its message in the message list, the filter
        cleared if it hid it."""
        self.action_show_tab("messages")
        message_list = self._message_list
        if not message_list.select_message(event.index):
            self.query_one("#filter-text", Input).value = ""
            self.query_one("#filter-direction", Select).value = "both"
            self.query_one("#filter-type", Select).value = "all"
            message_list.set_filter(MessageFilter(only_matches=self.only_matches))
            message_list.select_message(event.index)

    # ----- the payload ---------------------------------------------------------------------

    def on_message_list_highlighted(self, event: MessageList.Highlighted) -> None:
        self._show_payload(event.index)

    def _show_payload(self, index: int | None) -> None:
        message = decoded = None
        if index is not None:
            try:
                found = self.store.messages(self.session_id, index, index + 1)
                message = found[0] if found else None
                decoded = self._message_list.track.detail(
                    index, lambda start, stop: self.store.messages(self.session_id, start, stop)
                )
            except CaptureError as e:
                self.wsapp.notify_problem(str(e), "damaged capture")
        self.query_one(PayloadPane).show(message, decoded)

    def action_cycle_view(self) -> None:
        self.query_one(PayloadPane).cycle_view()

    def _selected_message(self):
        message = self.query_one(PayloadPane).message
        if message is None:
            self.notify("select a message first", severity="warning", timeout=2)
        return message

    def action_copy_payload(self) -> None:
        message = self._selected_message()
        if message is not None:
            self.app.copy_to_clipboard(payload_for_clipboard(message))
            self.notify(f"copied message #{message.index} to the clipboard", timeout=2)

    def action_save_payload(self) -> None:
        message = self._selected_message()
        if message is None:
            return
        suggestion = f"wsinspect-{self.session_id}-{message.index}.bin"

        def save(path: Path | None) -> None:
            if path is None:
                return
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SAVED_FILE_MODE)
                with open(fd, "wb") as f:
                    f.write(message.payload)
            except OSError as e:
                self.notify(f"could not save: {e}", severity="error")
                return
            note = " (the stored part; the payload was capped)" if message.truncated else ""
            self.notify(f"saved {len(message.payload)} bytes to {path}{note}")

        self.app.push_screen(SavePayloadScreen(suggestion), save)

    # ----- resend, replay, export ----------------------------------------------------------

    def _resendable(self) -> Message | None:
        if self.wsapp.live_proxy_missing("Resending"):
            return None
        return self._selected_message()

    def action_resend(self) -> None:
        if (message := self._resendable()) is not None:
            self.wsapp.resend(self.session_id, message.index, None)

    def action_resend_other_side(self) -> None:
        if (message := self._resendable()) is not None:
            self.wsapp.resend(self.session_id, message.index,
                            "client" if message.from_client else "server")

    def action_edit_resend(self) -> None:
        message = self._resendable()
        if message is None:
            return
        # Text with control characters (newlines too) is edited as hex: a one-line input box
        # would show them raw, and their escaped form would be sent as typed.
        if is_text(message) and printable(message.text()) == message.text():
            initial, encoding = message.text(), "text"
        else:
            initial, encoding = message.payload.hex(" "), "hex"

        def send(edited: EditedPayload | None) -> None:
            if edited is None:
                return
            try:
                payload = decode_payload(edited.text, edited.encoding)
            except ResendError as e:
                self.wsapp.notify_problem(str(e), "cannot resend")
                return
            self.wsapp.resend(self.session_id, message.index, edited.to, payload)

        self.app.push_screen(EditPayloadScreen(initial, encoding, f"message #{message.index}"),
                             send)

    def action_replay(self) -> None:
        self.wsapp.replay_session(self.session_id)

    def action_export(self) -> None:
        self.wsapp.export_sessions(self.session_id)
