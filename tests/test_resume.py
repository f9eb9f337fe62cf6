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

from .conftest import ROOT, run_module

# The default CNN (batch norm + dropout + the default augmentation: RNG and running statistics must
# all come back), on a small real subset: 25 steps an epoch, 3 epochs, a checkpoint every 4 steps.
COMMON = ["mnist", "--model", "cnn", "--train-subset", "1600", "--batch-size", "64", "--epochs", "3",
          "--val-size", "500", "--eval-every", "3", "--save-every-steps", "4", "--lr", "0.002", "--no-progress"]
ARGS = [*COMMON, "--procs", "1"]


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


@pytest.mark.parametrize("kill_after_step", [6, 37])  # mid-epoch 1, and mid-epoch 2 (steps 26..50)
def test_sigkill_and_resume_is_exact(reference, data_dir, tmp_path, kill_after_step):
    out = tmp_path / "killed"
    kill_mid_run(ARGS, data_dir, out, kill_after_step)
    resumed = run_module("train", *ARGS, "--resume", "auto", "--data-dir", str(data_dir), "--output", str(out))
    assert "resuming from" in resumed.stdout
    assert_same_run(reference, out)


def test_two_processes_sigkilled_and_resumed_are_exact(data_dir, tmp_path):
    """The default command on a multi-core CPU: two data-parallel processes started by ``--procs``."""
    args = [*COMMON, "--procs", "2"]
    reference = tmp_path / "uninterrupted"
    run_module("train", *args, "--data-dir", str(data_dir), "--output", str(reference))
    out = tmp_path / "killed"
    kill_mid_run(args, data_dir, out, 30)  # mid-epoch 2
    resumed = run_module("train", *args, "--resume", "auto", "--data-dir", str(data_dir), "--output", str(out))
    assert "resuming from" in resumed.stdout and "2 data-parallel processes" in resumed.stdout
    assert_same_run(reference, out)


def test_killing_the_command_stops_its_workers(data_dir, tmp_path):
    """SIGKILL of ``python -m train`` alone (not its group) still ends the two workers it launched."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "train", *COMMON, "--procs", "2", "--epochs", "20", "--data-dir", str(data_dir),
           "--output", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((out / "checkpoints").glob("ckpt-*.pdckpt")):
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while time.time() < deadline and workers_of(out):
        time.sleep(0.5)
    assert not workers_of(out), "workers kept running after their command was killed"


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


def kill_mid_run(args, data_dir, out, kill_after_step):
    """Start ``python -m train args``, SIGKILL it (all its processes) once a checkpoint of at least
    ``kill_after_step`` steps exists."""
    cmd = [sys.executable, "-m", "train", *args, "--data-dir", str(data_dir), "--output", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        steps = [int(p.stem.split("-")[1]) for p in (out / "checkpoints").glob("ckpt-*.pdckpt")]
        if steps and max(steps) >= kill_after_step:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
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
