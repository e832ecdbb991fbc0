"""The one base of rtcontrol's own errors, so a caller can tell them from a bug with one ``except``.

Each error also keeps the built-in base it had (``ValueError`` for bad input, ``ConnectionError`` for a
link, ``OSError`` for shared memory...), so code that catches those still does. Each message says what
went wrong and where.
"""

from __future__ import annotations

__all__ = ["RtcontrolError"]


class RtcontrolError(Exception):
    """An error rtcontrol raises on purpose, with a message for the operator."""
