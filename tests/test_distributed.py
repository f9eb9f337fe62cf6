"""Two data-parallel processes over gloo, through Paddle's own launcher, train one consistent model."""
import json
import re
import subprocess
import sys

from common import checkpoint

from .conftest import ROOT


def test_two_processes_train_the_same_weights(data_dir, tmp_path):
    out, logs = tmp_path / "run", tmp_path / "logs"
    # The command the README documents; 1280 samples / 128 per step (64 on each rank) = 10 steps.
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(logs),
           "train/__main__.py", "mnist", "--model", "course_cnn", "--train-subset", "1280", "--batch-size", "128",
           "--epochs", "2", "--val-size", "500", "--lr", "0.002", "--device", "cpu", "--no-progress",
           "--data-dir", str(data_dir), "--output", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    worker_logs = {p.name: p.read_text() for p in logs.glob("workerlog.*")}
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:], worker_logs)

    digests = {}
    for name, text in worker_logs.items():
        match = re.search(r"rank (\d)/2: weights sha256 (\w+)", text)
        assert match, f"{name} did not report its weights:\n{text[-2000:]}"
        digests[int(match.group(1))] = match.group(2)
    assert set(digests) == {0, 1}
    assert digests[0] == digests[1], "ranks ended with different weights"

    # Only rank 0 wrote: one run folder, checkpoints at 10 and 20 global steps, a single metrics file.
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in rows] == [10, 20]
    assert rows[-1]["test_acc"] > 0.5
    assert "train_loss" in rows[0] and rows[-1]["train_loss"] < rows[0]["train_loss"]
    state = checkpoint.load(out / "checkpoints" / "ckpt-000000020.pdckpt", "mnist", "course_cnn")
    assert state["progress"]["samples"] == 0 and state["progress"]["epoch"] == 2
    assert "epoch 2/2" in worker_logs["workerlog.0"] and "epoch 2/2" not in worker_logs["workerlog.1"]
