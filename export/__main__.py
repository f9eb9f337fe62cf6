"""``python -m export``: a training checkpoint, or any ``paddle.nn.Layer``, to a bundle.

Flags -> ``export_checkpoint`` / ``export_layer`` -> the export report (after a ``warning:`` line
for each runtime or branch left unproven); or one ``error:`` line and exit 2 (``--verbose`` adds
Paddle's traceback and log lines).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
import warnings

from common.runtimes import RUNTIMES
from export import LAYER_TOLERANCE, ExportError, ExportWarning


def batch_arg(text: str) -> int | None:
    """``dynamic`` -> None, a positive integer -> itself."""
    if text == "dynamic":
        return None
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected 'dynamic' or a positive integer, got {text!r}")


def dim_arg(text: str) -> tuple[str, tuple[int, ...]]:
    """``seq=1,7,16`` -> ("seq", (1, 7, 16))."""
    name, _, sizes = text.partition("=")
    try:
        values = tuple(int(v) for v in sizes.split(","))
    except ValueError:
        values = ()
    if not name or not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected NAME=SIZES, e.g. seq=1,7,16, got {text!r}")
    return name, values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m export", description=(
        "Export a training checkpoint (python -m train), or any paddle.nn.Layer, to a static inference "
        "bundle for Paddle Inference: model files, inference.yml and a manifest. The export fails unless "
        "Paddle Inference, running the saved graph, gives the dygraph model's outputs (real test samples for "
        "a checkpoint; generated inputs of several shapes, and your samples, for a layer); onnxruntime and "
        "OpenVINO are checked the same way and recorded as passed, failed or unavailable (docs/EXPORT.md)."))
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="a .pdckpt file written by python -m train, its run folder (takes "
                        "checkpoints/best.pdckpt) or checkpoints/latest; task and model come from its own config")
    source.add_argument("--layer", metavar="MODULE:CLASS", help="your own paddle.nn.Layer, e.g. mypkg.nets:MyNet, "
                        "or a function returning one, e.g. paddle.vision.models:resnet18 (called with "
                        "--layer-kwargs, weights from --weights); needs --input")
    p.add_argument("--out", required=True, help="bundle folder to create")
    p.add_argument("--format", dest="fmt", choices=("json", "pdmodel"), default="json",
                   help="json: Paddle 3's PIR program (default); pdmodel: the legacy program for older "
                   "Paddle Inference, Paddle2ONNX and FastDeploy 1.x")
    p.add_argument("--onnx", action=argparse.BooleanOptionalAction, default=True, help="also write inference.onnx "
                   "with paddle2onnx, for onnxruntime and OpenVINO (default: on; a model paddle2onnx cannot convert "
                   "is exported for Paddle Inference only, with a warning)")
    p.add_argument("--require", action="append", default=[], choices=tuple(RUNTIMES), metavar="RUNTIME",
                   help=f"fail the export unless this runtime passes parity too ({', '.join(RUNTIMES)}; "
                   "repeatable); without it, a runtime that cannot load the graph or disagrees is only recorded")
    p.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    p.add_argument("--verbose", action="store_true", help="on failure, Paddle's traceback; and Paddle's own log lines")
    g = p.add_argument_group("checkpoint export")
    g.add_argument("--batch", type=batch_arg, default=None, metavar="dynamic|N",
                   help="input batch size of the graph: dynamic (default, any size) or a fixed N")
    g.add_argument("--data-dir", help="folder with the test data for the parity check (default: the "
                   "checkpoint's data_dir, then ~/.cache/paddle/dataset)")
    g = p.add_argument_group("layer export")
    g.add_argument("--weights", help="a .pdparams state dict for --layer (paddle.save(layer.state_dict(), ...))")
    g.add_argument("--layer-kwargs", type=json.loads, default=None, metavar="JSON",
                   help="keyword arguments for the layer's constructor, as a JSON object")
    g.add_argument("--input", action="append", default=[], metavar="NAME:DTYPE:SHAPE[:LOW..HIGH]",
                   help="one per forward argument, in order, e.g. image:float32:-1,3,32,32 or "
                   "ids:int64:-1,seq:0..49. SHAPE: the batch first (-1: any size); then sizes, -1 (any size) or "
                   "names (any size, equal for every dimension of that name); LOW..HIGH: the values generated "
                   "for parity (integers inclusive, e.g. the rows of an embedding)")
    g.add_argument("--dim", action="append", default=[], type=dim_arg, metavar="NAME=SIZES",
                   help="sizes the generated parity inputs give the dynamic dimension NAME (default 2,5,11), "
                   "e.g. seq=1,7,16")
    g.add_argument("--samples", metavar="FILE.npz", help="real inputs for the parity check as well: one array per "
                   "input name, rows first (np.savez(FILE, image=..., ids=...))")
    g.add_argument("--output", action="append", default=[], metavar="NAME",
                   help="names of what forward returns, in order (default: a dict's keys, else output_0, ...)")
    g.add_argument("--name", help="model name in inference.yml (default: the class name)")
    g.add_argument("--atol", type=float, default=LAYER_TOLERANCE.atol,
                   help="parity: the absolute floor (default: %(default)g)")
    g.add_argument("--rtol", type=float, default=LAYER_TOLERANCE.rtol, help="parity: tolerance relative to the "
                   "largest value of each output, |difference| <= atol + rtol x max|reference| (default: %(default)g)")
    return p


def import_paddle(verbose: bool = False) -> None:
    """Import paddle quietly: without its import-time "No ccache found" warning (it concerns C++ extensions
    only) and, unless ``verbose``, without its C++ log lines (glog's W.../I... on stderr, read at import).

    A filter cannot drop the warning: importing paddle installs ``simplefilter("always")`` in front of
    the user's filters. So the import runs with warnings recorded, and all but that one are shown again.
    """
    if not verbose:
        os.environ.setdefault("GLOG_minloglevel", "2")  # also quiets the paddle2onnx and legacy-format children
    with warnings.catch_warnings(record=True) as caught:
        import paddle  # noqa: F401
    for w in caught:
        if "No ccache found" not in str(w.message):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def run(args) -> str:
    """Do the export the flags ask for; returns the bundle folder."""
    from . import pipeline

    require = tuple(dict.fromkeys(args.require))
    if args.checkpoint:
        if args.input or args.weights or args.output or args.samples or args.dim:
            raise ExportError("--input, --output, --weights, --samples and --dim are for --layer exports; "
                              "a checkpoint knows its own")
        return pipeline.export_checkpoint(args.checkpoint, args.out, fmt=args.fmt, batch=args.batch, onnx=args.onnx,
                                          force=args.force, data_dir=args.data_dir, require=require)
    if not args.input:
        raise ExportError("--layer needs one --input NAME:DTYPE:SHAPE per forward argument")
    if not args.weights:
        raise ExportError("--layer needs --weights (a .pdparams file); an untrained layer is rarely what you want")
    from common.bundle import Tolerance

    recipe = {"layer": args.layer, "weights": args.weights, "kwargs": args.layer_kwargs or {}}
    layer = pipeline.load_layer(args.layer, args.weights, args.layer_kwargs)
    return pipeline.export_layer(layer, args.input, args.out, output_names=args.output or None, name=args.name,
                                 samples=args.samples, tolerance=Tolerance(atol=args.atol, rtol=args.rtol),
                                 dim_sizes=dict(args.dim), fmt=args.fmt, onnx=args.onnx, force=args.force,
                                 recipe=recipe, require=require)


def report(bundle_dir) -> str:
    """The export report the manifest holds."""
    from common.bundle import read_bundle

    return "\n".join(read_bundle(bundle_dir, verify=False).manifest["report"])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import_paddle(args.verbose)  # after parsing: -h and flag errors need no paddle
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ExportWarning)
            bundle_dir = run(args)
    except ExportError as exc:
        if args.verbose and exc.__cause__ is not None:
            traceback.print_exception(exc.__cause__, file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    for w in caught:  # ours as one line each; anything else as Python shows it
        if issubclass(w.category, ExportWarning):
            print(f"warning: {w.message}", file=sys.stderr, flush=True)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    print(report(bundle_dir), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
