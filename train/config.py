"""Training configuration: every default in one visible place, and the command line that sets it.

A ``TrainConfig`` field left as ``None`` means "not chosen": ``resolve`` fills it from the checkpoint
when resuming, otherwise from the defaults. That is what lets ``--resume auto`` repeat the original
run without the user retyping its flags, and refuse flags that would change it.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, fields

from common import tasks
from models import REGISTRY, has_dropout

from .errors import ConfigError

# The defaults, each with its reason. Those of one task (model, epochs, batch size, optimizer, lr
# and schedule, validation split, augmentation, processes) are in its row of common/tasks.py
# (``train_defaults``, and ``model_defaults`` where one model differs from its task's).
DEFAULTS: dict = dict(
    weight_decay=0.0,            # no shrinkage unless a recipe needs it (the housing MLP's does)
    dropout=None,                # the model's own
    seed=42,                     # fixed, so that one command always trains the same run
    device="auto",               # the GPU when Paddle has CUDA and sees one
    amp=False,                   # float16 autocast is GPU-only and changes the numbers: opt in
    num_workers=0,               # the splits are in memory: worker processes would only add start-up
    data_dir=None,               # Paddle's cache, ~/.cache/paddle/dataset/<name>
    output=None,                 # runs/<task>-<model>
    eval_every=1,                # validation and test after every epoch: the curves a learner reads
    early_stop=0,                # off: the recipes' epochs are what they need
    log="none",                  # metrics.jsonl and curves.png are always written; VisualDL is opt-in
    save_every_steps=0,          # a checkpoint at the end of every epoch is enough for minute-long epochs
    keep_last=3,                 # a few to fall back on past a damaged one, without filling the disk
    train_subset=0,              # all the training data
    max_steps=0,                 # no limit
    softmax_before_loss=False,   # the course's bug, reproduced only on request
    progress=True,               # a live bar; per-epoch lines are printed either way
)

TASKS = tuple(tasks.TASKS)

# Fields that define *what* is trained: a resumed run must not change them, or it would not be
# the same run. Everything else (epochs to extend a run, logging, device, workers) may change.
IDENTITY_FIELDS = ("task", "model", "batch_size", "optimizer", "lr", "lr_schedule", "warmup_epochs",
                   "weight_decay", "dropout", "seed", "val_size", "train_subset", "amp",
                   "softmax_before_loss", "augment")

# Fields that describe one invocation, not the run: never inherited from the checkpoint on resume
# (a run stopped by --max-steps continues to its epochs unless --max-steps is given again).
PER_INVOCATION = ("resume", "max_steps")

OPTIMIZERS = ("sgd", "momentum", "adagrad", "adam", "adamw")
SCHEDULES = ("constant", "piecewise", "cosine")
AUGMENT_LEVELS = tuple(dict.fromkeys(level for t in tasks.TASKS.values() for level in t.augment_levels))


@dataclass
class TrainConfig:
    """One training run. ``train.run(TrainConfig("mnist", epochs=1))`` is the same as the CLI."""

    task: str
    model: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    lr_schedule: str | None = None
    warmup_epochs: float | None = None
    weight_decay: float | None = None
    dropout: float | None = None
    seed: int | None = None
    device: str | None = None
    amp: bool | None = None
    num_workers: int | None = None
    data_dir: str | None = None
    output: str | None = None
    resume: str | None = None
    eval_every: int | None = None
    early_stop: int | None = None
    log: str | None = None
    save_every_steps: int | None = None
    keep_last: int | None = None
    val_size: int | None = None
    train_subset: int | None = None
    max_steps: int | None = None
    softmax_before_loss: bool | None = None
    progress: bool | None = None
    augment: str | None = None
    procs: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def task_of(name: str) -> tasks.Task:
    """The task row called ``name``; ``ConfigError`` naming the known ones otherwise."""
    if name not in tasks.TASKS:
        raise ConfigError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    return tasks.TASKS[name]


def defaults_for(task: str, model: str | None = None) -> dict:
    """Every field's default for ``task`` (and ``model``, default: the task's)."""
    row = task_of(task)
    model = model or row.train_defaults["model"]
    return {**DEFAULTS, **row.train_defaults, **row.model_defaults.get(model, {}), "model": model}


def default_output(task: str, model: str | None) -> str:
    """The run folder of ``--output`` unset: ``runs/<task>-<model>``."""
    return f"runs/{task}-{defaults_for(task, model)['model']}"


def resolve(config: TrainConfig, saved: dict | None = None) -> TrainConfig:
    """Fill unset fields from a checkpoint's config (``saved``) or the defaults, and validate.

    Raises ``ConfigError`` if an explicitly set identity field contradicts the checkpoint.
    """
    task_of(config.task)
    if saved is not None:
        saved = {"augment": "none", **saved}  # a checkpoint without the field trained without augmentation
        clashes = [f"--{k.replace('_', '-')} {getattr(config, k)!r} (checkpoint: {saved.get(k)!r})"
                   for k in IDENTITY_FIELDS
                   if getattr(config, k) is not None and getattr(config, k) != saved.get(k)]
        if clashes:
            raise ConfigError("cannot resume with settings that change the run: " + "; ".join(clashes)
                              + ". Drop these flags, or start a new run in another --output folder")
    inherited = {k: v for k, v in (saved or {}).items() if k not in PER_INVOCATION}
    defaults = defaults_for(config.task, config.model or inherited.get("model"))
    values = {}
    for source in (defaults, inherited, dataclasses.asdict(config)):  # later sources win where they are set
        values.update({f.name: source[f.name] for f in fields(TrainConfig) if source.get(f.name) is not None})
    values.setdefault("output", default_output(config.task, values["model"]))
    cfg = TrainConfig(**values)
    _validate(cfg)
    return cfg


def _validate(cfg: TrainConfig) -> None:
    if cfg.model not in REGISTRY[cfg.task]:
        raise ConfigError(f"unknown model {cfg.model!r} for {cfg.task}; choose from {', '.join(REGISTRY[cfg.task])}")
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    if cfg.lr_schedule not in SCHEDULES:
        raise ConfigError(f"unknown --lr-schedule {cfg.lr_schedule!r}; choose from {', '.join(SCHEDULES)}")
    for name in ("epochs", "batch_size"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    if not cfg.lr > 0:
        raise ConfigError("--lr must be positive")
    for name in ("eval_every", "keep_last"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("warmup_epochs", "weight_decay", "val_size", "early_stop", "num_workers", "max_steps",
                 "save_every_steps", "train_subset"):
        if getattr(cfg, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} cannot be negative")
    if cfg.dropout is not None and not 0 <= cfg.dropout < 1:
        raise ConfigError("--dropout must be in [0, 1)")
    if cfg.dropout is not None and not has_dropout(cfg.task, cfg.model):
        raise ConfigError(f"model {cfg.model!r} has no dropout; leave --dropout unset")
    if cfg.early_stop and cfg.val_size == 0:
        raise ConfigError("--early-stop needs a validation split (--val-size > 0)")
    task = tasks.get(cfg.task)
    if cfg.softmax_before_loss and not task.labels:
        raise ConfigError(f"--softmax-before-loss only applies to classification, not {task.description}")
    if cfg.val_size >= task.train_samples:
        raise ConfigError(f"--val-size {cfg.val_size} leaves no training data out of {task.train_samples} samples")
    if cfg.device not in ("auto", "cpu", "gpu"):
        raise ConfigError("--device must be auto, cpu or gpu")
    if cfg.log not in ("visualdl", "none"):
        raise ConfigError("--log must be visualdl or none")
    if cfg.augment not in task.augment_levels:
        raise ConfigError(f"--augment {cfg.augment!r} is not available for {task.description}; "
                          f"choose from {', '.join(task.augment_levels)}")
    if cfg.procs != "auto" and not (cfg.procs.isdigit() and int(cfg.procs) >= 1):
        raise ConfigError(f"--procs must be auto or a whole number of processes, got {cfg.procs!r}")


def split_batch(batch_size: int, procs: int) -> int:
    """Each of ``procs`` data-parallel processes' share of ``--batch-size``, the batch of one optimizer
    step in all: the same recipe trains the same way on one process or several."""
    if batch_size % procs:
        raise ConfigError(f"--batch-size {batch_size} does not split evenly over {procs} processes")
    return batch_size // procs


# The command line: (flag, argparse options, what it does). The default each help line ends with is
# generated from the defaults, so the two cannot disagree.
FLAGS: list[tuple[str, dict, str]] = [
    ("--model", {}, "network from models/: " + "; ".join(f"{t}: {', '.join(REGISTRY[t])}" for t in TASKS)),
    ("--epochs", {"type": int}, "passes over the training data; raise it on --resume to extend a finished run"),
    ("--batch-size", {"type": int}, "samples per step, in all (data-parallel processes take an equal share each)"),
    ("--optimizer", {"choices": OPTIMIZERS}, "momentum uses 0.9"),
    ("--lr", {"type": float}, "peak learning rate"),
    ("--lr-schedule", {"choices": SCHEDULES}, "constant; piecewise (x0.1 at 50%% and 75%% of the steps); "
     "cosine (to 0 at the end)"),
    ("--warmup-epochs", {"type": float}, "linear warm-up from 0 to --lr over this many epochs, before the schedule"),
    ("--weight-decay", {"type": float}, "L2 regularisation coefficient (decoupled for adamw)"),
    ("--dropout", {"type": float}, "dropout probability, for models that have dropout (unset: the model's own)"),
    ("--seed", {"type": int}, "seed for initialisation, dropout and data order"),
    ("--device", {"choices": ("auto", "cpu", "gpu")}, "auto picks the GPU when Paddle has CUDA and sees one"),
    ("--procs", {}, "data-parallel training processes on this machine, started through "
     "paddle.distributed.launch; auto: 2 on a CPU with 2 or more cores, else 1 (train.run() in a notebook is "
     "always one process)"),
    ("--augment", {"choices": AUGMENT_LEVELS}, "random rotation, zoom, slant, shift, stroke width and blur of training images: none, light "
     "(+-15 degrees) or strong (+-20); see common/digit_augment.py"),
    ("--amp", {"action": "store_true"}, "mixed precision (float16 autocast + loss scaling); GPU only"),
    ("--num-workers", {"type": int}, "DataLoader worker processes (0: load in the main process)"),
    ("--data-dir", {}, "folder holding the dataset files (unset: Paddle's cache, ~/.cache/paddle/dataset/<name>)"),
    ("--output", {}, "run folder for config, metrics, curves and checkpoints (unset: runs/<task>-<model>)"),
    ("--resume", {"nargs": "?", "const": "auto"}, "continue a run: 'auto' (or no value) takes the newest valid "
     "checkpoint in --output; or give a checkpoint file"),
    ("--eval-every", {"type": int}, "evaluate validation and test every N epochs (the last epoch always is)"),
    ("--early-stop", {"type": int, "metavar": "PATIENCE"}, "stop after PATIENCE evaluations without a better "
     "validation score (0: off)"),
    ("--log", {"choices": ("visualdl", "none")}, "also write VisualDL scalars to <output>/vdl"),
    ("--save-every-steps", {"type": int, "metavar": "N"}, "also checkpoint every N steps inside an epoch "
     "(0: end of epoch only)"),
    ("--keep-last", {"type": int, "metavar": "K"}, "checkpoints to keep besides the best"),
    ("--val-size", {"type": int}, "training samples held out for validation (model selection, early "
     "stopping); the official test set is never used for choices"),
    ("--train-subset", {"type": int, "metavar": "N"}, "train on the first N training samples only (0: all)"),
    ("--max-steps", {"type": int}, "stop after N optimizer steps in total (smoke tests; 0: no limit)"),
    ("--softmax-before-loss", {"action": "store_true"}, "course experiment: apply softmax to the logits before "
     "the cross-entropy loss, which applies it again (a classic bug)"),
    ("--no-progress", {"dest": "progress", "action": "store_false"}, "no progress bar (per-epoch lines are "
     "still printed)"),
]


def default_text(field: str) -> str:
    """``(default: ...)`` for a field: per task when the tasks set it, else the common value."""
    rows = tasks.TASKS.values()
    per_model = "".join(f"; {t.name} {m}: {d[field]}" for t in rows for m, d in t.model_defaults.items()
                        if field in d)
    if not any(field in t.train_defaults for t in rows):
        value = DEFAULTS.get(field)
        return "" if value is None else f" (default: {value}{per_model})"
    return " (default: " + ", ".join(f"{t.name} {defaults_for(t.name)[field]}" for t in rows) + per_model + ")"


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m train`` command line. Flags left out stay ``None`` (see ``resolve``)."""
    p = argparse.ArgumentParser(
        prog="python -m train",
        description="Train a Paddle dygraph model for " + " or ".join(
            f"{t.description} ({t.name})" for t in tasks.TASKS.values()) + ", with checkpoints that resume exactly.",
        epilog="Data-parallel: python -m paddle.distributed.launch --nproc_per_node 2 train/__main__.py mnist ...",
        argument_default=None,
    )
    p.add_argument("task", choices=TASKS, help="what to learn: " + ", ".join(
        f"{t.name} ({t.description})" for t in tasks.TASKS.values()))
    for flag, options, text in FLAGS:
        field = options.get("dest", flag[2:].replace("-", "_"))
        if options.get("action") in ("store_true", "store_false"):
            options = {**options, "default": None}
            text += "" if field not in DEFAULTS or DEFAULTS[field] != (options["action"] == "store_true") \
                else " (on by default)"
        else:
            text += default_text(field)
        p.add_argument(flag, help=text, **options)
    return p


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    """Parse the command line into an unresolved ``TrainConfig``."""
    args = vars(build_parser().parse_args(argv))
    return TrainConfig(**args)
