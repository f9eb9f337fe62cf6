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

import numpy as np
import pytest

from common import checkpoint

from .conftest import ROOT, run_module

# The default CNN (batch norm + dropout: both RNG and running statistics must come back), on a
# small real subset: 25 steps an epoch, 3 epochs, a checkpoint every 4 steps.
ARGS = ["mnist", "--model", "cnn", "--train-subset", "1600", "--batch-size", "64", "--epochs", "3",
        "--val-size", "500", "--eval-every", "3", "--save-every-steps", "4", "--lr", "0.002", "--no-progress"]


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
    cmd = [sys.executable, "-m", "train", *ARGS, "--data-dir", str(data_dir), "--output", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        steps = [int(p.stem.split("-")[1]) for p in (out / "checkpoints").glob("ckpt-*.pdckpt")]
        if steps and max(steps) >= kill_after_step:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up, as with a power cut or the OOM killer
    proc.wait()

    resumed = run_module("train", *ARGS, "--resume", "auto", "--data-dir", str(data_dir), "--output", str(out))
    assert "resuming from" in resumed.stdout
    assert metrics(out) == metrics(reference)
    ref, got = final_params(reference), final_params(out)
    assert ref.keys() == got.keys()
    for name in ref:
        assert np.array_equal(ref[name], got[name]), f"{name} differs after resume"
