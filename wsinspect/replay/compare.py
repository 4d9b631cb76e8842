"""How original and replay are compared (`compare`): only the server's text and binary messages
count (ping, pong and close frames do not, nor messages wsinspect injected), each taken as its
type plus payload (its size and SHA-256 when it was stored capped). The two
sequences are aligned in order by their longest runs of identical messages (Python's difflib);
between two runs, messages are paired in order as "differ", and the ones left over are "missing"
(only in the original) or "extra" (only in the replay). The answers match when every entry does.
Pure functions of the messages.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from ..model import Message, MessageType
from ..text import printable


class Match(StrEnum):
    """How a server message of the original and one of the replay compare."""

    MATCH = "match"
    DIFFER = "differ"
    MISSING = "missing"  # only in the original
    EXTRA = "extra"  # only in the replay


@dataclass(frozen=True, slots=True)
class ComparedMessage:
    status: Match
    original: Message | None
    replay: Message | None


@dataclass
class Comparison:
    entries: list[ComparedMessage] = field(default_factory=list)

    @property
    def matched(self) -> bool:
        return all(e.status is Match.MATCH for e in self.entries)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(map(str, Match), 0)
        for entry in self.entries:
            counts[entry.status] += 1
        return counts

    def lines(self) -> list[str]:
        """The comparison for people: one line per message that did not match, and a total."""
        lines = []
        for entry in self.entries:
            if entry.status is Match.DIFFER:
                lines.append(
                    f"  ~ original #{entry.original.index} {preview(entry.original)}  "
                    f"replay #{entry.replay.index} {preview(entry.replay)}"
                )
            elif entry.status is Match.MISSING:
                lines.append(
                    f"  - missing: original #{entry.original.index} {preview(entry.original)}"
                )
            elif entry.status is Match.EXTRA:
                lines.append(f"  + extra: replay #{entry.replay.index} {preview(entry.replay)}")
        counts = self.counts()
        verdict = "the server's answers matched" if self.matched else "the server's answers differ"
        lines.append(
            f"{verdict}: {counts['match']} match, {counts['differ']} differ, "
            f"{counts['missing']} missing, {counts['extra']} extra"
        )
        return lines


def preview(message: Message, limit: int = 60) -> str:
    if message.type is MessageType.TEXT:
        text = message.text()
        shown = printable(text[:limit]) + ("…" if len(text) > limit else "")
        return f'text "{shown}"'
    shown = message.payload[: limit // 2].hex(" ")
    return f"binary {message.size} B [{shown}{' …' if message.size > limit // 2 else ''}]"


def _identity(message: Message) -> tuple:
    digest = message.sha256 or hashlib.sha256(message.payload).hexdigest()
    return message.type, message.size, digest


def compare(original: Sequence[Message], replayed: Sequence[Message]) -> Comparison:
    """Align two sequences of server messages (see the module docstring for the rule)."""
    matcher = difflib.SequenceMatcher(
        None, [_identity(m) for m in original], [_identity(m) for m in replayed], autojunk=False
    )
    entries = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            pairs = zip(original[i1:i2], replayed[j1:j2])
            entries += [ComparedMessage(Match.MATCH, a, b) for a, b in pairs]
            continue
        paired = min(i2 - i1, j2 - j1)
        entries += [
            ComparedMessage(Match.DIFFER, original[i1 + k], replayed[j1 + k]) for k in range(paired)
        ]
        entries += [ComparedMessage(Match.MISSING, m, None) for m in original[i1 + paired : i2]]
        entries += [ComparedMessage(Match.EXTRA, None, m) for m in replayed[j1 + paired : j2]]
    return Comparison(entries)
