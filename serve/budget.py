"""A worker's memory budgets: bytes that requests may hold at once, reserved before they are taken.

Two of them bound what a worker holds for requests, whatever clients send (docs/SERVING.md,
Limits): the bodies being received or waiting to run (``BODY_BUDGET_MB``, reserved from
Content-Length before a byte is read) and the images being decoded (``DECODE_BUDGET_MB``,
reserved from each image's header before its pixels are decoded). A request that does not fit
now is answered 503 with Retry-After at once; it never waits holding memory.
"""
from __future__ import annotations

import threading


class Budget:
    """A number of bytes shared by the requests of one worker; thread-safe."""

    def __init__(self, total_bytes: int):
        self.total, self.used = int(total_bytes), 0
        self._lock = threading.Lock()

    def take(self, nbytes: int) -> bool:
        """Reserve ``nbytes`` if they fit now; False (nothing reserved) if they do not."""
        with self._lock:
            if self.used + nbytes > self.total:
                return False
            self.used += nbytes
            return True

    def give(self, nbytes: int) -> None:
        """Return bytes reserved with ``take``."""
        with self._lock:
            self.used -= nbytes


def megabytes(value: float) -> int:
    """A setting in MB (``BODY_BUDGET_MB`` ...) as bytes."""
    return int(value * 1024 * 1024)
