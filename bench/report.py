"""Write one benchmark's section of docs/BENCHMARKS.md, leaving the other benchmarks' sections alone."""
from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
from pathlib import Path

from common.atomic import atomic_write_text

MAX_START_LOAD = 0.5  # 1-minute load average above which a benchmark's figures are not written
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


def load_note(before: tuple, after: tuple) -> str:
    """The line every section carries: the 1-minute load average around the measurement."""
    return (f"Load average (1 min, {os.cpu_count()} cores): {before[0]:.2f} at the start, {after[0]:.2f} at the end "
            f"(a run is only written when the start is at most {MAX_START_LOAD}).")


def busy_banner(start_load: float, allow_busy: bool) -> str:
    """'' on a quiet machine; a bold warning to put first in the section when ``allow_busy``;
    otherwise stop the benchmark: figures from a busy machine are worse than none."""
    if start_load <= MAX_START_LOAD:
        return ""
    if not allow_busy:
        raise SystemExit(f"NOT WRITTEN: the load average was {start_load:.2f} at the start (> {MAX_START_LOAD}); "
                         "stop other work and run again, or pass --allow-busy")
    return (f"**BUSY MACHINE: load average {start_load:.2f} at the start; these figures are not comparable "
            "with a quiet run.**\n\n")
