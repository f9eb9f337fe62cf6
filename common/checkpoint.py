"""Checkpoints: one self-describing, checksummed file per save, written atomically.

File layout: ``MAGIC`` + sha256(payload) + payload, where payload is ``paddle.save`` of a dict with
the model and optimizer state (the LR scheduler rides inside the optimizer's), epoch and step, the
data-order position, every RNG state, the resolved config and the metrics so far. The checksum
lets a truncated or damaged file be refused before unpickling anything.

Folder layout (``<output>/checkpoints``): ``ckpt-<global step>.pdckpt`` (the last ``keep_last``
kept), ``best.pdckpt`` (best validation score) and ``latest`` (name of the newest, updated last).

This is the train -> export contract: training writes with ``save``, export reads with ``load``
(after ``resolve_path``, which also accepts a run folder or the ``latest`` pointer).
"""
from __future__ import annotations

import hashlib
import io
import random
import time
from pathlib import Path

import numpy as np
import paddle

from common.atomic import atomic_write_bytes, atomic_write_text



class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, corrupt, foreign, or of another task or model."""


MAGIC = b"PDTKCKPT1\n"
FORMAT = "paddle-toolkit-checkpoint/1"
SUFFIX = ".pdckpt"
FOLDER = "checkpoints"  # inside a run folder
BEST = f"best{SUFFIX}"
POINTER = "latest"


def rng_state() -> dict:
    """RNG states of Python, NumPy and Paddle (CPU, and every GPU when compiled with CUDA)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "paddle": paddle.get_rng_state(device="cpu")}
    if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        state["paddle_gpu"] = paddle.get_cuda_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what ``rng_state`` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    paddle.set_rng_state(state["paddle"], device="cpu")
    if "paddle_gpu" in state and paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        paddle.set_cuda_rng_state(state["paddle_gpu"])


def encode(state: dict) -> bytes:
    """Serialise a checkpoint dict to the on-disk bytes (header + checksum + payload)."""
    buf = io.BytesIO()
    paddle.save({"format": FORMAT, "paddle_version": paddle.__version__, "saved_at": time.time(), **state}, buf)
    payload = buf.getvalue()
    return MAGIC + hashlib.sha256(payload).digest() + payload


def save(folder: Path, state: dict, keep_last: int, is_best: bool) -> Path:
    """Write ``ckpt-<step>.pdckpt`` atomically, the best copy if asked, prune, then move ``latest``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = encode(state)
    path = folder / f"ckpt-{state['progress']['global_step']:09d}{SUFFIX}"
    atomic_write_bytes(path, data)
    if is_best:
        atomic_write_bytes(folder / BEST, data)
    for old in sorted(folder.glob(f"ckpt-*{SUFFIX}"))[:-keep_last or None]:
        old.unlink()
    atomic_write_text(folder / POINTER, path.name + "\n")  # last: a crash before this keeps the old pointer
    return path


def resolve_path(path: str | Path) -> Path:
    """The checkpoint file ``path`` means: a file as it is; a run folder or its ``checkpoints``
    folder -> ``best.pdckpt`` there; the ``latest`` pointer -> the file it names.

    Raises ``CheckpointError`` naming what was looked for when there is nothing to load.
    """
    path = Path(path)
    if path.is_dir():
        folder = path / FOLDER if (path / FOLDER).is_dir() else path
        if not (folder / BEST).is_file():
            raise CheckpointError(f"{path} is a folder without {FOLDER}/{BEST} or {BEST}; give a run folder "
                                  f"(runs/<task>-<model>), its {FOLDER}/ folder, or a {SUFFIX} file")
        return folder / BEST
    if path.name == POINTER and path.is_file():
        try:
            named = path.read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{path} is not a readable '{POINTER}' pointer: {exc}") from exc
        target = path.parent / named
        if "/" in named or not named.endswith(SUFFIX) or not target.is_file():
            raise CheckpointError(f"{path} points to {named!r}, which is not a checkpoint in {path.parent}")
        return target
    return path


def load(path: str | Path, task: str | None = None, model: str | None = None) -> dict:
    """Read and verify a checkpoint; ``task``/``model``, when given, must match its config.

    Raises ``CheckpointError`` with the reason (missing, truncated, corrupt, foreign, mismatched).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc.strerror}") from exc
    header = len(MAGIC) + 32
    if not data.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a toolkit checkpoint (bad header; was it written by python -m train?)")
    if len(data) <= header or hashlib.sha256(data[header:]).digest() != data[len(MAGIC):header]:
        raise CheckpointError(f"{path} is truncated or corrupt (checksum mismatch, {len(data)} bytes)")
    try:
        state = paddle.load(io.BytesIO(data[header:]))
    except Exception as exc:  # a checksummed payload that still fails to load: say so, don't crash
        raise CheckpointError(f"{path} could not be read: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} has an unknown format {state.get('format') if isinstance(state, dict) else None!r}")
    saved = state["config"]
    for key, want in (("task", task), ("model", model)):
        if want is not None and saved[key] != want:
            raise CheckpointError(f"{path} is a {saved['task']}/{saved['model']} checkpoint, "
                                  f"not {task or saved['task']}/{model or saved['model']}")
    return state


def candidates(folder: Path) -> list[Path]:
    """Checkpoints in ``folder``, the one ``latest`` names first, then newest to oldest."""
    found = sorted(folder.glob(f"ckpt-*{SUFFIX}"), reverse=True)
    pointer = folder / POINTER
    if pointer.is_file():
        named = folder / pointer.read_text().strip()
        if named in found:
            found.remove(named)
            found.insert(0, named)
    return found


def find_resumable(folder: Path, task: str, model: str | None, say=print) -> dict | None:
    """Newest valid checkpoint in ``folder`` matching task/model, falling back past bad ones.

    Returns None only when the folder holds no checkpoint at all; if it holds some and none is
    usable, raises ``CheckpointError`` rather than silently starting afresh.
    """
    files = candidates(folder)
    reasons = []
    for path in files:
        try:
            state = load(path, task, model)
        except CheckpointError as exc:
            say(f"[train] skipping checkpoint: {exc}; falling back to the previous one")
            reasons.append(str(exc))
            continue
        state["path"] = str(path)
        return state
    if files:
        raise CheckpointError(f"no usable checkpoint in {folder}: " + " | ".join(reasons))
    return None
