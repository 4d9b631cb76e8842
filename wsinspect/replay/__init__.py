"""Replaying a recorded session on a new WebSocket connection, and comparing the answers.

mitmproxy cannot replay WebSocket sessions (upstream #5248); wsinspect opens a fresh
connection with wsproto over asyncio streams (TLS for wss), sends the recorded client messages
again and records what the server answers as a new session whose first hop has `replay_of` set
to the original session's id.

The Python API, for the app and scripts:

    plan = ReplayPlan.from_store(store, session_id, to=None, drop_headers=())
    result = await replay(plan, store, via=ProxyRoute.for_engine(engine), timing="fast")
    result.session       # the new session, in `store`
    result.comparison    # Comparison: .matched, .counts(), .entries, .lines()

- `via`: a `ProxyRoute` sends the replay through a running wsinspect proxy (HTTP CONNECT to a
  regular-mode listener), whose recorder records it into `store` like any session; None
  connects straight to the server and the replay records itself (hop mode "direct").
- `timing`: "fast" sends the messages back to back; "original" keeps their recorded spacing.
- `deadline`: seconds the whole replay may take (connecting, sending, listening); a server
  that keeps the connection busy (pings forever, answers endlessly) cannot keep it running.
  Default `DEFAULT_DEADLINE`, plus the recorded span of the client's messages for
  `timing="original"`.
- Errors (server gone, TLS failure, timeout, upgrade refused, the deadline passed) raise
  `ReplayError` with a one-line message. A refused upgrade is still recorded as a rejected
  session.
- An answer larger than the store's `max_payload` is kept as the proxy keeps it: the first
  `max_payload` bytes, its size and the SHA-256 of the whole, never buffered whole.

By job: `plan` (what to send; pure), `compare` (how the answers compare; pure), `client` (the
connection) and `recording` (how a replay is recorded).
"""

from __future__ import annotations

from ..errors import ReplayError
from .client import (
    DEFAULT_ANSWER_WAIT,
    DEFAULT_DEADLINE,
    DEFAULT_TIMEOUT,
    ProxyRoute,
    ReplayResult,
    replay,
)
from .compare import ComparedMessage, Comparison, Match, compare, preview
from .plan import CREDENTIAL_HEADERS, TIMINGS, ReplayPlan, Target, rebuilt_headers, server_answers
from .recording import CLOSE_WAIT

__all__ = [
    "CLOSE_WAIT",
    "CREDENTIAL_HEADERS",
    "DEFAULT_ANSWER_WAIT",
    "DEFAULT_DEADLINE",
    "DEFAULT_TIMEOUT",
    "TIMINGS",
    "ComparedMessage",
    "Comparison",
    "Match",
    "ProxyRoute",
    "ReplayError",
    "ReplayPlan",
    "ReplayResult",
    "Target",
    "compare",
    "preview",
    "rebuilt_headers",
    "replay",
    "server_answers",
]
