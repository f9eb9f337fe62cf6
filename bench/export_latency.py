"""Latency of an exported digit model: dygraph vs Paddle Inference vs onnxruntime vs OpenVINO, CPU.

    nice python -m bench.export_latency [--checkpoint PATH ...] [--data-dir DIR]

For each checkpoint (default: the default CNN and the course CNN, trained for a few steps here:
weights do not change latency), exports a bundle with ONNX, then times one call at batch 1 and
at batch 64 for: the dygraph model (1 and 2 math threads), the paddle.inference predictor
(oneDNN on/off x 1 and 2 threads) and onnxruntime (1 and 2 intra-op threads). A call is what a
server does per request: numpy in, numpy out. Median and p90 over many repetitions, after warm-up.
Then every documented Paddle Inference switch, one at a time, with its parity against the default,
and a table splitting the batch-1 call into its parts. Refuses to write when the load average at the
start is above 0.5 (other work would be measured too), unless --allow-busy.
Writes the ``export_latency`` section of docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.harness import SHARED_DATA, Check, LoadWatch, add_write_flags, interleaved, median_p90_ms, timed, \
    verdict_table
from bench.report import publish

REPEATS = {1: 400, 64: 60}  # per setting; batch 64 calls take ~20x longer
WARMUP = {1: 30, 64: 5}
MODELS = ("cnn", "course_cnn")


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.export_latency", description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", action="append", help="digit checkpoint(s) to measure (default: train "
                   "cnn and course_cnn for a few steps)")
    p.add_argument("--data-dir", default=str(SHARED_DATA), help="MNIST folder for training the default "
                   "checkpoints and for the parity check (default ../shared/data)")
    add_write_flags(p)
    return p.parse_args(argv)


def quick_checkpoints(data_dir: str, folder: Path) -> list[Path]:
    """A few training steps of each model in MODELS: real checkpoints, weights irrelevant for timing."""
    import train

    paths = []
    for name in MODELS:
        out = folder / name
        train.run(train.TrainConfig("mnist", model=name, max_steps=5, train_subset=640, val_size=100,
                                    data_dir=data_dir, output=str(out), progress=False))
        paths.append(out / "checkpoints" / "best.pdckpt")
    return paths


def test_images(data_dir: str) -> dict[int, np.ndarray]:
    """{1: one normalised MNIST test image, 64: the first 64}, as model inputs."""
    from common.datasets import read_mnist
    from common.digit_image import normalize

    pixels, _ = read_mnist("test", data_dir, limit=64)
    return {1: np.ascontiguousarray(normalize(pixels[:1])), 64: normalize(pixels)}


def timings(call, batch: int) -> tuple[float, float]:
    """(median, p90) milliseconds of ``call()`` at ``batch``'s repeats, after warm-up."""
    return median_p90_ms(interleaved({"call": timed(call)}, REPEATS[batch], WARMUP[batch])["call"])


def runners(bundle: Path, checkpoint: Path):
    """(runtime, setting, make(threads) -> call(x)) for every way of running the model."""
    import paddle
    import paddle.base.core as core

    from common.runtimes import PredictorRunner, create_predictor, openvino_model, openvino_run
    from export.parity import onnx_session
    from export.pipeline import plan_from_checkpoint

    model = plan_from_checkpoint(checkpoint, with_samples=False).layer

    def dygraph(threads):
        core.set_num_threads(threads)

        def call(x):
            with paddle.no_grad():
                return model(paddle.to_tensor(x)).numpy()
        return call

    def predictor(mkldnn):
        def make(threads):
            runner = PredictorRunner(create_predictor(bundle, mkldnn=mkldnn, threads=threads))
            return lambda x: runner.run(x)[0]
        return make

    def ort(threads):
        sess = onnx_session(bundle / "inference.onnx", threads=threads)
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})[0]

    def ov(threads):
        request = openvino_model(bundle / "inference.onnx", threads=threads).create_infer_request()
        return lambda x: openvino_run(request, [x])[0]

    return [("dygraph", "", dygraph), ("paddle.inference", "oneDNN on", predictor(True)),
            ("paddle.inference", "oneDNN off", predictor(False)), ("onnxruntime", "", ort), ("openvino", "", ov)]


def measure(name: str, bundle: Path, checkpoint: Path, images: dict) -> list[dict]:
    rows = []
    for runtime, setting, make in runners(bundle, checkpoint):
        for threads in (1, 2):
            call = make(threads)
            row = {"model": name, "runtime": runtime, "setting": setting, "threads": threads}
            for batch, x in images.items():
                row[batch] = timings(lambda: call(x), batch)
            rows.append(row)
            print(row, flush=True)
    return rows


def paddle_settings(bundle: Path, images: dict) -> list[dict]:
    """Every documented Paddle Inference switch, one at a time, 1 thread: batch-1 and batch-64 median
    ms, and the largest output difference from the default setting (parity must stay within 1e-5)."""
    import paddle
    from paddle import inference

    from common.runtimes import PredictorRunner, predictor_config

    def level(n):
        return lambda c: c.set_optimization_level(n)

    variants = [("default: oneDNN, IR optimisation, new executor", True, None, {}),
                ("oneDNN off", False, None, {}),
                ("IR optimisation off", True, lambda c: c.switch_ir_optim(False), {}),
                ("oneDNN cache capacity 10", True, lambda c: c.set_mkldnn_cache_capacity(10), {}),
                ("new executor off", True, lambda c: c.enable_new_executor(False), {}),
                ("executor runs ops serially (FLAGS_new_executor_serial_run)", True, None,
                 {"FLAGS_new_executor_serial_run": True}),
                ("no feed/fetch ops (switch_use_feed_fetch_ops(False))", True,
                 lambda c: c.switch_use_feed_fetch_ops(False), {})]
    if hasattr(inference.Config, "set_optimization_level"):
        variants += [(f"optimization level {n}", True, level(n), {}) for n in (0, 1, 2, 3)]
    rows, reference = [], None
    for label, mkldnn, tweak, flags in variants:
        row = {"setting": label}
        try:
            if flags:
                paddle.set_flags(flags)
            config = predictor_config(bundle, threads=1, mkldnn=mkldnn)
            if tweak:
                tweak(config)
            runner = PredictorRunner(inference.create_predictor(config))
            outputs = runner.run(images[64])[0]
            reference = outputs if reference is None else reference
            row["max_abs_diff"] = float(np.abs(outputs - reference).max())
            for batch, x in images.items():
                row[batch] = timings(lambda: runner.run(x), batch)
        except Exception as exc:  # noqa: BLE001  a switch this build refuses is a finding, not a crash
            row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:120]}"
        finally:
            if flags:
                paddle.set_flags({k: False for k in flags})
        rows.append(row)
        print(row, flush=True)
    return rows


def settings_table(name: str, rows: list[dict], dygraph_ms: float) -> str:
    lines = [f"Paddle Inference switches, {name}, 1 thread (dygraph batch 1: {dygraph_ms:.3f} ms):", "",
             "| setting | batch 1 median (ms) | batch 64 median (ms) | dygraph / this, batch 1 | max diff vs default |",
             "|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['setting']} | refused: {r['error']} | | | |")
        else:
            lines.append(f"| {r['setting']} | {r[1][0]:.3f} | {r[64][0]:.2f} | {dygraph_ms / r[1][0]:.2f}x | "
                         f"{r['max_abs_diff']:.1e} |")
    return "\n".join(lines)


def breakdown(bundle: Path, checkpoint: Path, x: np.ndarray) -> dict:
    """Where a batch-1 call spends its time (1 thread): the graph itself vs the copies around it."""
    import paddle
    import paddle.base.core as core

    from common.runtimes import create_predictor
    from export.pipeline import plan_from_checkpoint

    core.set_num_threads(1)
    model = plan_from_checkpoint(checkpoint, with_samples=False).layer
    tensor = paddle.to_tensor(x)
    out = {}
    with paddle.no_grad():
        out["dygraph: forward only"] = timings(lambda: model(tensor), 1)[0]
        out["dygraph: to_tensor + numpy"] = timings(lambda: paddle.to_tensor(x).numpy(), 1)[0]
    for mkldnn in (True, False):
        p = create_predictor(bundle, mkldnn=mkldnn, threads=1)
        handle = p.get_input_handle(p.get_input_names()[0])
        handle.reshape(list(x.shape))
        handle.copy_from_cpu(x)
        output = p.get_output_handle(p.get_output_names()[0])
        label = f"predictor, oneDNN {'on' if mkldnn else 'off'}"
        out[f"{label}: run() only"] = timings(p.run, 1)[0]
        out[f"{label}: copy in + copy out"] = timings(lambda: (handle.reshape(list(x.shape)), handle.copy_from_cpu(x),
                                                              output.copy_to_cpu()), 1)[0]
    return out


def table(rows: list[dict]) -> str:
    lines = ["| model | runtime | setting | threads | batch 1 median (ms) | batch 1 p90 | batch 64 median (ms) "
             "| batch 64 p90 | batch 1 vs dygraph (same threads) |", "|---|---|---|---|---|---|---|---|---|"]
    base = {(r["model"], r["threads"]): r[1][0] for r in rows if r["runtime"] == "dygraph"}
    for r in rows:
        speed = base[(r["model"], r["threads"])] / r[1][0]
        lines.append(f"| {r['model']} | {r['runtime']} | {r['setting']} | {r['threads']} | {r[1][0]:.3f} | "
                     f"{r[1][1]:.3f} | {r[64][0]:.2f} | {r[64][1]:.2f} | {speed:.1f}x |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    from common.bundle import read_bundle
    from export import export_checkpoint

    images = test_images(args.data_dir)
    rows, parts, switches, watch = [], {}, [], LoadWatch()
    with tempfile.TemporaryDirectory(prefix="export-latency-") as tmp:
        if args.checkpoint:
            checkpoints = [Path(c) for c in args.checkpoint]
        else:
            checkpoints = quick_checkpoints(args.data_dir, Path(tmp))
        for ckpt in checkpoints:
            bundle = export_checkpoint(ckpt, Path(tmp) / f"bundle-{len(parts)}", onnx=True, data_dir=args.data_dir)
            name = read_bundle(bundle).model_name
            rows += measure(name, bundle, ckpt, images)
            parts[name] = breakdown(bundle, ckpt, images[1])
            dygraph_ms = next(r[1][0] for r in rows if r["model"] == name and r["runtime"] == "dygraph"
                              and r["threads"] == 1)
            switches.append(settings_table(name, paddle_settings(bundle, images), dygraph_ms))
    body = "\n\n".join([table(rows), *switches, breakdown_table(parts), verdict_table(checks(rows)), watch.note()])
    command = "nice python -m bench.export_latency" + "".join(f" --checkpoint {c}" for c in args.checkpoint or [])
    publish("export_latency", "Export: dygraph vs Paddle Inference vs onnxruntime vs OpenVINO latency (CPU)", body,
            command, watch, args.allow_busy, write=not args.no_write)
    return 0


def breakdown_table(parts: dict) -> str:
    """The batch-1 call of each model split into its parts."""
    lines = ["Batch-1 call split into its parts (1 thread, median ms):", "",
             "| model | part | median (ms) |", "|---|---|---|"]
    for name, figures in parts.items():
        lines += [f"| {name} | {part} | {ms:.3f} |" for part, ms in figures.items()]
    return "\n".join(lines)


def checks(rows: list[dict]) -> list[Check]:
    """The claim the export rests on, per model and thread count: at batch 1 the predictor (oneDNN
    on) is at least as fast as the dygraph model (dygraph's median / the predictor's, target 1x)."""
    dygraph = {(r["model"], r["threads"]): r[1][0] for r in rows if r["runtime"] == "dygraph"}
    return [Check(f"{r['model']}, {r['threads']} thread(s): dygraph / predictor (oneDNN on), batch 1",
                  dygraph[r["model"], r["threads"]] / r[1][0], 1.0, fmt="{:.2f}x")
            for r in rows if r["runtime"] == "paddle.inference" and r["setting"] == "oneDNN on"]


if __name__ == "__main__":
    sys.exit(main())
