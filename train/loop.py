"""The training run, as a plain function: ``run(TrainConfig("mnist")) -> metrics``.

Read top to bottom: set up the device and data, build (or restore) model and optimizer, then
epochs of train -> evaluate -> log -> checkpoint, until the last epoch or early stopping.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import paddle
import paddle.distributed as dist
import paddle.nn.functional as F
from tqdm.auto import tqdm

from common import checkpoint, tasks
from common.atomic import atomic_write_text
from common.datasets import Splits
from common.tasks import Task
from models import build_model

from .config import TrainConfig, resolve, split_batch
from .data import eval_loader, train_loader
from .errors import ConfigError
from .optim import build_optimizer, build_schedule
from .report import VisualDLWriter, epoch_line, plot_curves, write_metrics

EVAL_BATCH = 1000
# Redraw curves.png at most this often: a drawing costs 0.1-0.5 s, which was 57 of the 68 s of a
# 100-epoch housing run whose training takes about one second.
CURVES_EVERY_S = 5.0


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


def log(msg: str) -> None:
    """Print on rank 0 only (every rank runs this code under the launcher)."""
    if dist.get_rank() == 0:
        print(msg, flush=True)


def setup_device(name: str, amp: bool) -> str:
    """``paddle.set_device`` for cpu/gpu/auto; the launcher picks each process's GPU."""
    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if name == "gpu" and not has_gpu:
        raise ConfigError("--device gpu, but this Paddle has no CUDA or sees no GPU "
                          "(install paddlepaddle-gpu as the README says, or use --device cpu)")
    device = "gpu" if name == "gpu" or (name == "auto" and has_gpu) else "cpu"
    if amp and device != "gpu":
        raise ConfigError("--amp needs a GPU (float16 autocast); drop it on CPU")
    paddle.set_device(device)
    if int(os.environ.get("PADDLE_TRAINERS_NUM", "1")) > 1 and not dist.is_initialized():
        dist.init_parallel_env()  # gloo on CPU, NCCL on GPUs
    return device


def find_checkpoint(config: TrainConfig, out: Path) -> dict | None:
    """The checkpoint to resume from, or None for a fresh run (never silently)."""
    folder = out / checkpoint.FOLDER
    if config.resume in (None, ""):
        if checkpoint.candidates(folder):
            raise ConfigError(f"{out} already holds checkpoints; pass --resume auto to continue that run, "
                              "or choose another --output")
        return None
    if config.resume == "auto":
        state = checkpoint.find_resumable(folder, config.task, config.model, say=log)
        if state is None:
            log(f"[train] --resume auto: no checkpoint in {folder} yet; starting a new run")
        return state
    state = checkpoint.load(config.resume, config.task, config.model)
    state["path"] = str(config.resume)
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


def loss_fn(cfg: TrainConfig, task: Task, out, y):
    """The task's loss; ``--softmax-before-loss`` first applies softmax to the logits (the course's
    double-softmax bug: cross-entropy applies it again)."""
    if cfg.softmax_before_loss:
        out = F.softmax(out)
    return task.loss(out, y)


@paddle.no_grad()
def evaluate(cfg: TrainConfig, task: Task, model, arrays, stats: dict) -> dict:
    """Mean loss and the task's metrics (accuracy; or MSE/MAE in $1000s) over a whole split."""
    model.eval()
    total, loss_sum, outputs = 0, 0.0, []
    for x, y in eval_loader(arrays, EVAL_BATCH):
        out = model(x)
        n = int(x.shape[0])
        loss_sum += float(loss_fn(cfg, task, out, y)) * n
        total += n
        outputs.append(out.numpy())
    model.train()
    return {"loss": loss_sum / total, **task.metrics(np.concatenate(outputs), arrays.y, stats)}


def train_epoch(cfg, task: Task, model, optimizer, schedule, scaler, loader, p: Progress, save_fn) -> bool:
    """Train from ``p.step_in_epoch`` to the end of ``p.epoch``; True if ``--max-steps`` stopped it."""
    sampler = loader.batch_sampler
    sampler.set_epoch(p.epoch, p.step_in_epoch)
    total = sampler.batches_per_epoch()
    bar = tqdm(total=total, initial=p.step_in_epoch, unit="step", desc=f"epoch {p.epoch + 1}/{cfg.epochs}",
               disable=not cfg.progress or dist.get_rank() != 0, dynamic_ncols=True, leave=False)
    start = time.perf_counter()
    model.train()
    for x, y in loader:
        if cfg.augment != "none":
            x = task.augment(x, cfg.augment)
        with paddle.amp.auto_cast(enable=cfg.amp):
            loss = loss_fn(cfg, task, model(x), y)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        optimizer.clear_grad()
        schedule.step()
        p.global_step += 1
        p.step_in_epoch += 1
        p.loss_sum, p.samples = accumulate(p.loss_sum, p.samples, loss, int(x.shape[0]))
        elapsed = time.perf_counter() - start
        bar.update(1)
        bar.set_postfix(loss=f"{p.loss_sum / p.samples:.4f}", lr=f"{schedule.get_lr():.2e}",
                        samples_s=f"{p.samples / (p.seconds + elapsed):.0f}", refresh=False)
        if cfg.max_steps and p.global_step >= cfg.max_steps:
            p.seconds += time.perf_counter() - start
            bar.close()
            return True
        if cfg.save_every_steps and p.global_step % cfg.save_every_steps == 0 and p.step_in_epoch < total:
            p.seconds += time.perf_counter() - start
            start = time.perf_counter()
            save_fn(is_best=False)
    p.seconds += time.perf_counter() - start
    bar.close()
    return False


def accumulate(loss_sum: float, samples: int, loss, n: int) -> tuple[float, int]:
    """Add a batch's loss to the epoch sums; data-parallel ranks add everyone's so all agree."""
    if dist.get_world_size() > 1:
        both = paddle.to_tensor([float(loss) * n, float(n)], dtype="float64")
        dist.all_reduce(both)
        total, count = both.numpy().tolist()
        return loss_sum + total, samples + int(count)
    return loss_sum + float(loss) * n, samples + n


def update_best(task: Task, row: dict, p: Progress, has_val: bool) -> bool:
    """Track the best validation score (the task says which metric and which way); True if ``row``
    is the new best."""
    key = f"val_{task.select[0]}"
    if not has_val:
        p.best_epoch = row["epoch"]  # no validation split: the latest is the best we can say
        return True
    if key not in row:  # not evaluated this epoch (--eval-every)
        return False
    if task.better(row[key], p.best_value):
        p.best_value, p.best_epoch, p.bad_evals = row[key], row["epoch"], 0
        return True
    p.bad_evals += 1
    return False


def restore(saved: dict, net, optimizer, scaler) -> Progress:
    """Load a checkpoint's weights, optimizer (with its LR schedule), scaler and RNG states."""
    net.set_state_dict(saved["model_state"])
    optimizer.set_state_dict(saved["optimizer_state"])
    if scaler is not None and saved.get("scaler_state"):
        scaler.load_state_dict(saved["scaler_state"])
    p = Progress(**saved["progress"])
    p.history = [row for row in p.history if not row.get("partial")]  # a --max-steps stop's row
    checkpoint.set_rng_state(saved["rng"])
    log(f"[train] resuming from {saved['path']}: epoch {p.epoch + 1}, step {p.step_in_epoch} "
        f"of the epoch, global step {p.global_step}")
    return p


def end_of_epoch(cfg, task: Task, model, splits: Splits, p: Progress, lr: float, partial: bool) -> dict:
    """Evaluate (if due), append the epoch's row to the history and reset the running sums."""
    row = {"epoch": p.epoch + 1, "epochs": cfg.epochs, "global_step": p.global_step, "lr": lr,
           "train_loss": p.loss_sum / max(p.samples, 1), "epoch_seconds": p.seconds,
           "samples_per_sec": p.samples / max(p.seconds, 1e-9)}
    if partial:
        row["partial"] = True
    if (p.epoch + 1) % cfg.eval_every == 0 or p.epoch + 1 == cfg.epochs or partial:
        for name, ds in (("val", splits.val), ("test", splits.test)):
            if ds is not None:
                row.update({f"{name}_{k}": v for k, v in evaluate(cfg, task, model, ds, splits.stats).items()})
    p.history.append(row)
    return row


def weights_digest(net) -> str:
    """Short sha256 of the trainable parameters: equal digests mean equal weights, bit for bit."""
    h = hashlib.sha256()
    for name, param in sorted(net.named_parameters()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(param.numpy()).tobytes())
    return h.hexdigest()[:16]


def run(config: TrainConfig) -> dict:
    """Train as configured and return the final and best metrics.

    Raises ``TrainError`` subclasses for problems the user can fix (data, flags, checkpoints).
    """
    # Paddle names parameters and optimizer accumulators from a per-process counter; a fresh one per
    # run gives every run the same names, so a run resumed in the same process (a notebook) loads its
    # optimizer state. The accumulators are named at the first step, so the guard spans the whole run.
    with paddle.utils.unique_name.guard():
        return _run(config)


def _run(config: TrainConfig) -> dict:
    out = Path(config.output or resolve(config).output)
    saved = find_checkpoint(config, out)
    if saved and config.output is None and config.resume != "auto":
        out = run_folder_of(Path(config.resume), saved)  # keep writing where that run lives
    cfg = resolve(dataclasses.replace(config, output=str(out)), saved["config"] if saved else None)
    device = setup_device(cfg.device, cfg.amp)
    require_same_start(saved)
    rank0 = dist.get_rank() == 0

    task = tasks.get(cfg.task)
    splits = task.load_splits(cfg.data_dir, cfg.val_size, cfg.train_subset)
    if not saved:
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        paddle.seed(cfg.seed)
    net = build_model(cfg.task, cfg.model, cfg.dropout)
    loader = train_loader(splits.train, split_batch(cfg.batch_size, dist.get_world_size()), cfg.seed, cfg.num_workers)
    schedule = build_schedule(cfg, loader.batch_sampler.batches_per_epoch())
    optimizer = build_optimizer(cfg, net.parameters(), schedule)
    scaler = paddle.amp.GradScaler() if cfg.amp else None
    model = paddle.DataParallel(net) if dist.get_world_size() > 1 else net

    p = restore(saved, net, optimizer, scaler) if saved else Progress()

    def save(is_best: bool) -> Path | None:
        if not rank0:
            return None
        state = {"config": cfg.to_dict(), "model_state": net.state_dict(),
                 "optimizer_state": optimizer.state_dict(),
                 "scaler_state": scaler.state_dict() if scaler is not None else None,
                 "progress": dataclasses.asdict(p), "rng": checkpoint.rng_state(), "stats": splits.stats}
        return checkpoint.save(out / checkpoint.FOLDER, state, cfg.keep_last, is_best)

    if rank0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(
            {**cfg.to_dict(), "paddle_version": paddle.__version__, "device": device,
             "world_size": dist.get_world_size()}, indent=2) + "\n")
        log(f"[train] {cfg.task}/{cfg.model} on {device} x{dist.get_world_size()}: "
            f"{len(splits.train)} train, {len(splits.val) if splits.val else 0} val, {len(splits.test)} test "
            f"samples -> {out}")
    vdl = VisualDLWriter(out / "vdl") if cfg.log == "visualdl" and rank0 else None

    plotted = 0.0  # when curves.png was last drawn
    while p.epoch < cfg.epochs:
        stopped = train_epoch(cfg, task, model, optimizer, schedule, scaler, loader, p, save)
        row = end_of_epoch(cfg, task, net, splits, p, schedule.get_lr(), partial=stopped)
        is_best = update_best(task, row, p, has_val=splits.val is not None)
        if not stopped:
            p.epoch, p.step_in_epoch, p.loss_sum, p.samples, p.seconds = p.epoch + 1, 0, 0.0, 0, 0.0
        if rank0:
            save(is_best)
            write_metrics(out / "metrics.jsonl", p.history)
            if time.perf_counter() - plotted >= CURVES_EVERY_S:
                plot_curves(out / "curves.png", p.history, task.chart)
                plotted = time.perf_counter()
            if vdl:
                vdl.scalars(row["epoch"], {k: v for k, v in row.items() if k not in ("epoch", "epochs")})
            log(epoch_line(row))
        if stopped:
            log(f"[train] --max-steps {cfg.max_steps} reached")
            break
        if cfg.early_stop and p.bad_evals >= cfg.early_stop:
            log(f"[train] early stop: no better validation score for {p.bad_evals} evaluations "
                f"(best at epoch {p.best_epoch})")
            break
    if rank0 and p.history:
        plot_curves(out / "curves.png", p.history, task.chart)  # the final curves, whatever the throttle skipped
    if vdl:
        vdl.close()
    digest = weights_digest(net)
    if dist.get_world_size() > 1:  # every rank says it, so a user (and the tests) can compare them
        print(f"[train] rank {dist.get_rank()}/{dist.get_world_size()}: weights sha256 {digest}", flush=True)
    best = next((r for r in p.history if r["epoch"] == p.best_epoch), None)
    return {"output": str(out), "final": p.history[-1] if p.history else None, "best": best,
            "best_checkpoint": str(out / checkpoint.FOLDER / checkpoint.BEST),
            "global_step": p.global_step, "weights_sha256": digest}
