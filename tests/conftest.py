"""Shared fixtures: where the official data lives, and how to run the toolkit's commands."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("TOOLKIT_DATA", ROOT.parent / "shared" / "data"))
PADDLE_CACHE = Path.home() / ".cache" / "paddle" / "dataset"  # where Paddle's own downloads land


def _require(path: Path) -> Path:
    """Return ``path``; if missing, fail under CI (tests must not silently skip) else skip."""
    if path.exists():
        return path
    message = f"shared data missing: {path} (copy the official files from ../shared/data, see README)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """Folder holding ``mnist/`` and ``uci_housing/`` with the official files.

    ``../shared/data`` (or ``$TOOLKIT_DATA``) first, else Paddle's cache, where a user with internet has them.
    """
    wanted = ("mnist/t10k-images-idx3-ubyte.gz", "uci_housing/housing.data")
    for folder in (SHARED_DATA, PADDLE_CACHE):
        if all((folder / name).is_file() for name in wanted):
            return folder
    _require(SHARED_DATA / wanted[0])
    return _require(SHARED_DATA / wanted[1]).parent.parent


def run_module(*args: str, timeout: float = 300, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m <args>`` from the project root, capturing output."""
    proc = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"python -m {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


# A small run of the default CNN (batch norm, dropout and the default augmentation: every RNG and
# running statistic must come back on resume), on a real subset: 25 steps an epoch, 2 epochs,
# evaluated at the end, a checkpoint every 4 steps. tests/test_resume.py kills and resumes it.
RESUME_RUN = ["mnist", "--model", "cnn", "--train-subset", "1600", "--batch-size", "64", "--epochs", "2",
              "--val-size", "500", "--eval-every", "2", "--save-every-steps", "4", "--lr", "0.002", "--no-progress"]


@pytest.fixture(scope="session")
def two_process_run(data_dir, tmp_path_factory) -> SimpleNamespace:
    """``RESUME_RUN`` on two CPU processes over gloo, started with the README's launcher command.

    tests/test_distributed.py checks the run itself; tests/test_resume.py compares a killed and
    resumed ``--procs 2`` run with it. ``out``: the run folder; ``worker_logs``: each worker's log by name.
    """
    base = tmp_path_factory.mktemp("two-processes")
    out, logs = base / "run", base / "logs"
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(logs),
           "train/__main__.py", *RESUME_RUN, "--device", "cpu", "--data-dir", str(data_dir), "--output", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    worker_logs = {p.name: p.read_text() for p in logs.glob("workerlog.*")}
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:], worker_logs)
    return SimpleNamespace(out=out, worker_logs=worker_logs)


@pytest.fixture
def train_cli(capsys):
    """``python -m train ARGS`` in this process (no interpreter and Paddle start-up per call):
    ``train_cli(*args) -> (exit status, stdout, stderr)``, argparse's exits included."""
    from train.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        try:
            status = main(list(args))
        except SystemExit as exc:
            status = exc.code
        out, err = capsys.readouterr()
        return status, out, err
    return run


@pytest.fixture
def thousand_test_digits(monkeypatch):
    """MNIST runs in this process evaluate the first 1,000 of the 10,000 official test images: for
    tests of what a run does, not of the accuracy the toolkit reaches (the fixtures below train on
    everything and are measured on everything)."""
    import dataclasses

    from common import datasets, tasks

    task = tasks.TASKS["mnist"]

    def load_splits(*args, **kwargs) -> datasets.Splits:
        splits = task.load_splits(*args, **kwargs)
        return dataclasses.replace(splits, test=datasets.Arrays(splits.test.x[:1000], splits.test.y[:1000]))
    monkeypatch.setitem(tasks.TASKS, "mnist", dataclasses.replace(task, load_splits=load_splits))


@pytest.fixture(scope="session")
def mnist_checkpoint(data_dir, tmp_path_factory) -> Path:
    """Best checkpoint of the default CNN after 1 epoch on all of MNIST (98.3% test; ~40 s on 2 cores)."""
    import train

    out = tmp_path_factory.mktemp("mnist-cnn")
    train.run(train.TrainConfig("mnist", epochs=1, data_dir=str(data_dir), output=str(out), progress=False))
    return out / "checkpoints" / "best.pdckpt"


@pytest.fixture(scope="session")
def housing_checkpoint(data_dir, tmp_path_factory) -> Path:
    """Best checkpoint of the default housing linear regression (~15 s)."""
    import train

    out = tmp_path_factory.mktemp("housing-linear")
    train.run(train.TrainConfig("housing", data_dir=str(data_dir), output=str(out), progress=False))
    return out / "checkpoints" / "best.pdckpt"


@pytest.fixture(scope="session")
def mnist_bundle(mnist_checkpoint, tmp_path_factory) -> Path:
    """Bundle exported from ``mnist_checkpoint`` (JSON graph, dynamic batch, parity-checked; ~10 s)."""
    from export import export_checkpoint

    return export_checkpoint(mnist_checkpoint, tmp_path_factory.mktemp("bundles") / "mnist-cnn")


@pytest.fixture(scope="session")
def housing_bundle(housing_checkpoint, tmp_path_factory) -> Path:
    """Bundle exported from ``housing_checkpoint`` (JSON graph, dynamic batch, parity-checked)."""
    from export import export_checkpoint

    return export_checkpoint(housing_checkpoint, tmp_path_factory.mktemp("bundles") / "housing-linear")
