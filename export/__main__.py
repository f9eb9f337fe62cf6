"""``python -m export``: a training checkpoint, or any ``paddle.nn.Layer``, to a bundle.

Flags -> ``export_checkpoint`` / ``export_layer`` -> a short summary (after a ``warning:`` line for
anything left out, e.g. an ONNX file paddle2onnx could not write); or one ``error:`` line and exit 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

from export import ExportError, ExportWarning


def batch_arg(text: str) -> int | None:
    """``dynamic`` -> None, a positive integer -> itself."""
    if text == "dynamic":
        return None
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected 'dynamic' or a positive integer, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export", description=(
        "Export a training checkpoint (python -m train), or any paddle.nn.Layer, to a static inference "
        "bundle for Paddle Inference: model files, inference.yml and a manifest. The export fails unless "
        "the saved graph gives the dygraph model's outputs (real test samples for a checkpoint, generated "
        "inputs for a layer)."))
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a .pdckpt file written by python -m train, its run folder (takes "
                        "checkpoints/best.pdckpt) or checkpoints/latest; task and model come from its own config")
    source.add_argument("--layer", metavar="MODULE:CLASS", help="your own paddle.nn.Layer, e.g. mypkg.nets:MyNet "
                        "(constructed with --layer-kwargs, weights from --weights); needs --input")
    p.add_argument("--out", required=True, help="bundle folder to create")
    p.add_argument("--format", dest="fmt", choices=("json", "pdmodel"), default="json",
                   help="json: Paddle 3's PIR program (default); pdmodel: the legacy program for older "
                   "Paddle Inference, Paddle2ONNX and FastDeploy 1.x")
    p.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=True, help="also write inference.onnx "
                   "with paddle2onnx, checked against the predictor with onnxruntime and OpenVINO (default: on; a "
                   "model paddle2onnx cannot convert is exported Paddle-only, with a warning)")
    p.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    g = p.add_argument_group("checkpoint export")
    g.add_argument("--batch", type=batch_arg, default=None, metavar="dynamic|N",
                   help="input batch size of the graph: dynamic (default, any size) or a fixed N")
    g.add_argument("--data-dir", help="folder with the test data for the parity check (default: the "
                   "checkpoint's data_dir, then ~/.cache/paddle/dataset)")
    g = p.add_argument_group("layer export")
    g.add_argument("--weights", help="a .pdparams state dict for --layer (paddle.save(layer.state_dict(), ...))")
    g.add_argument("--layer-kwargs", type=json.loads, default=None, metavar="JSON",
                   help="keyword arguments for the layer's constructor, as a JSON object")
    g.add_argument("--input", action="append", default=[], metavar="NAME:DTYPE:SHAPE",
                   help="one per forward argument, in order, e.g. image:float32:-1,3,32,32 (-1: any size; the "
                   "first dimension is the batch)")
    g.add_argument("--output", action="append", default=[], metavar="NAME",
                   help="names of what forward returns, in order (default output_0, output_1, ...)")
    g.add_argument("--name", help="model name in inference.yml (default: the class name)")
    g.add_argument("--atol", type=float, default=1e-5, help="parity: absolute tolerance (default: %(default)s)")
    g.add_argument("--rtol", type=float, default=1e-5, help="parity: relative tolerance (default: %(default)s)")
    return p


def summary(bundle_dir) -> str:
    """A few lines: the files and the parity figures from the manifest."""
    from common.bundle import read_bundle

    m = read_bundle(bundle_dir, verify=False).manifest
    lines = [f"[export] {m['task']}/{m['model_name']} -> {bundle_dir} ({m['graph_format']}, batch {m['batch']}, "
             f"{m['export_seconds']} s)", "  files: " + ", ".join([*m["files"], "manifest.json"])]
    for name, parity in (("paddle.inference vs dygraph", m["parity"]),
                         ("onnxruntime vs paddle.inference", m["parity"].get("onnx")),
                         ("openvino vs paddle.inference", m["parity"].get("openvino"))):
        if parity and parity.get("skipped"):
            lines.append(f"  parity {name}: skipped, {parity['skipped']}")
        elif parity:
            figures = "; ".join(f"batch {s['batch']} oneDNN {'on' if s['onednn'] else 'off'}: "
                                f"max diff {s['max_abs_diff']:.2g}" for s in parity["settings"])
            lines.append(f"  parity {name}, {parity['samples']} samples: {figures} (passed; {parity['tolerance']})")
    if m["parity"].get("dygraph_metrics"):
        lines.append("  on those samples: " + ", ".join(f"{k} {v:.4g}" for k, v in m["parity"]["dygraph_metrics"].items()))
    lines += [f"  note: {note}" for note in m.get("notes", [])]
    return "\n".join(lines)


def import_paddle() -> None:
    """Import paddle without its import-time "No ccache found" warning (it concerns C++ extensions only).

    A filter cannot do it: importing paddle installs ``simplefilter("always")`` in front of the
    user's filters. So the import runs with warnings recorded, and all but that one are shown again.
    """
    with warnings.catch_warnings(record=True) as caught:
        import paddle  # noqa: F401
    for w in caught:
        if "No ccache found" not in str(w.message):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def run(args) -> str:
    """Do the export the flags ask for; returns the bundle folder."""
    from . import pipeline

    if args.checkpoint:
        if args.input or args.weights or args.output:
            raise ExportError("--input, --output and --weights are for --layer exports; a checkpoint knows its own")
        return pipeline.export_checkpoint(args.checkpoint, args.out, fmt=args.fmt, batch=args.batch, onnx=args.onnx,
                                          force=args.force, data_dir=args.data_dir)
    if not args.input:
        raise ExportError("--layer needs one --input NAME:DTYPE:SHAPE per forward argument")
    if not args.weights:
        raise ExportError("--layer needs --weights (a .pdparams file); an untrained layer is rarely what you want")
    from common.tasks import Tolerance

    recipe = {"layer": args.layer, "weights": args.weights, "kwargs": args.layer_kwargs or {}}
    layer = pipeline.load_layer(args.layer, args.weights, args.layer_kwargs)
    return pipeline.export_layer(layer, [pipeline.parse_input(t) for t in args.input], args.out,
                                 output_names=args.output or None, name=args.name, fmt=args.fmt, onnx=args.onnx,
                                 force=args.force, recipe=recipe, tolerance=Tolerance(atol=args.atol, rtol=args.rtol))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import_paddle()  # after parsing: -h and flag errors need no paddle
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ExportWarning)
            bundle_dir = run(args)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    for w in caught:  # ours as one line each; anything else as Python shows it
        if issubclass(w.category, ExportWarning):
            print(f"warning: {w.message}", file=sys.stderr, flush=True)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    print(summary(bundle_dir), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
