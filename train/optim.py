"""Optimizer and learning-rate schedule from the config, with Paddle's own classes."""
from __future__ import annotations

import paddle
from paddle.optimizer import lr as lr_sched


def build_schedule(cfg, steps_per_epoch: int) -> lr_sched.LRScheduler:
    """Per-step schedule: optional linear warm-up, then constant / piecewise / cosine."""
    total = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.lr_schedule == "piecewise":
        # x0.1 at half and at three quarters of the run, the classic step schedule.
        sched = lr_sched.PiecewiseDecay(boundaries=[total // 2, total * 3 // 4],
                                        values=[cfg.lr, cfg.lr * 0.1, cfg.lr * 0.01])
    elif cfg.lr_schedule == "cosine":
        sched = lr_sched.CosineAnnealingDecay(cfg.lr, T_max=max(1, total - warmup))
    else:
        sched = lr_sched.LambdaDecay(cfg.lr, lambda step: 1.0)
    if warmup:
        sched = lr_sched.LinearWarmup(sched, warmup_steps=warmup, start_lr=0.0, end_lr=cfg.lr)
    return sched


def build_optimizer(cfg, parameters, schedule) -> paddle.optimizer.Optimizer:
    """sgd / momentum (0.9) / adagrad / adam with L2 decay; adamw with decoupled decay."""
    if cfg.optimizer == "adamw":
        return paddle.optimizer.AdamW(schedule, parameters=parameters, weight_decay=cfg.weight_decay)
    l2 = paddle.regularizer.L2Decay(cfg.weight_decay) if cfg.weight_decay else None
    kinds = {
        "sgd": lambda: paddle.optimizer.SGD(schedule, parameters=parameters, weight_decay=l2),
        "momentum": lambda: paddle.optimizer.Momentum(schedule, momentum=0.9, parameters=parameters, weight_decay=l2),
        "adagrad": lambda: paddle.optimizer.Adagrad(schedule, parameters=parameters, weight_decay=l2),
        "adam": lambda: paddle.optimizer.Adam(schedule, parameters=parameters, weight_decay=l2),
    }
    return kinds[cfg.optimizer]()
