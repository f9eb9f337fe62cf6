"""Step 1 and 2 of the export: read the training checkpoint and rebuild its model in eval mode."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from common.bundle import sha256_file

from .errors import ExportError


@dataclass
class Source:
    """A verified checkpoint: where it is, its dict, and what the manifest says about it."""

    path: Path
    state: dict

    @property
    def config(self) -> dict:
        return self.state["config"]

    @property
    def task(self) -> str:
        return self.config["task"]

    @property
    def model_name(self) -> str:
        return self.config["model"]

    @property
    def stats(self) -> dict:
        return self.state.get("stats") or {}


def load_source(path: str | Path) -> Source:
    """Read and verify a checkpoint written by ``python -m train``; refuse anything else."""
    from train import checkpoint
    from train.errors import CheckpointError

    try:
        state = checkpoint.load(path)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from exc
    for key in ("config", "model_state"):
        if key not in state:
            raise ExportError(f"{path} has no {key!r}; was it written by python -m train?")
    source = Source(Path(path), state)
    if source.task == "housing" and not {"target_mean", "target_std", "feature_mean"} <= set(source.stats):
        raise ExportError(f"{path} lacks the housing normalisation statistics (stats); retrain with python -m train")
    return source


def build_eval_model(source: Source):
    """The checkpoint's network, with its weights, in eval mode (dropout off, batch-norm frozen)."""
    import models

    cfg = source.config
    try:
        net = models.build_model(cfg["task"], cfg["model"], cfg.get("dropout"))
    except ValueError as exc:
        raise ExportError(f"{source.path}: {exc}") from exc
    missing, unexpected = net.set_state_dict(source.state["model_state"])
    if missing or unexpected:
        raise ExportError(f"{source.path}: weights do not fit model {cfg['model']!r} "
                          f"(missing {list(missing)[:3]}, unexpected {list(unexpected)[:3]})")
    net.eval()
    return net


def describe(source: Source) -> dict:
    """Provenance for the manifest: file, sha256, position in training and the metrics of that epoch."""
    progress = source.state.get("progress") or {}
    history = [row for row in progress.get("history", []) if isinstance(row, dict)]
    # A checkpoint's weights are those of the last epoch in its own history (best.pdckpt is written at
    # the end of the best epoch, so for it that row is the best one); a mid-epoch checkpoint has
    # trained past that row, which "mid_epoch" says.
    row = history[-1] if history else {}
    return {
        "path": str(source.path.resolve()),
        "sha256": sha256_file(source.path),
        "epoch": row.get("epoch"),
        "mid_epoch": bool(progress.get("step_in_epoch")),
        "global_step": progress.get("global_step"),
        "best_epoch": progress.get("best_epoch"),
        "metrics": {k: v for k, v in row.items() if k.startswith(("val_", "test_"))},
    }
