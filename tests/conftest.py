"""Shared fixtures: where the official data lives, and how to run the toolkit's commands."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


@pytest.fixture(scope="session")
def mnist_checkpoint(data_dir, tmp_path_factory) -> Path:
    """Best checkpoint of the default CNN after 2 epochs on all of MNIST (~99% test; ~2 min on 2 cores)."""
    import train

    out = tmp_path_factory.mktemp("mnist-cnn")
    train.run(train.TrainConfig("mnist", epochs=2, data_dir=str(data_dir), output=str(out), progress=False))
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
