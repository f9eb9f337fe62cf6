"""Write one benchmark's section of docs/BENCHMARKS.md, leaving the other benchmarks' sections alone."""
from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
from pathlib import Path

from bench.harness import MAX_START_LOAD, LoadWatch, busy_banner  # noqa: F401  (serve_load, request_cost import them here)
from common.atomic import atomic_write_text

BENCHMARKS = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"
HEADER = ("# Benchmarks\n\nEvery section below is written by a script in `bench/`, with the command that "
          "made it, the machine and the date. Figures in one section come from one run, so compare "
          "within a section (ratios), not across sections or machines.\n")


def machine() -> str:
    """One line describing where the figures were measured."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import paddle
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, Paddle {paddle.__version__}; "
            f"load average when written: {load} (other work on the machine slows every row alike)")


def git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=BENCHMARKS.parent).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def update_section(name: str, title: str, command: str, body: str) -> None:
    """Replace (or append) the section ``name`` with ``body`` and a standard provenance block."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = (f"<!-- bench:{name} -->\n## {title}\n\n- command: `{command}`\n- machine: {machine()}\n"
               f"- date: {stamp}, commit {git_revision()}\n\n{body.strip()}\n<!-- /bench:{name} -->\n")
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->\n", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    BENCHMARKS.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(BENCHMARKS, text)


def publish(name: str, title: str, body: str, command: str, watch: LoadWatch, allow_busy: bool,
            write: bool = True) -> None:
    """Print a benchmark's section, then write it (``update_section``) unless ``write`` is false.

    Figures from a busy start are refused, or marked in bold with ``allow_busy``.
    """
    print(body)
    if write:
        update_section(name, title, command, watch.banner(allow_busy) + body)
