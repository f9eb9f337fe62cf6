"""Where a run stands, what its checkpoints hold, and where a run starts from: scratch or a checkpoint.

A resumed run continues exactly where the checkpoint left it: ``Progress`` (epoch, step, the
position in the epoch's data order, the epoch's running sums, the history) and every RNG state
are saved with the weights, the optimizer (with its LR schedule) and the loss scaler.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import paddle.distributed as dist

from common import checkpoint

from .errors import ConfigError
from .report import log


@dataclass
class Progress:
    """Where the run stands; saved in every checkpoint so a resume continues from exactly here."""

    epoch: int = 0           # epoch in progress (0-based)
    step_in_epoch: int = 0   # batches of it already trained: the data-order position
    global_step: int = 0
    loss_sum: float = 0.0    # running sums of the epoch in progress
    samples: int = 0
    seconds: float = 0.0
    history: list = field(default_factory=list)  # one dict per finished epoch
    best_value: float | None = None
    best_epoch: int | None = None
    bad_evals: int = 0       # evaluations since the last improvement (early stopping)

    def next_epoch(self) -> None:
        """Move to the start of the next epoch, with empty running sums."""
        self.epoch, self.step_in_epoch, self.loss_sum, self.samples, self.seconds = self.epoch + 1, 0, 0.0, 0, 0.0


def find_checkpoint(resume: str | None, folder: Path, task: str, model: str | None, say=log) -> dict | None:
    """The checkpoint to resume from (``--resume``: None, ``auto`` or a path), or None for a new run.

    A new run never starts silently over a folder that holds checkpoints.
    """
    if resume in (None, ""):
        if checkpoint.candidates(folder):
            raise ConfigError(f"{folder.parent} already holds checkpoints; pass --resume auto to continue that "
                              "run, or choose another --output")
        return None
    if resume == "auto":
        state = checkpoint.find_resumable(folder, task, model, say=say)
        if state is None:
            say(f"[train] --resume auto: no checkpoint in {folder} yet; starting a new run")
        return state
    state = checkpoint.load(resume, task, model)
    state["path"] = str(resume)
    return state


def run_folder_of(checkpoint_path: Path, saved: dict) -> Path:
    """The run folder a checkpoint belongs to: the parent of its checkpoints/ folder, else its config's."""
    folder = checkpoint_path.resolve().parent
    return folder.parent if folder.name == checkpoint.FOLDER else Path(saved["config"]["output"])


def require_same_start(saved: dict | None) -> None:
    """Data-parallel: every rank must resume from the same step, or the collectives would hang.

    Each rank reads the checkpoint from its own disk, so several machines need a shared --output.
    """
    if dist.get_world_size() == 1:
        return
    step = saved["progress"]["global_step"] if saved else -1
    steps: list = []
    dist.all_gather_object(steps, step)
    if len(set(steps)) > 1:
        raise ConfigError(f"ranks found different checkpoints to start from (global steps {steps}); "
                          "on several machines --output must be on storage every machine shares")


def restore(saved: dict, net, optimizer, scaler) -> Progress:
    """Load a checkpoint's weights, optimizer (with its LR schedule), scaler and RNG states."""
    net.set_state_dict(saved["model_state"])
    optimizer.set_state_dict(saved["optimizer_state"])
    if saved.get("scaler_state"):
        scaler.load_state_dict(saved["scaler_state"])
    p = Progress(**saved["progress"])
    p.history = [row for row in p.history if not row.get("partial")]  # a --max-steps stop's row
    checkpoint.set_rng_state(saved["rng"])
    log(f"[train] resuming from {saved['path']}: epoch {p.epoch + 1}, step {p.step_in_epoch} "
        f"of the epoch, global step {p.global_step}")
    return p


def save(cfg, parts, p: Progress, is_best: bool) -> Path | None:
    """Write a checkpoint of the run as it stands (rank 0 only: every rank holds the same state)."""
    if dist.get_rank() != 0:
        return None
    state = {"config": cfg.to_dict(), "model_state": parts.net.state_dict(),
             "optimizer_state": parts.optimizer.state_dict(),
             "scaler_state": parts.scaler.state_dict() if cfg.amp else None,
             "progress": dataclasses.asdict(p), "rng": checkpoint.rng_state(), "stats": parts.splits.stats}
    return checkpoint.save(Path(cfg.output) / checkpoint.FOLDER, state, cfg.keep_last, is_best)
