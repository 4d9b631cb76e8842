"""Application protocols spoken over WebSocket: detection, decoding, call pairing, statistics.

Pure domain code (no Textual, no mitmproxy): `analyse`/`analyse_hop` decode a recorded
session; `SessionDecoder` does the same one message at a time for a live one."""

from .parts import Part
from .session import (
    PROTOCOLS,
    Analysis,
    Call,
    CallStats,
    Decoded,
    ProtocolSummary,
    SessionDecoder,
    analyse,
    analyse_hop,
    detect,
    detect_content,
    detect_handshake,
    summarise,
)
from .track import HopTrack

__all__ = [
    "PROTOCOLS", "Analysis", "Call", "CallStats", "Decoded", "HopTrack", "Part",
    "ProtocolSummary", "SessionDecoder", "analyse", "analyse_hop", "detect", "detect_content",
    "detect_handshake", "summarise",
]
