"""wsinspect: inspect WebSocket sessions through an intercepting proxy."""

__version__ = "0.1.0"
