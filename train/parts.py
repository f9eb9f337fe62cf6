"""What a run trains with: the device, the data, the network, its optimizer; built once per run."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import paddle
import paddle.distributed as dist
from paddle import nn
from paddle.io import DataLoader

from common import tasks
from common.datasets import Splits
from common.tasks import Task
from models import build_model

from .config import TrainConfig, split_batch
from .data import train_loader
from .errors import ConfigError
from .optim import build_optimizer, build_schedule


@dataclass
class Parts:
    """The objects one run trains with, built by ``build`` from its resolved config."""

    task: Task
    splits: Splits
    net: nn.Layer                            # the network, whose weights are saved and exported
    model: nn.Layer                          # what a step calls: ``net``, or ``paddle.DataParallel(net)``
    loader: DataLoader                       # this process's shard, resumable mid-epoch (train/data.py)
    optimizer: paddle.optimizer.Optimizer    # holds the LR schedule, so saving it saves the schedule
    schedule: paddle.optimizer.lr.LRScheduler  # stepped once per optimizer step
    scaler: paddle.amp.GradScaler            # float16 loss scaling with --amp; passes through without


def setup_device(name: str, amp: bool) -> str:
    """``paddle.set_device`` for cpu/gpu/auto, and the process group when launched data-parallel."""
    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if name == "gpu" and not has_gpu:
        raise ConfigError("--device gpu, but this Paddle has no CUDA or sees no GPU "
                          "(install paddlepaddle-gpu as the README says, or use --device cpu)")
    device = "gpu" if name == "gpu" or (name == "auto" and has_gpu) else "cpu"
    if amp and device != "gpu":
        raise ConfigError("--amp needs a GPU (float16 autocast); drop it on CPU")
    paddle.set_device(device)  # the launcher has already picked each process's GPU
    if int(os.environ.get("PADDLE_TRAINERS_NUM", "1")) > 1 and not dist.is_initialized():
        dist.init_parallel_env()  # gloo on CPU, NCCL on GPUs
    return device


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and Paddle's generators (initialisation, dropout, augmentation)."""
    random.seed(seed)
    np.random.seed(seed)
    paddle.seed(seed)


def build(cfg: TrainConfig) -> Parts:
    """Load the task's splits and build the network, loader, schedule, optimizer and scaler."""
    task = tasks.get(cfg.task)
    splits = task.load_splits(cfg.data_dir, cfg.val_size, cfg.train_subset)
    net = build_model(cfg.task, cfg.model, cfg.dropout)
    loader = train_loader(splits.train, split_batch(cfg.batch_size, dist.get_world_size()), cfg.seed, cfg.num_workers)
    schedule = build_schedule(cfg, loader.batch_sampler.batches_per_epoch())
    optimizer = build_optimizer(cfg, net.parameters(), schedule)
    model = paddle.DataParallel(net) if dist.get_world_size() > 1 else net
    return Parts(task, splits, net, model, loader, optimizer, schedule, paddle.amp.GradScaler(enable=cfg.amp))
