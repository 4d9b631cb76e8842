"""What the commands that read captures (report, open) share: the captures named on the
command line opened, one as it is or several lined up (wsinspect.lineup), or the one line
that says why not."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import WsinspectError
from ..lineup import open_captures
from ..store import SessionStore
from ..text import print_error


def open_named(files: Sequence[str]) -> SessionStore | None:
    """The captures in `files`; None once why they cannot be opened has been printed."""
    try:
        return open_captures(files)
    except WsinspectError as e:
        print_error(str(e))
        return None
