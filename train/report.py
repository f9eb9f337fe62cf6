"""What a run shows a person: per-epoch lines, metrics.jsonl, a curves PNG, VisualDL scalars."""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import paddle.distributed as dist

from common.atomic import atomic_write_bytes, atomic_write_text

# Redraw curves.png at most this often: a drawing costs 0.1-0.5 s, which was 57 of the 68 s of a
# 100-epoch housing run whose training takes about one second.
CURVES_EVERY_S = 5.0


def log(msg: str) -> None:
    """Print on rank 0 only (every rank runs the training code under the launcher)."""
    if dist.get_rank() == 0:
        print(msg, flush=True)


def write_metrics(path: Path, history: list[dict]) -> None:
    """Rewrite ``metrics.jsonl`` from the history (so a resumed run never duplicates a line)."""
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in history))


def plot_curves(path: Path, history: list[dict], chart: dict) -> None:
    """Loss and metric per epoch, train/val/test, as a PNG (matplotlib's Agg canvas, no display).

    ``chart`` is the task's (``common.tasks``): metric key, titles, and whether the loss is on a log scale.
    """
    from matplotlib.figure import Figure  # the object API: no pyplot state, about 0.1 s a plot

    metric = chart["metric"]
    marker = "o" if len(history) <= 30 else None
    fig = Figure(figsize=(10, 4))
    ax_loss, ax_metric = fig.subplots(1, 2)
    for ax, keys in ((ax_loss, ("train_loss", "val_loss")), (ax_metric, (f"val_{metric}", f"test_{metric}"))):
        for key in keys:
            pts = [(row["epoch"], row[key]) for row in history if row.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), "--" if key == "val_loss" else "-", marker=marker, label=key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:  # nothing evaluated yet (--eval-every): no legend to draw
            ax.legend()
    ax_loss.set_title(chart["loss_title"])
    ax_metric.set_title(chart["metric_title"])
    if chart["log_loss"]:
        ax_loss.set_yscale("log")
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.92, wspace=0.2)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    atomic_write_bytes(path, buf.getvalue())


class Curves:
    """``curves.png`` of a run, redrawn at most every ``CURVES_EVERY_S`` seconds unless forced."""

    def __init__(self, path: Path, chart: dict):
        self.path, self.chart, self.drawn_at = path, chart, None

    def update(self, history: list[dict], force: bool = False) -> None:
        if force or self.drawn_at is None or time.perf_counter() - self.drawn_at >= CURVES_EVERY_S:
            plot_curves(self.path, history, self.chart)
            self.drawn_at = time.perf_counter()


class VisualDLWriter:
    """Thin holder for a VisualDL ``LogWriter`` (imported only when ``--log visualdl``)."""

    def __init__(self, logdir: Path):
        from visualdl import LogWriter
        self.writer = LogWriter(logdir=str(logdir))

    def scalars(self, step: int, values: dict) -> None:
        for tag, value in values.items():
            if isinstance(value, (int, float)):
                self.writer.add_scalar(tag=tag, step=step, value=value)

    def close(self) -> None:
        self.writer.close()


def epoch_line(row: dict) -> str:
    """One human line per epoch: the training loss, then every validation and test figure the task
    reports, in the row's order (the test loss left out: nothing is chosen on the test set)."""
    keys = [k for k, v in row.items() if k.startswith(("train_", "val_", "test_")) and k != "test_loss"
            and v is not None]
    parts = [f"{k}={row[k]:.4f}" for k in keys]
    return (f"[train] epoch {row['epoch']}/{row['epochs']} " + " ".join(parts)
            + f" lr={row['lr']:.3g} {row['samples_per_sec']:.0f} samples/s {row['epoch_seconds']:.1f}s")
