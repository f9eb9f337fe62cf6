"""``python -m export``: flags -> export_checkpoint -> a short summary, or one ``error:`` line and exit 2."""
from __future__ import annotations

import argparse
import sys

from .errors import ExportError
from .quiet import import_paddle


def batch_arg(text: str) -> int | None:
    """``dynamic`` -> None, a positive integer -> itself."""
    if text == "dynamic":
        return None
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected 'dynamic' or a positive integer, got {text!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export", description=(
        "Export a training checkpoint (python -m train) to a static inference bundle for Paddle "
        "Inference: model files, inference.yml and a manifest; the export fails unless the saved "
        "graph gives the dygraph model's outputs on real test samples."))
    p.add_argument("--checkpoint", required=True, help="a .pdckpt file written by python -m train "
                   "(task and model come from its own config)")
    p.add_argument("--out", required=True, help="bundle folder to create")
    p.add_argument("--format", dest="fmt", choices=("json", "pdmodel"), default="json",
                   help="json: Paddle 3's PIR program (default); pdmodel: the legacy program for older "
                   "Paddle Inference, Paddle2ONNX and FastDeploy 1.x")
    p.add_argument("--batch", type=batch_arg, default=None, metavar="dynamic|N",
                   help="input batch size of the graph: dynamic (default, any size) or a fixed N")
    p.add_argument("--onnx", action="store_true", help="also write inference.onnx with paddle2onnx, "
                   "checked against the predictor with onnxruntime")
    p.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    p.add_argument("--data-dir", help="folder with the test data for the parity check (default: the "
                   "checkpoint's data_dir, then ~/.cache/paddle/dataset)")
    return p


def summary(bundle_dir) -> str:
    """A few lines: the files and the parity figures from the manifest."""
    from common.bundle import read_bundle

    m = read_bundle(bundle_dir, verify=False).manifest
    lines = [f"[export] {m['task']}/{m['model_name']} -> {bundle_dir} ({m['graph_format']}, batch {m['batch']}, "
             f"{m['export_seconds']} s)", "  files: " + ", ".join([*m["files"], "manifest.json"])]
    for name, parity in (("paddle.inference vs dygraph", m["parity"]),
                         ("onnxruntime vs paddle.inference", m["parity"].get("onnx"))):
        if parity:
            figures = "; ".join(f"batch {s['batch']} oneDNN {'on' if s['onednn'] else 'off'}: "
                                f"max diff {s['max_abs_diff']:.2g}" for s in parity["settings"])
            lines.append(f"  parity {name}, {parity['samples']} samples: {figures} (passed; {parity['tolerance']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import_paddle()  # after parsing: -h and flag errors need no paddle; then without its ccache warning
    from .pipeline import export_checkpoint

    try:
        bundle_dir = export_checkpoint(args.checkpoint, args.out, fmt=args.fmt, batch=args.batch, onnx=args.onnx,
                                       force=args.force, data_dir=args.data_dir)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    print(summary(bundle_dir), flush=True)
    return 0
