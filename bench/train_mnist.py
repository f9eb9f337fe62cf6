"""Full MNIST training benchmark: the toolkit's default command vs the course's CNN and settings.

    python bench/train_mnist.py            # both runs, ~17 minutes on 2 CPU cores
    python bench/train_mnist.py --quick    # a 2000-image smoke version of the same (not for the docs)

Each run is the real command line (a subprocess), so its figures are what a user gets. Results go to
docs/BENCHMARKS.md (section "train_mnist"); the run folders stay under runs/bench/.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.report import update_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RUNS = {
    "default (cnn, Adam 0.003 cosine, batch 128, 12 epochs)": ["mnist"],
    "course CNN, course settings (SGD 0.01, batch 100, 5 epochs)": [
        "mnist", "--model", "course_cnn", "--optimizer", "sgd", "--lr", "0.01", "--batch-size", "100",
        "--epochs", "5", "--lr-schedule", "constant", "--warmup-epochs", "0"],
}


def train(name: str, args: list[str], out: Path, extra: list[str]) -> dict:
    """Run one training command and summarise its metrics.jsonl."""
    cmd = [sys.executable, "-m", "train", *args, "--output", str(out), "--no-progress", *extra]
    print("$", shlex.join(cmd[1:]), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    wall = time.perf_counter() - start
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    best = max(rows, key=lambda r: r["val_acc"])
    train_seconds = sum(r["epoch_seconds"] for r in rows)
    samples = sum(r["samples_per_sec"] * r["epoch_seconds"] for r in rows)
    return {"name": name, "command": "python -m train " + shlex.join(args), "epochs": len(rows),
            "final_test_acc": rows[-1]["test_acc"], "best_epoch": best["epoch"], "best_test_acc": best["test_acc"],
            "wall_s": wall, "train_s": train_seconds, "images_per_s": samples / train_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2000 training images, 1 epoch; prints, writes no docs")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench"), help="parent folder of the run folders")
    args = parser.parse_args()
    extra = ["--train-subset", "2000", "--epochs", "1"] if args.quick else []
    results = []
    for i, (name, run_args) in enumerate(RUNS.items()):
        out = Path(args.out) / f"train_mnist_{i}"
        if out.exists():
            subprocess.run(["rm", "-rf", str(out)], check=True)
        results.append(train(name, run_args, out, extra))
        print(json.dumps(results[-1]), flush=True)
    if args.quick:
        return
    base = results[1]
    lines = ["| run | command | epochs | test acc (last epoch) | test acc (best val epoch) | wall time | train time | images/s (training) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        lines.append(f"| {r['name']} | `{r['command']}` | {r['epochs']} | {r['final_test_acc']:.4f} | "
                     f"{r['best_test_acc']:.4f} (epoch {r['best_epoch']}) | {r['wall_s']:.0f} s | {r['train_s']:.0f} s | "
                     f"{r['images_per_s']:.0f} |")
    d = results[0]
    lines += ["", f"Accuracy is on the official 10,000-image MNIST test set; \"best val epoch\" is the checkpoint "
              f"selected on the 5,000-image validation split (what `best.pdckpt` holds and what gets exported). "
              f"The default run took {d['wall_s'] / base['wall_s']:.1f}x the course baseline's wall time and trained at "
              f"{d['images_per_s'] / base['images_per_s']:.2f}x its images/s. Wall time includes start-up, "
              "evaluation of validation and test after every epoch, and checkpoints. Each process uses one "
              "math thread (Paddle's CPU default; two threads were slower here); use the second core with "
              "`python -m paddle.distributed.launch --nproc_per_node 2 train/__main__.py mnist`."]
    update_section("train_mnist", "MNIST training: default command vs the course baseline",
                   "python bench/train_mnist.py", "\n".join(lines))


if __name__ == "__main__":
    main()
