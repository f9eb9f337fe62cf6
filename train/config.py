"""Training configuration: every default in one visible place, and the command line that sets it.

A ``TrainConfig`` field left as ``None`` means "not chosen": it is filled from the checkpoint when
resuming, otherwise from ``DEFAULTS``. That is what lets ``--resume auto`` repeat the original run
without the user retyping its flags, and refuse flags that would change it.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, fields

from models import REGISTRY, TASKS, default_model, has_dropout

from .errors import ConfigError

# Defaults per task. The MNIST ones give >= 99.3% test accuracy with the default CNN;
# the housing ones are the course's linear regression with plain SGD, decayed (cosine) so that
# it lands on the least-squares optimum instead of jittering around it.
DEFAULTS: dict[str, dict] = {
    "mnist": dict(model="cnn", epochs=12, batch_size=128, optimizer="adam", lr=0.003,
                  lr_schedule="cosine", warmup_epochs=1.0, val_size=5000),
    "housing": dict(model="linear", epochs=100, batch_size=32, optimizer="sgd", lr=0.05,
                    lr_schedule="cosine", warmup_epochs=0.0, val_size=40),
}
COMMON_DEFAULTS: dict = dict(
    weight_decay=0.0, dropout=None, seed=42, device="auto", amp=False, num_workers=0,
    data_dir=None, output=None, eval_every=1, early_stop=0, log="none", save_every_steps=0,
    keep_last=3, train_subset=0, max_steps=0, softmax_before_loss=False, progress=True,
)

# Fields that define *what* is trained: a resumed run must not change them, or it would not be
# the same run. Everything else (epochs to extend a run, logging, device, workers) may change.
IDENTITY_FIELDS = ("task", "model", "batch_size", "optimizer", "lr", "lr_schedule", "warmup_epochs",
                   "weight_decay", "dropout", "seed", "val_size", "train_subset", "amp",
                   "softmax_before_loss")

# Fields that describe one invocation, not the run: never inherited from the checkpoint on resume
# (a run stopped by --max-steps continues to its epochs unless --max-steps is given again).
PER_INVOCATION = ("resume", "max_steps")

OPTIMIZERS = ("sgd", "momentum", "adagrad", "adam", "adamw")
SCHEDULES = ("constant", "piecewise", "cosine")


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

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve(config: TrainConfig, saved: dict | None = None) -> TrainConfig:
    """Fill unset fields from a checkpoint's config (``saved``) or the defaults, and validate.

    Raises ``ConfigError`` if an explicitly set identity field contradicts the checkpoint.
    """
    if config.task not in TASKS:
        raise ConfigError(f"unknown task {config.task!r}; choose from {', '.join(TASKS)}")
    if saved is not None:
        clashes = [f"--{k.replace('_', '-')} {getattr(config, k)!r} (checkpoint: {saved.get(k)!r})"
                   for k in IDENTITY_FIELDS
                   if getattr(config, k) is not None and getattr(config, k) != saved.get(k)]
        if clashes:
            raise ConfigError("cannot resume with settings that change the run: " + "; ".join(clashes)
                              + ". Drop these flags, or start a new run in another --output folder")
    defaults = {**COMMON_DEFAULTS, **DEFAULTS[config.task]}
    values = {}
    for f in fields(TrainConfig):
        value = getattr(config, f.name)
        if value is None and saved is not None and f.name in saved and f.name not in PER_INVOCATION:
            value = saved[f.name]
        if value is None:
            value = defaults.get(f.name)
        values[f.name] = value
    if values["output"] is None:
        values["output"] = f"runs/{config.task}-{values['model']}"
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
    if cfg.softmax_before_loss and cfg.task != "mnist":
        raise ConfigError("--softmax-before-loss only applies to the digit task")
    if cfg.device not in ("auto", "cpu", "gpu"):
        raise ConfigError("--device must be auto, cpu or gpu")
    if cfg.log not in ("visualdl", "none"):
        raise ConfigError("--log must be visualdl or none")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m train`` command line. Flags left out stay ``None`` (see ``resolve``)."""
    d = DEFAULTS
    p = argparse.ArgumentParser(
        prog="python -m train",
        description="Train a Paddle dygraph model for handwritten digits (mnist) or house prices "
                    "(housing), with checkpoints that resume exactly.",
        epilog="Data-parallel: python -m paddle.distributed.launch --nproc_per_node 2 train/__main__.py mnist ...",
        argument_default=None,
    )
    p.add_argument("task", choices=TASKS, help="what to learn: mnist (digits) or housing (prices)")
    a = p.add_argument
    a("--model", help="network from models/: mnist: " + ", ".join(REGISTRY["mnist"]) +
      f" (default {default_model('mnist')}); housing: " + ", ".join(REGISTRY["housing"]) +
      f" (default {default_model('housing')})")
    a("--epochs", type=int, help=f"passes over the training data (mnist {d['mnist']['epochs']}, "
      f"housing {d['housing']['epochs']}); raise it on --resume to extend a finished run")
    a("--batch-size", type=int, help=f"samples per step (mnist {d['mnist']['batch_size']}, "
      f"housing {d['housing']['batch_size']}); per process when data-parallel")
    a("--optimizer", choices=OPTIMIZERS, help=f"mnist {d['mnist']['optimizer']}, housing "
      f"{d['housing']['optimizer']}; momentum uses 0.9")
    a("--lr", type=float, help=f"peak learning rate (mnist {d['mnist']['lr']}, housing {d['housing']['lr']})")
    a("--lr-schedule", choices=SCHEDULES, help="constant; piecewise (x0.1 at 50%% and 75%% of the "
      "epochs); cosine (to 0 at the end). mnist: cosine, housing: constant")
    a("--warmup-epochs", type=float, help="linear warm-up from 0 to --lr over this many epochs, "
      "before the schedule (mnist 1, housing 0)")
    a("--weight-decay", type=float, help="L2 regularisation coefficient (decoupled for adamw); default 0")
    a("--dropout", type=float, help="dropout probability, for models that have dropout "
      "(default: the model's own, 0.3 for cnn)")
    a("--seed", type=int, help="seed for initialisation, dropout and data order (default 42)")
    a("--device", choices=("auto", "cpu", "gpu"), help="auto picks the GPU when Paddle has CUDA "
      "and sees one (default auto)")
    a("--amp", action="store_true", default=None, help="mixed precision (float16 autocast + loss "
      "scaling); GPU only")
    a("--num-workers", type=int, help="DataLoader worker processes (default 0: load in the main process)")
    a("--data-dir", help="folder holding the dataset files (default: Paddle's cache, "
      "~/.cache/paddle/dataset/<mnist|uci_housing>)")
    a("--output", help="run folder for config, metrics, curves and checkpoints "
      "(default runs/<task>-<model>)")
    a("--resume", nargs="?", const="auto", help="continue a run: 'auto' (or no value) takes the newest "
      "valid checkpoint in --output; or give a checkpoint file")
    a("--eval-every", type=int, help="evaluate validation and test every N epochs (default 1; "
      "the last epoch is always evaluated)")
    a("--early-stop", type=int, metavar="PATIENCE", help="stop after PATIENCE evaluations without a "
      "better validation score (default 0: off)")
    a("--log", choices=("visualdl", "none"), help="also write VisualDL scalars to <output>/vdl (default none)")
    a("--save-every-steps", type=int, metavar="N", help="also checkpoint every N steps inside an "
      "epoch (default 0: end of epoch only)")
    a("--keep-last", type=int, metavar="K", help="checkpoints to keep besides the best (default 3)")
    a("--val-size", type=int, help="training samples held out for validation: model selection and "
      "early stopping (mnist 5000, housing 40); the official test set is never used for choices")
    a("--train-subset", type=int, metavar="N", help="train on the first N training samples only "
      "(quick experiments; default 0: all)")
    a("--max-steps", type=int, help="stop after N optimizer steps in total (smoke tests; default 0: no limit)")
    a("--softmax-before-loss", action="store_true", default=None, help="course experiment: apply "
      "softmax to the logits before the cross-entropy loss, which applies it again (a classic bug)")
    a("--no-progress", dest="progress", action="store_false", default=None,
      help="no progress bar (per-epoch lines are still printed)")
    return p


def config_from_args(argv: list[str] | None = None) -> TrainConfig:
    """Parse the command line into an unresolved ``TrainConfig``."""
    args = vars(build_parser().parse_args(argv))
    return TrainConfig(**args)
