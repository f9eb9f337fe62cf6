"""Time to accuracy: the toolkit's default digit command vs the course's CNN with the course's settings.

    python -m bench.train_mnist            # both runs, one after the other, ~12 minutes on 2 CPU cores
    python -m bench.train_mnist --quick    # a 2000-image smoke version of the same (prints, writes no docs)

Each run is the real command line (a subprocess), so its figures are what a user gets, start-up,
evaluation and checkpoints included. The clock of each epoch is read when its line appears on the
run's output. Results go to docs/BENCHMARKS.md (section "train_mnist") only when the machine was
quiet at the start (1-minute load average at most 0.5; --allow-busy writes anyway, marked); the
run folders stay under runs/bench/.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.harness import MAX_START_LOAD, ROOT, Check, LoadWatch, verdict_table
from bench.report import publish
from train.config import defaults_for

TARGET = 0.994  # the goal: the exported (best-validation) checkpoint reaches this on the official test set
DEFAULT = "default command"
BASELINE = "course baseline"
RUNS = {
    DEFAULT: ["mnist"],
    BASELINE: ["mnist", "--model", "course_cnn", "--optimizer", "sgd", "--lr", "0.01", "--batch-size", "100",
               "--epochs", "5", "--lr-schedule", "constant", "--warmup-epochs", "0", "--augment", "none",
               "--procs", "1"],
}
EPOCH_LINE = re.compile(r"^\[train\] epoch (\d+)/\d+ ")


def train(args: list[str], out: Path, extra: list[str]) -> dict:
    """Run one training command, clocking each epoch's line; summarise its metrics.jsonl."""
    cmd = [sys.executable, "-m", "train", *args, "--output", str(out), "--no-progress", *extra]
    print("$", shlex.join(["python", *cmd[1:]]), flush=True)
    start = time.perf_counter()
    epoch_clock = {}
    with subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            match = EPOCH_LINE.match(line)
            if match:
                epoch_clock[int(match.group(1))] = time.perf_counter() - start
            if line.startswith("[train]"):
                print("   ", line.rstrip(), flush=True)
    if proc.returncode:
        raise SystemExit(f"training failed (exit {proc.returncode}): {shlex.join(cmd)}")
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    config = json.loads((out / "config.json").read_text())
    best = max(rows, key=lambda r: r["val_acc"])  # what best.pdckpt holds: the first of equal bests
    reached = next((r for r in rows if r["test_acc"] >= TARGET), None)
    train_seconds = sum(r["epoch_seconds"] for r in rows)
    return {"command": "python -m train " + shlex.join(args), "epochs": len(rows), "procs": config["world_size"],
            "final_test_acc": rows[-1]["test_acc"], "best_epoch": best["epoch"], "best_test_acc": best["test_acc"],
            "first_at_target": reached and reached["epoch"],
            "seconds_to_target": reached and epoch_clock.get(reached["epoch"]),
            "wall_s": wall, "train_s": train_seconds,
            "images_per_s": sum(r["samples_per_sec"] * r["epoch_seconds"] for r in rows) / train_seconds}


PROFILE_STEPS = (5, 25)  # paddle.profiler records steps 5..24 of the default recipe (warm-up skipped)


def profile_summary(batch: int) -> str:
    """Where a training step of the default recipe goes, from ``paddle.profiler``, one process.

    Runs in this process on random inputs of the real shape: the step's cost does not depend on
    the pixel values. Returns the profiler's model summary and its top operators, as text.
    """
    import paddle
    import paddle.nn.functional as F
    import paddle.profiler as profiler

    from common import tasks
    from models import build_model

    recipe, task = defaults_for("mnist"), tasks.get("mnist")
    net = build_model("mnist", recipe["model"])
    opt = paddle.optimizer.Adam(recipe["lr"], parameters=net.parameters())
    x, y = paddle.randn([batch, 1, 28, 28]), paddle.randint(0, 10, [batch, 1])
    prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU], scheduler=PROFILE_STEPS,
                             on_trace_ready=lambda _: None)  # the summary is what we keep, not a trace file
    prof.start()
    for _ in range(PROFILE_STEPS[1]):
        loss = F.cross_entropy(net(task.augment(x, recipe["augment"])), y)
        loss.backward()
        opt.step()
        opt.clear_grad()
        float(loss)
        prof.step()
    prof.stop()
    text = io.StringIO()
    with contextlib.redirect_stdout(text):
        prof.summary(sorted_by=profiler.SortedKeys.CPUTotal, op_detail=False, thread_sep=False, time_unit="ms")
    lines = text.getvalue().splitlines()

    def block(title: str, rows: int) -> list[str]:
        start = next(i for i, line in enumerate(lines) if title in line)
        body = [line.rstrip() for line in lines[start + 1:] if line.strip() and not line.startswith("-")]
        return body[:rows]

    return "\n".join(["```", *block("Model Summary", 7), "", *block("Operator Summary", 16), "```"])


def table(results: dict) -> str:
    lines = ["| run | command | processes | epochs | test acc, best-val checkpoint | test acc, last epoch "
             f"| first epoch >= {TARGET:.1%} (wall clock) | wall time | training images/s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        target = (f"epoch {r['first_at_target']} ({r['seconds_to_target']:.0f} s)" if r["first_at_target"]
                  else "not reached")
        lines.append(f"| {name} | `{r['command']}` | {r['procs']} | {r['epochs']} | {r['best_test_acc']:.4f} "
                     f"(epoch {r['best_epoch']}) | {r['final_test_acc']:.4f} | {target} | {r['wall_s']:.0f} s | "
                     f"{r['images_per_s']:.0f} |")
    return "\n".join(lines)


def checks(results: dict) -> list[Check]:
    """The goal: the default command's exported checkpoint reaches TARGET in at most the baseline's time."""
    default = results[DEFAULT]
    return [Check("default command: test accuracy of its best-validation checkpoint", default["best_test_acc"],
                  TARGET, fmt="{:.2%}"),
            Check("default command: wall time / the course baseline's", default["wall_s"] / results[BASELINE]["wall_s"],
                  1.0, at_least=False, fmt="{:.2f}x")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2000 training images, 1 epoch; prints, writes no docs")
    parser.add_argument("--allow-busy", action="store_true",
                        help=f"write the docs even if the load average at the start is above {MAX_START_LOAD}")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench"), help="parent folder of the run folders")
    args = parser.parse_args()
    extra = ["--train-subset", "2000", "--epochs", "1"] if args.quick else []
    watch = LoadWatch()
    print(f"load average at the start: {watch.start:.2f}", flush=True)
    results = {}
    for i, (name, run_args) in enumerate(RUNS.items()):
        out = Path(args.out) / f"train_mnist_{i}"
        shutil.rmtree(out, ignore_errors=True)
        results[name] = train(run_args, out, extra)
        print(json.dumps({"run": name, **results[name]}), flush=True)
    profile = profile_summary(defaults_for("mnist")["batch_size"] // results[DEFAULT]["procs"])
    body = "\n\n".join([watch.note(), table(results), verdict_table(checks(results)),
                         "Where one training step of the default recipe goes (`paddle.profiler`, one process, its "
                         f"share of the batch, steps {PROFILE_STEPS[0]}-{PROFILE_STEPS[1] - 1}; CPU milliseconds):",
                         profile])
    publish("train_mnist", "MNIST training: time to 99.4%, default command vs the course baseline", body,
            "python -m bench.train_mnist", watch, args.allow_busy, write=not args.quick)


if __name__ == "__main__":
    main()
