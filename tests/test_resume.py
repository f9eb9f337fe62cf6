"""A run killed with SIGKILL at an arbitrary moment and resumed ends bitwise equal to an uninterrupted run.

Why bitwise is achievable on CPU: every source of randomness (init, dropout, data order) is
restored from the checkpoint, and Paddle's CPU kernels are deterministic for a fixed thread count.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from common import checkpoint

from .conftest import RESUME_RUN, ROOT, run_module

pytestmark = pytest.mark.e2e
ARGS = [*RESUME_RUN, "--procs", "1"]


def metrics(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in ("epoch_seconds", "samples_per_sec")} for row in rows]


def final_params(out):
    state = checkpoint.load(out / "checkpoints" / (out / "checkpoints" / "latest").read_text().strip())
    return {k: np.asarray(v) for k, v in state["model_state"].items()}


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    run_module("train", *ARGS, "--data-dir", str(data_dir), "--output", str(out))
    return out


def test_sigkilled_twice_and_resumed_is_exact(reference, data_dir, tmp_path):
    """Killed mid-epoch 1, resumed and killed again mid-epoch 2 (steps 26..50), resumed to the end."""
    out = tmp_path / "killed"
    kill_mid_run(ARGS, data_dir, out, 6)
    kill_mid_run([*ARGS, "--resume", "auto"], data_dir, out, 37)
    resumed = run_module("train", *ARGS, "--resume", "auto", "--data-dir", str(data_dir), "--output", str(out))
    assert "resuming from" in resumed.stdout
    assert_same_run(reference, out)


def test_two_processes_stop_with_their_command_and_resume_exactly(two_process_run, data_dir, tmp_path):
    """The default command on a multi-core CPU: two data-parallel processes started by ``--procs``.

    SIGKILL of ``python -m train`` alone (not its group) still ends the two workers it launched;
    resumed, the run is the uninterrupted one (tests/conftest.py), bit for bit.
    """
    args, out = [*RESUME_RUN, "--procs", "2"], tmp_path / "killed"
    cmd = [sys.executable, "-m", "train", *args, "--data-dir", str(data_dir), "--output", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_checkpoint(proc, out, 30)  # mid-epoch 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while time.time() < deadline and workers_of(out):
        time.sleep(0.5)
    assert not workers_of(out), "workers kept running after their command was killed"
    resumed = run_module("train", *args, "--resume", "auto", "--data-dir", str(data_dir), "--output", str(out))
    assert "resuming from" in resumed.stdout and "2 data-parallel processes" in resumed.stdout
    assert_same_run(two_process_run.out, out)


def workers_of(out) -> list[str]:
    """Command lines of live processes training into ``out``."""
    found = []
    for status in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = status.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(out) in line and "train" in line:
            found.append(line)
    return found


def wait_for_checkpoint(proc: subprocess.Popen, out, step: int) -> None:
    """Return once ``out`` holds a checkpoint of at least ``step`` steps, the run still going."""
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        steps = [int(p.stem.split("-")[1]) for p in (out / "checkpoints").glob("ckpt-*.pdckpt")]
        if steps and max(steps) >= step:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"


def kill_mid_run(args, data_dir, out, kill_after_step):
    """Start ``python -m train args``, SIGKILL it (all its processes) once a checkpoint of at least
    ``kill_after_step`` steps exists."""
    cmd = [sys.executable, "-m", "train", *args, "--data-dir", str(data_dir), "--output", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_for_checkpoint(proc, out, kill_after_step)
    # No chance to clean up, as with a power cut or the OOM killer; the whole group, launcher and
    # workers included, as a power cut would.
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def assert_same_run(reference, out):
    assert metrics(out) == metrics(reference)
    ref, got = final_params(reference), final_params(out)
    assert ref.keys() == got.keys()
    for name in ref:
        assert np.array_equal(ref[name], got[name]), f"{name} differs after resume"
