"""Diagnosis as display text: the findings badge, the Findings tab and the Hops tab."""

from __future__ import annotations

from rich.console import Group
from rich.padding import Padding

from ..diagnosis import Change, Finding, HeaderChange, Severity, boundaries, diagnose, worst
from ..model import Session
from .colours import Colours
from .format import SafeText

CHANGE_MARKS = {Change.KEPT: " ", Change.CHANGED: "~", Change.DROPPED: "-", Change.ADDED: "+"}


def findings_badge(session: Session, colours: Colours) -> SafeText:
    """The worst finding's severity, or "ok"."""
    severity = worst(diagnose(session))
    if severity is None:
        return SafeText(" ok ", style=colours["severity--none"])
    return SafeText(f" {severity.value} ", style=colours[f"severity--{severity.value}"])


def indented(text: SafeText, cells: int) -> Padding:
    """`text` indented by `cells`, its wrapped lines too."""
    return Padding(text, (0, 0, 0, cells))


def findings_text(findings: list[Finding], colours: Colours) -> Group:
    if not findings:
        return Group(SafeText("No findings: the handshake and close look healthy on every hop."))
    parts = []
    for finding in findings:
        head = SafeText()
        head.append(f" {finding.severity.value} ",
                    style=colours[f"severity--{finding.severity.value}"])
        head.append(SafeText.line(f" {finding.code}", style="bold"))
        head.append(f"  hop {finding.hop}")
        parts += [
            head,
            indented(SafeText(finding.message), 2),
            indented(SafeText("Fix:", style="bold underline"), 2),
            indented(SafeText(finding.fix), 4),
            SafeText(""),
        ]
    return Group(*parts)


def _change_line(text: SafeText, change: HeaderChange, colours: Colours) -> None:
    style = colours[f"change--{change.change.value}"]
    text.append(f"  {CHANGE_MARKS[change.change]} {change.change.value:<7} ", style=style)
    text.append(SafeText.line(change.name, style="bold"))
    if change.change is Change.CHANGED:
        text.append(SafeText.line(f": {change.before or ''} → {change.after or ''}"))
    else:
        value = change.after if change.change is Change.ADDED else change.before
        text.append(SafeText.line(f": {value or ''}"))
    if change.hop_by_hop:
        text.append("  [hop-by-hop]", style=colours["change--hop-by-hop"])
    text.append("\n")


def hops_text(session: Session, colours: Colours) -> SafeText:
    """The header diff at each hop boundary, with each hop's HTTP version."""
    text = SafeText()
    found = boundaries(session)
    if not found:
        hop = session.first_hop
        text.append(
            f"One hop ({hop.http_version}): there is no proxy boundary to compare.\n"
            "Capture the same traffic on both sides of a proxy (two listeners) to see what it "
            "changes.\n"
        )
        return text
    for boundary in found:
        before, after = boundary.http_versions
        text.append(f"Hop {boundary.index} → hop {boundary.index + 1}", style="bold reverse")
        text.append(f"  hop {boundary.index} {before}, hop {boundary.index + 1} {after}\n")
        text.append("Request (as forwarded)\n", style="bold underline")
        for change in boundary.request:
            _change_line(text, change, colours)
        text.append("Response (as passed back)\n", style="bold underline")
        if not boundary.response:
            text.append("  (no response on both sides to compare)\n")
        for change in boundary.response:
            _change_line(text, change, colours)
        text.append("\n")
    return text
