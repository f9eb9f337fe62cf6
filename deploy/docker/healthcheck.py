"""Container health check: exit 0 if the server says ready (200 on /v2/health/ready), else 1.

The Dockerfile's HEALTHCHECK runs it as ``python deploy/docker/healthcheck.py``. Standard library
only, and the port comes from SERVE_BIND, the address the server binds (serve/config.py),
so moving the server to another port needs no second setting. A unix-socket bind is not supported.
"""
from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def ready_url(bind: str) -> str:
    """``http://127.0.0.1:PORT/v2/health/ready`` for a bind such as ``0.0.0.0:8000``."""
    port = bind.rsplit(":", 1)[-1]
    return f"http://127.0.0.1:{port}/v2/health/ready"


def main() -> int:
    url = ready_url(os.environ.get("SERVE_BIND", "127.0.0.1:8000"))
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:  # a 503 while loading arrives as HTTPError, a URLError
        print(f"not ready: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
