"""The training run, as plain functions: ``run(TrainConfig("mnist")) -> metrics``.

Read top to bottom: ``prepare`` resolves the configuration once, with the checkpoint it resumes
from; ``train`` builds the run's parts, then trains epochs (train -> evaluate -> record ->
checkpoint) until the last one, ``--max-steps`` or early stopping.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import paddle
import paddle.distributed as dist
import paddle.nn.functional as F
from tqdm.auto import tqdm

from common import checkpoint
from common.atomic import atomic_write_text

from . import resume
from .config import TrainConfig, default_output, resolve
from .data import eval_loader
from .parts import Parts, build, seed_everything, setup_device
from .report import Curves, VisualDLWriter, epoch_line, log, write_metrics
from .resume import Progress

EVAL_BATCH = 1000  # samples per evaluation call: MNIST's 10,000 test images in 10 calls, little memory


def run(config: TrainConfig) -> dict:
    """Train as configured and return the final and best metrics.

    Raises ``TrainError`` subclasses for problems the user can fix (data, flags, checkpoints).
    """
    cfg, saved = prepare(config)
    return train(cfg, saved)


def prepare(config: TrainConfig, say=log) -> tuple[TrainConfig, dict | None]:
    """The resolved configuration and the checkpoint it resumes from (None: a new run).

    ``say`` receives what the search for a checkpoint has to tell (skipped files, none found).
    """
    out = Path(config.output or default_output(config.task, config.model))
    saved = resume.find_checkpoint(config.resume, out / checkpoint.FOLDER, config.task, config.model, say)
    if saved and config.output is None and config.resume != "auto":
        out = resume.run_folder_of(Path(config.resume), saved)  # keep writing where that run lives
    return resolve(dataclasses.replace(config, output=str(out)), saved["config"] if saved else None), saved


def train(cfg: TrainConfig, saved: dict | None) -> dict:
    """Train a resolved configuration, from ``saved`` (a checkpoint) or from its seed."""
    device = setup_device(cfg.device, cfg.amp)
    resume.require_same_start(saved)
    # Paddle names parameters and optimizer accumulators from a per-process counter; a fresh one per
    # run gives every run the same names, so a run resumed in the same process (a notebook) loads its
    # optimizer state. The accumulators are named at the first step, so the guard spans the whole run.
    with paddle.utils.unique_name.guard():
        if saved is None:
            seed_everything(cfg.seed)
        parts = build(cfg)
        p = resume.restore(saved, parts.net, parts.optimizer, parts.scaler) if saved else Progress()
        out, rank0 = Path(cfg.output), dist.get_rank() == 0
        if rank0:
            start_run_folder(out, cfg, device, parts)
        curves = Curves(out / "curves.png", parts.task.chart)
        vdl = VisualDLWriter(out / "vdl") if cfg.log == "visualdl" and rank0 else None
        while p.epoch < cfg.epochs:
            stopped = train_epoch(cfg, parts, p)
            row = end_of_epoch(cfg, parts, p, partial=stopped)
            is_best = update_best(parts.task, row, p, has_val=parts.splits.val is not None)
            if not stopped:
                p.next_epoch()
            if rank0:
                resume.save(cfg, parts, p, is_best)
                record_epoch(out, p.history, row, curves, vdl)
            reason = stop_reason(cfg, p, stopped)
            if reason:
                log(reason)
                break
        if rank0 and p.history:
            curves.update(p.history, force=True)  # the final curves, whatever the throttle skipped
        if vdl:
            vdl.close()
        return summary(out, parts, p)


def start_run_folder(out: Path, cfg: TrainConfig, device: str, parts: Parts) -> None:
    """Create the run folder with its ``config.json`` and say what is about to train."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.json", json.dumps(
        {**cfg.to_dict(), "paddle_version": paddle.__version__, "device": device,
         "world_size": dist.get_world_size()}, indent=2) + "\n")
    s = parts.splits
    log(f"[train] {cfg.task}/{cfg.model} on {device} x{dist.get_world_size()}: {len(s.train)} train, "
        f"{len(s.val) if s.val else 0} val, {len(s.test)} test samples -> {out}")


def loss_fn(task, softmax_before_loss: bool, out, y):
    """The task's loss; ``--softmax-before-loss`` first applies softmax to the logits (the course's
    double-softmax bug: cross-entropy applies it again)."""
    if softmax_before_loss:
        out = F.softmax(out)
    return task.loss(out, y)


def train_step(cfg: TrainConfig, parts: Parts, x, y):
    """One optimizer step on a batch (augmented as configured); returns the batch's loss."""
    if cfg.augment != "none":
        x = parts.task.augment(x, cfg.augment)
    with paddle.amp.auto_cast(enable=cfg.amp):
        loss = loss_fn(parts.task, cfg.softmax_before_loss, parts.model(x), y)
    parts.scaler.scale(loss).backward()
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.optimizer.clear_grad()
    parts.schedule.step()
    return loss


def train_epoch(cfg: TrainConfig, parts: Parts, p: Progress) -> bool:
    """Train from ``p.step_in_epoch`` to the end of epoch ``p.epoch``, checkpointing every
    ``--save-every-steps``; True if ``--max-steps`` stopped it."""
    sampler = parts.loader.batch_sampler
    sampler.set_epoch(p.epoch, p.step_in_epoch)
    total = sampler.batches_per_epoch()
    bar = tqdm(total=total, initial=p.step_in_epoch, unit="step", desc=f"epoch {p.epoch + 1}/{cfg.epochs}",
               disable=not cfg.progress or dist.get_rank() != 0, dynamic_ncols=True, leave=False)
    start, stopped = time.perf_counter(), False
    parts.model.train()
    for x, y in parts.loader:
        loss = train_step(cfg, parts, x, y)
        p.global_step += 1
        p.step_in_epoch += 1
        p.loss_sum, p.samples = accumulate(p.loss_sum, p.samples, loss, int(x.shape[0]))
        bar.update(1)
        bar.set_postfix(loss=f"{p.loss_sum / p.samples:.4f}", lr=f"{parts.schedule.get_lr():.2e}",
                        samples_s=f"{p.samples / (p.seconds + time.perf_counter() - start):.0f}", refresh=False)
        if cfg.max_steps and p.global_step >= cfg.max_steps:
            stopped = True
            break
        if cfg.save_every_steps and p.global_step % cfg.save_every_steps == 0 and p.step_in_epoch < total:
            p.seconds += time.perf_counter() - start  # the clock counts training, not saving
            resume.save(cfg, parts, p, is_best=False)
            start = time.perf_counter()
    p.seconds += time.perf_counter() - start
    bar.close()
    return stopped


def accumulate(loss_sum: float, samples: int, loss, n: int) -> tuple[float, int]:
    """Add a batch's loss to the epoch sums; data-parallel ranks add everyone's so all agree."""
    if dist.get_world_size() > 1:
        both = paddle.to_tensor([float(loss) * n, float(n)], dtype="float64")
        dist.all_reduce(both)
        total, count = both.numpy().tolist()
        return loss_sum + total, samples + int(count)
    return loss_sum + float(loss) * n, samples + n


@paddle.no_grad()
def evaluate(task, softmax_before_loss: bool, model, arrays, stats: dict) -> dict:
    """Mean loss and the task's metrics (accuracy; or MSE/MAE in $1000s) over a whole split."""
    model.eval()
    total, loss_sum, outputs = 0, 0.0, []
    for x, y in eval_loader(arrays, EVAL_BATCH):
        out = model(x)
        n = int(x.shape[0])
        loss_sum += float(loss_fn(task, softmax_before_loss, out, y)) * n
        total += n
        outputs.append(out.numpy())
    model.train()
    return {"loss": loss_sum / total, **task.metrics(np.concatenate(outputs), arrays.y, stats)}


def end_of_epoch(cfg: TrainConfig, parts: Parts, p: Progress, partial: bool) -> dict:
    """Evaluate (if due), append the epoch's row to the history and return it."""
    row = {"epoch": p.epoch + 1, "epochs": cfg.epochs, "global_step": p.global_step, "lr": parts.schedule.get_lr(),
           "train_loss": p.loss_sum / max(p.samples, 1), "epoch_seconds": p.seconds,
           "samples_per_sec": p.samples / max(p.seconds, 1e-9)}
    if partial:
        row["partial"] = True
    if (p.epoch + 1) % cfg.eval_every == 0 or p.epoch + 1 == cfg.epochs or partial:
        for name, split in (("val", parts.splits.val), ("test", parts.splits.test)):
            if split is not None:
                figures = evaluate(parts.task, cfg.softmax_before_loss, parts.net, split, parts.splits.stats)
                row.update({f"{name}_{k}": v for k, v in figures.items()})
    p.history.append(row)
    return row


def update_best(task, row: dict, p: Progress, has_val: bool) -> bool:
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


def record_epoch(out: Path, history: list[dict], row: dict, curves: Curves, vdl: VisualDLWriter | None) -> None:
    """What a person sees of an epoch: metrics.jsonl, curves.png, VisualDL scalars, one line."""
    write_metrics(out / "metrics.jsonl", history)
    curves.update(history)
    if vdl:
        vdl.scalars(row["epoch"], {k: v for k, v in row.items() if k not in ("epoch", "epochs")})
    log(epoch_line(row))


def stop_reason(cfg: TrainConfig, p: Progress, stopped: bool) -> str | None:
    """Why the run stops before its last epoch, or None to go on."""
    if stopped:
        return f"[train] --max-steps {cfg.max_steps} reached"
    if cfg.early_stop and p.bad_evals >= cfg.early_stop:
        return (f"[train] early stop: no better validation score for {p.bad_evals} evaluations "
                f"(best at epoch {p.best_epoch})")
    return None


def weights_digest(net) -> str:
    """Short sha256 of the trainable parameters: equal digests mean equal weights, bit for bit.

    Paddle lists batch norm's running mean and variance among the parameters too (not trainable);
    they are left out: each data-parallel rank keeps its own.
    """
    h = hashlib.sha256()
    for name, param in sorted(net.named_parameters()):
        if not param.trainable:
            continue
        h.update(name.encode())
        h.update(np.ascontiguousarray(param.numpy()).tobytes())
    return h.hexdigest()[:16]


def summary(out: Path, parts: Parts, p: Progress) -> dict:
    """The run's result: final and best rows, where the best checkpoint is, the weights' digest."""
    digest = weights_digest(parts.net)
    if dist.get_world_size() > 1:  # every rank says it, so a user (and the tests) can compare them
        print(f"[train] rank {dist.get_rank()}/{dist.get_world_size()}: weights sha256 {digest}", flush=True)
    best = next((r for r in p.history if r["epoch"] == p.best_epoch), None)
    return {"output": str(out), "final": p.history[-1] if p.history else None, "best": best,
            "best_checkpoint": str(out / checkpoint.FOLDER / checkpoint.BEST),
            "global_step": p.global_step, "weights_sha256": digest}
