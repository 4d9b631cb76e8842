"""The colours of data: outcome and severity badges, header changes, log levels, the
handshake's checks, the status line's problem count.

Each is a component class styled in app.tcss from the theme's variables ($success, $error…),
so the dark and the light theme each colour them their way. Widgets that show such text mix in
`Coloured`, which declares the classes, and hand `self.colours()` to the functions that build
the text; they build it again when the theme changes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from rich.style import Style

if TYPE_CHECKING:
    from textual.widget import Widget

COLOUR_CLASSES = frozenset({
    "outcome--open", "outcome--closed", "outcome--rejected", "outcome--failed",
    "severity--error", "severity--warning", "severity--info", "severity--none",
    "change--kept", "change--changed", "change--dropped", "change--added", "change--hop-by-hop",
    "level--error", "level--warning", "level--other",
    "check--passed", "check--failed",
    "status--problems",
})

Colours = Mapping[str, Style]


class ComponentColours(Mapping[str, Style]):
    """A widget's data colours, each looked up when used (Textual caches the styles): the
    sessions list asks for them at every refresh of its counters, and most cells use none."""

    __slots__ = ("_widget",)

    def __init__(self, widget: Widget) -> None:
        self._widget = widget

    def __getitem__(self, name: str) -> Style:
        if name not in COLOUR_CLASSES:
            raise KeyError(name)
        # Partial: a colour never brings the background of the widget that asked.
        return self._widget.get_component_rich_style(name, partial=True)

    def __iter__(self) -> Iterator[str]:
        return iter(COLOUR_CLASSES)

    def __len__(self) -> int:
        return len(COLOUR_CLASSES)


class Coloured:
    """Mixed into a widget or a screen: the data colours as its theme resolves them."""

    def __init_subclass__(cls, **kwargs) -> None:
        # Textual reads component classes from the widget classes' own dicts, not a mixin's.
        super().__init_subclass__(**kwargs)
        cls.COMPONENT_CLASSES = {*cls.__dict__.get("COMPONENT_CLASSES", ()), *COLOUR_CLASSES}

    def colours(self: Widget) -> Colours:
        return ComponentColours(self)
