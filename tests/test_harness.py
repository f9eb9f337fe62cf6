"""bench/harness.py: interleaved rounds, the stopwatch, the load-average guard, verdicts, a free port."""
import socket

import pytest

from bench import harness
from bench.harness import Check, interleaved, stopwatch, verdict_table


def test_interleaved_calls_each_contender_once_per_round_after_warm_up():
    calls = []
    results = interleaved({"a": lambda: calls.append("a") or len(calls), "b": lambda: calls.append("b") or 0},
                          repeats=3, warmup=1)
    assert calls == ["a", "b"] * 4  # one warm-up round, then three timed rounds
    assert results == {"a": [3, 5, 7], "b": [0, 0, 0]}  # what each returned, warm-up left out


def test_timed_and_stopwatch_measure_seconds_even_when_the_block_raises():
    assert 0 <= harness.timed(lambda: sum(range(1000)))() < 1
    seconds = []
    with pytest.raises(ValueError), stopwatch(seconds):
        raise ValueError("refused")
    assert len(seconds) == 1 and seconds[0] >= 0
    assert harness.median_p90_ms([0.001, 0.002, 0.003]) == pytest.approx((2.0, 2.8))


def test_busy_start_refuses_to_write_unless_allowed(monkeypatch):
    assert harness.busy_banner(harness.MAX_START_LOAD, allow_busy=False) == ""
    with pytest.raises(SystemExit, match="NOT WRITTEN"):
        harness.busy_banner(harness.MAX_START_LOAD + 1, allow_busy=False)
    assert harness.busy_banner(harness.MAX_START_LOAD + 1, allow_busy=True).startswith("**BUSY MACHINE")
    monkeypatch.setattr(harness.os, "getloadavg", lambda: (0.25, 0.0, 0.0))
    assert "0.25 at the start, 0.25 at the end" in harness.LoadWatch().note()


def test_verdicts_are_data_against_floors_and_ceilings():
    checks = [Check("accuracy", 0.99, 0.97, fmt="{:.0%}"), Check("time ratio", 1.2, 1.0, at_least=False, fmt="{:.1f}x")]
    assert [c.passed for c in checks] == [True, False]
    table = verdict_table(checks).splitlines()
    assert table[2] == "| accuracy | 99% | at least 97% | pass |"
    assert table[3] == "| time ratio | 1.2x | at most 1.0x | **FAIL** |"


def test_free_port_can_be_listened_on():
    port = harness.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
