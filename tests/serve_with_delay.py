"""``python -m tests.serve_with_delay SECONDS ARGS...``: ``python -m serve ARGS`` with model loading held
back SECONDS, so tests can watch readiness say 503 before the warm-up is done.

A test hook lives here, not in the server's settings: production code has no sleep to switch on.
"""
import sys
import time

from serve import registry
from serve.__main__ import main

_load_all = registry.Registry._load_all


def _delayed(self, delay=float(sys.argv[1])):
    time.sleep(delay)
    _load_all(self)


registry.Registry._load_all = _delayed
sys.exit(main(sys.argv[2:]))
