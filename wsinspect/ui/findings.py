"""Diagnosis as display text: the findings badge, the Findings tab and the Hops tab."""

from __future__ import annotations

from rich.text import Text

from ..diagnosis import Change, Finding, HeaderChange, Severity, boundaries, diagnose, worst
from ..model import Session
from .format import printable, safe_lines

SEVERITY_STYLES = {
    Severity.ERROR: "bold white on red",
    Severity.WARNING: "bold black on yellow",
    Severity.INFO: "bold white on blue",
}
CHANGE_STYLES = {
    Change.KEPT: "dim",
    Change.CHANGED: "bold yellow",
    Change.DROPPED: "bold red",
    Change.ADDED: "bold green",
}
CHANGE_MARKS = {Change.KEPT: " ", Change.CHANGED: "~", Change.DROPPED: "-", Change.ADDED: "+"}


def findings_badge(session: Session) -> Text:
    """The worst finding's severity, or "ok"."""
    severity = worst(diagnose(session))
    if severity is None:
        return Text(" ok ", style="dim")
    return Text(f" {severity.value} ", style=SEVERITY_STYLES[severity])


def findings_text(findings: list[Finding]) -> Text:
    text = Text()
    if not findings:
        text.append("No findings: the handshake and close look healthy on every hop.\n")
        return text
    for finding in findings:
        text.append(f" {finding.severity.value} ", style=SEVERITY_STYLES[finding.severity])
        text.append(f" {printable(finding.code)}", style="bold")
        text.append(f"  hop {finding.hop}\n")
        text.append(f"  {printable(finding.message)}\n")
        text.append("  Fix:\n", style="bold underline")
        for line in safe_lines(finding.fix).split("\n"):
            text.append(f"    {line}\n")
        text.append("\n")
    return text


def _change_line(text: Text, change: HeaderChange) -> None:
    style = CHANGE_STYLES[change.change]
    text.append(f"  {CHANGE_MARKS[change.change]} {change.change.value:<7} ", style=style)
    text.append(printable(change.name), style="bold")
    if change.change is Change.CHANGED:
        text.append(f": {printable(change.before or '')} → {printable(change.after or '')}")
    else:
        value = change.after if change.change is Change.ADDED else change.before
        text.append(f": {printable(value or '')}")
    if change.hop_by_hop:
        text.append("  [hop-by-hop]", style="italic magenta")
    text.append("\n")


def hops_text(session: Session) -> Text:
    """The header diff at each hop boundary, with each hop's HTTP version."""
    text = Text()
    found = boundaries(session)
    if not found:
        hop = session.first_hop
        text.append(
            f"One hop ({printable(hop.http_version)}): there is no proxy boundary to compare.\n"
            "Capture the same traffic on both sides of a proxy (two listeners) to see what it "
            "changes.\n"
        )
        return text
    for boundary in found:
        before, after = boundary.http_versions
        text.append(f"Hop {boundary.index} → hop {boundary.index + 1}", style="bold reverse")
        text.append(f"  hop {boundary.index} {printable(before)}, "
                    f"hop {boundary.index + 1} {printable(after)}\n")
        text.append("Request (as forwarded)\n", style="bold underline")
        for change in boundary.request:
            _change_line(text, change)
        text.append("Response (as passed back)\n", style="bold underline")
        if not boundary.response:
            text.append("  (no response on both sides to compare)\n")
        for change in boundary.response:
            _change_line(text, change)
        text.append("\n")
    return text
