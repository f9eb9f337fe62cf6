"""What the benchmarks share: interleaved timing, the load-average guard, verdicts as data, a free port.

Every benchmark times its contenders with ``interleaved`` (one call of each per round, so that other
work on the machine slows them alike) and reports medians; refuses to write figures measured on a
busy machine (``LoadWatch``); and states its verdicts as data, measured against stated targets
(``Check``, ``verdict_table``), leaving the prose that explains them to docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"  # the official dataset files beside the checkout (README, "Data")
MAX_START_LOAD = 0.5  # 1-minute load average above which a benchmark's figures are not written


# ---- timing -----------------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> Callable[[], float]:
    """``fn`` as a function that returns the seconds one call of it took."""
    def call() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    return call


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 0) -> dict[str, list]:
    """What each of ``fns`` returns, ``repeats`` times, after ``warmup`` untimed rounds.

    Round by round, each function once per round: load from elsewhere on the machine then slows
    every contender alike, and ratios between them stay fair. Wrap a call in ``timed`` to get seconds.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    results: dict[str, list] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            results[name].append(fn())
    return results


@contextlib.contextmanager
def stopwatch(seconds: list[float]) -> Iterator[None]:
    """Append the seconds the ``with`` block took to ``seconds``, also when it raises."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds.append(time.perf_counter() - start)


def median_p90_ms(seconds) -> tuple[float, float]:
    """(median, 90th percentile) of durations in seconds, in milliseconds."""
    ms = np.asarray(seconds, np.float64) * 1e3
    return float(np.median(ms)), float(np.percentile(ms, 90))


# ---- the load-average guard -------------------------------------------------------------------


class LoadWatch:
    """The 1-minute load average around a measurement: figures from a busy machine are not written."""

    def __init__(self):
        self.start = os.getloadavg()[0]

    def note(self) -> str:
        """The line every section carries: the load average at the start and now."""
        return (f"Load average (1 min, {os.cpu_count()} cores): {self.start:.2f} at the start, "
                f"{os.getloadavg()[0]:.2f} at the end (a run is only written when the start is at most "
                f"{MAX_START_LOAD}).")

    def banner(self, allow_busy: bool) -> str:
        """'' on a quiet start; see ``busy_banner``."""
        return busy_banner(self.start, allow_busy)


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


def add_write_flags(parser: argparse.ArgumentParser) -> None:
    """``--no-write`` and ``--allow-busy``, which every benchmark that writes docs/BENCHMARKS.md takes."""
    parser.add_argument("--no-write", action="store_true", help="print the results, leave docs/ alone")
    parser.add_argument("--allow-busy", action="store_true", help=f"write even when the load average at the "
                        f"start is above {MAX_START_LOAD} (the section then says so in bold)")


# ---- verdicts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One measured figure against its stated target."""

    name: str
    measured: float
    target: float
    at_least: bool = True  # the target is a floor (False: a ceiling)
    fmt: str = "{:.3g}"    # how both figures are written

    @property
    def passed(self) -> bool:
        return self.measured >= self.target if self.at_least else self.measured <= self.target


def verdict_table(checks: list[Check]) -> str:
    """The checks as a Markdown table: measured, target, pass or FAIL."""
    lines = ["| check | measured | target | verdict |", "|---|---:|---:|---|"]
    for c in checks:
        target = ("at least " if c.at_least else "at most ") + c.fmt.format(c.target)
        lines.append(f"| {c.name} | {c.fmt.format(c.measured)} | {target} | {'pass' if c.passed else '**FAIL**'} |")
    return "\n".join(lines)


# ---- network ----------------------------------------------------------------------------------


def free_port() -> int:
    """A port nobody listens on now (bind to port 0, read it, release it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
