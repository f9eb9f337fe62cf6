"""Two data-parallel processes over gloo, through Paddle's own launcher, train one consistent model."""
import json
import re

import pytest

from common import checkpoint

pytestmark = pytest.mark.e2e


def test_two_processes_train_the_same_weights(two_process_run):
    """The README's launcher command (tests/conftest.py): 1600 samples / 64 per step (32 on each rank)
    = 25 steps an epoch, 2 epochs."""
    out, worker_logs = two_process_run.out, two_process_run.worker_logs
    digests = {}
    for name, text in worker_logs.items():
        match = re.search(r"rank (\d)/2: weights sha256 (\w+)", text)
        assert match, f"{name} did not report its weights:\n{text[-2000:]}"
        digests[int(match.group(1))] = match.group(2)
    assert set(digests) == {0, 1}
    assert digests[0] == digests[1], "ranks ended with different weights"

    # Only rank 0 wrote: one run folder, a checkpoint at the end of each epoch, a single metrics file.
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in rows] == [25, 50]
    assert rows[-1]["test_acc"] > 0.5
    assert "train_loss" in rows[0] and rows[-1]["train_loss"] < rows[0]["train_loss"]
    state = checkpoint.load(out / "checkpoints" / "ckpt-000000050.pdckpt", "mnist", "cnn")
    assert state["progress"]["samples"] == 0 and state["progress"]["epoch"] == 2
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    assert "epoch 2/2" in worker_logs["workerlog.0"] and "epoch 2/2" not in worker_logs["workerlog.1"]
