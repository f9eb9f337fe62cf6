"""The export catalogue: networks of the kinds people bring (tests/catalogue_nets.py, paddle.vision.models),
each exported with ``python -m export --layer``, all served by one ``python -m serve`` process, asked over V2
with Triton's stock tritonclient (binary tensors) on fresh inputs of sizes parity never used, and compared with
the dygraph network; and those that leave the graph, refused in one line that names the user's line and fix.

The exports run ``export.__main__.main`` in this process (the command line minus a Python start-up per
network); one refusal also runs as a real ``python -m export`` process, to see exactly what a user sees.
"""
from __future__ import annotations

import contextlib
import inspect
import io
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import paddle
import pytest
import tritonclient.http as th
from tritonclient.utils import np_to_triton_dtype

from common.bundle import Tolerance, read_bundle
from export import inputs
from export.__main__ import main as export_main
from export.parity import flat
from export.pipeline import load_layer
from export.signature import parse_input
from export.verify import main as verify_main
from tests import catalogue_nets
from tests.conftest import ROOT, run_module
from tests.test_serve import Server

ALL_PASS = {"paddle": "passed", "onnxruntime": "passed", "openvino": "passed", "paddle_tensorrt": "skipped"}
FRESH_BATCH, FRESH_DIM = 5, 7  # sizes no parity case uses (batches 1, 3, 8; dimensions 2, 5, 11 or --dim's)


@dataclass(frozen=True)
class Entry:
    """One network of the catalogue: how it is exported and what the export must conclude."""

    layer: str                          # --layer
    inputs: tuple[str, ...]             # --input, one per forward argument
    shows: str                          # what it is in the catalogue for (docs/EXPORT.md's table)
    kwargs: dict = field(default_factory=dict)
    flags: tuple[str, ...] = ()         # further flags
    zoo: bool = False                   # a paddle.vision.models network: batch-norm statistics from zoo_weights
    runtimes: dict = field(default_factory=lambda: dict(ALL_PASS))  # the status each runtime must end with
    refused: tuple[str, ...] = ()       # for a refused network: what its one error line must say
    at: str = ""                        # ... and the source text of the line it must name


NETS = "tests.catalogue_nets"
CATALOGUE = {
    "resnet18": Entry("paddle.vision.models:resnet18", ("image:float32:-1,3,32,32",), "zoo CNN (ResNet-18, 10 classes)",
                      kwargs={"num_classes": 10}, zoo=True),
    "mobilenet_v3": Entry("paddle.vision.models:mobilenet_v3_small", ("image:float32:-1,3,32,32",),
                          "zoo CNN (MobileNetV3-Small x0.5, 10 classes)", kwargs={"scale": 0.5, "num_classes": 10},
                          zoo=True),
    "branch": Entry(f"{NETS}:BranchNet", ("x:float32:-1,6",), "data-dependent if",
                    runtimes={**ALL_PASS, "onnxruntime": "unavailable", "openvino": "unavailable"}),
    "loop": Entry(f"{NETS}:LoopNet", ("x:float32:-1,4", "steps:int64:-1:0..4"), "while over a tensor-valued count",
                  runtimes={**ALL_PASS, "openvino": "unavailable"}),
    "lstm": Entry(f"{NETS}:SequenceNet", ("x:float32:-1,seq,6",), "LSTM, free sequence length, real samples too",
                  flags=("--output", "scores", "--output", "state", "--samples", "{samples}")),
    "encoder": Entry(f"{NETS}:TinyEncoder", ("ids:int64:-1,seq:0..49",), "Transformer encoder, int64 ids, two outputs",
                     flags=("--output", "sentence", "--output", "tokens", "--dim", "seq=1,6,16")),
    "mixed": Entry(f"{NETS}:MixedInputs", ("image:float32:-1,1,8,8", "scale:float64:-1,1", "category:int32:-1:0..6",
                                           "mask:bool:-1,4"), "four inputs of four dtypes, two outputs",
                   flags=("--output", "scores", "--output", "scale2")),
    "dict_heads": Entry(f"{NETS}:DictHeads", ("x:float32:-1,5",), "dict output"),
    "numpy_argmax": Entry(f"{NETS}:NumpyArgmax", ("x:float32:-1,4",), "graph break to_static maps: proven"),
    "numpy_reduction": Entry(f"{NETS}:NumpyReduction", ("x:float32:-1,4",), "NumPy on a tensor's values",
                             refused=("leaves the static graph", "use paddle.sum(x, axis=..., keepdim=...)",
                                      "has too many arguments"), at="h.numpy().sum(axis=1, keepdims=True)"),
    "list_scale": Entry(f"{NETS}:ListScale", ("x:float32:-1,4",), ".tolist() of a tensor",
                        refused=("leaves the static graph", "index the tensor itself"), at=".tolist()[0]"),
    "numpy_std": Entry(f"{NETS}:NumpyStd", ("x:float32:-1,4",), "graph break to_static maps to something else",
                       refused=("parity failed", "use paddle.std(x, unbiased=False)"), at="/ float(x.numpy().std())"),
    "python_random": Entry(f"{NETS}:PythonRandom", ("x:float32:-1,4",), "Python-side randomness",
                           refused=("is not deterministic", "draw with paddle.rand"), at="np.random.rand()"),
}
EXPORTED = [name for name, entry in CATALOGUE.items() if not entry.refused]
REFUSED = [name for name, entry in CATALOGUE.items() if entry.refused]


def build(entry: Entry, seed: int) -> paddle.nn.Layer:
    """The network with the weights a user would bring: seeded, and for zoo CNNs with measured batch-norm statistics."""
    paddle.seed(seed)
    layer = load_layer(entry.layer, None, entry.kwargs)
    return catalogue_nets.zoo_weights(layer) if entry.zoo else layer


def command(name: str, entry: Entry, weights: Path, out: Path, samples: Path) -> list[str]:
    """The ``python -m export`` arguments of one catalogue entry."""
    argv = ["--layer", entry.layer, "--weights", str(weights), "--out", str(out), "--name", name]
    if entry.kwargs:
        argv += ["--layer-kwargs", json.dumps(entry.kwargs)]
    for spec in entry.inputs:
        argv += ["--input", spec]
    return argv + [flag.replace("{samples}", str(samples)) for flag in entry.flags]


def run_export(argv: list[str]) -> tuple[int, str, str]:
    """``python -m export ARGV`` in this process: (exit status, stdout, stderr); the environment as it was
    (the command quiets Paddle's log for the processes it starts)."""
    out, err, environ = io.StringIO(), io.StringIO(), dict(os.environ)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = export_main(argv)
    finally:
        os.environ.clear()
        os.environ.update(environ)
    return status, out.getvalue(), err.getvalue()


@dataclass
class Exported:
    name: str
    entry: Entry
    weights: Path
    bundle: Path
    status: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def manifest(self) -> dict:
        return read_bundle(self.bundle, verify=False).manifest

    def layer(self) -> paddle.nn.Layer:
        return load_layer(self.entry.layer, str(self.weights), self.entry.kwargs)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """Weights of every network, and the LSTM's real samples (sequences of 4 steps)."""
    root = tmp_path_factory.mktemp("catalogue")
    (root / "weights").mkdir()
    for seed, (name, entry) in enumerate(CATALOGUE.items()):
        paddle.save(build(entry, seed).state_dict(), str(root / "weights" / f"{name}.pdparams"))
    np.savez(root / "lstm_samples.npz", x=np.random.default_rng(9).standard_normal((6, 4, 6)).astype(np.float32))
    return root


@pytest.fixture(scope="module")
def catalogue(workdir) -> dict[str, Exported]:
    """Every network the catalogue exports, exported once, into one folder of bundles.

    In a process of their own, one after the other, as a user's session would run them: the test
    run's own process has built hundreds of other layers by then, whose names Paddle's conversion
    has once been seen to trip over (a KeyError on a deep-copied parameter's name).
    """
    results = workdir / "exports.json"
    subprocess.run([sys.executable, "-m", "tests.test_export_catalogue", str(workdir), str(results)], cwd=ROOT,
                   check=True, timeout=900)
    done = {}
    for name, (status, stdout, stderr, seconds) in json.loads(results.read_text()).items():
        done[name] = Exported(name, CATALOGUE[name], workdir / "weights" / f"{name}.pdparams",
                              workdir / "models" / name, status, stdout, stderr, seconds)
        print(f"{name}: exported in {seconds:.1f} s")
    return done


def export_all(workdir: Path, results: Path) -> None:
    """``python -m tests.test_export_catalogue WORKDIR RESULTS``: export every catalogue entry, record how each went."""
    done = {}
    for name in EXPORTED:
        entry, weights = CATALOGUE[name], workdir / "weights" / f"{name}.pdparams"
        started = time.perf_counter()
        status, stdout, stderr = run_export(command(name, entry, weights, workdir / "models" / name,
                                                    workdir / "lstm_samples.npz"))
        done[name] = (status, stdout, stderr, time.perf_counter() - started)
    results.write_text(json.dumps(done))


@pytest.fixture(scope="module")
def server(catalogue, workdir):
    """One production server (one worker) for every bundle of the catalogue, --backend auto."""
    server = Server([sys.executable, "-m", "serve", "--models", str(workdir / "models"), "--port", "{port}",
                     "--workers", "1", "--warmup-batches", "1"], workdir / "server.log")
    try:
        server.wait("/v2/health/ready", timeout=300)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def client(server):
    c = th.InferenceServerClient(server.url.removeprefix("http://"))
    yield c
    c.close()


def fresh_inputs(entry: Entry, family: str, seed: int) -> dict[str, np.ndarray]:
    """Inputs of sizes parity never used (batch 5, every dynamic dimension 7), values of ``family``."""
    rng, feeds = np.random.default_rng(seed), [parse_input(text)[0] for text in entry.inputs]
    sizes = {d: FRESH_DIM for d in inputs.dim_names(feeds)}
    return {f.name: inputs.generate(rng, f, inputs.shape_of(f, FRESH_BATCH, sizes), family) for f in feeds}


def dygraph(layer, x: dict[str, np.ndarray]) -> list[np.ndarray]:
    with paddle.no_grad():
        return [t.numpy() for t in flat(layer(*[paddle.to_tensor(a) for a in x.values()]))]


# ---- what the exports conclude ---------------------------------------------------------------------


@pytest.mark.parametrize("name", EXPORTED)
def test_exports_with_each_runtimes_status_and_figures(catalogue, name):
    done = catalogue[name]
    assert done.status == 0, done.stderr
    manifest = done.manifest
    results = manifest["parity"]["runtimes"]
    assert {runtime: r["status"] for runtime, r in results.items()} == done.entry.runtimes, \
        {runtime: r.get("reason") for runtime, r in results.items()}
    tolerance = Tolerance(**manifest["tolerance"])
    for runtime, result in results.items():
        if result["status"] == "passed":  # every case, every output within the scaled tolerance
            figures = [o for s in result["settings"] for c in s["cases"] for o in c["outputs"].values()]
            within = [f["passed"] and (f["max_rel_diff"] <= tolerance.rtol or f["max_abs_diff"] <= tolerance.atol)
                      for f in figures]
            assert figures and all(within), result
        else:
            assert result["reason"], result
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    left_out = [r for r, status in done.entry.runtimes.items() if status in ("failed", "unavailable")]
    assert bool(warnings) == bool(left_out) and all(any(r in w for w in warnings) for r in left_out), done.stderr
    assert "Traceback" not in done.stderr
    assert manifest["report"][0].startswith(f"[export] custom/{name} -> ") and "\n".join(manifest["report"]) in done.stdout
    assert manifest["to_static"]["mode"] == "AST (full_graph=True)"
    print(f"{name} ({done.seconds:.1f} s):\n" + "\n".join(manifest["report"][2:]))


def test_zoo_cnns_pass_with_onednn_within_the_scaled_tolerance(catalogue):
    """The deep CNNs differ from dygraph with oneDNN (its fused kernels round differently), by far less than
    the scaled tolerance; plain kernels agree bit for bit."""
    for name in ("resnet18", "mobilenet_v3"):
        settings = {s["label"]: s for s in catalogue[name].manifest["parity"]["runtimes"]["paddle"]["settings"]}
        on = [o["max_rel_diff"] for c in settings["oneDNN on"]["cases"] for o in c["outputs"].values()]
        off = [o["max_abs_diff"] for c in settings["oneDNN off"]["cases"] for o in c["outputs"].values()]
        assert 0 < max(on) <= 1e-4 and max(off) == 0, (name, on, off)


def test_parity_inputs_exercise_batches_dimensions_and_branches(catalogue):
    lstm = catalogue["lstm"].manifest["parity"]
    assert [c["label"] for c in lstm["cases"]] == [
        "samples, batch 1", "samples, batch 6", "batch 1, seq 5", "batch 3, seq 5", "batch 8, seq 5",
        "batch 3, seq 2", "batch 3, seq 11"]
    assert lstm["origin"].startswith(f"samples from {catalogue['lstm'].bundle.parent.parent / 'lstm_samples.npz'}, 6 rows")
    encoder = catalogue["encoder"].manifest
    assert [c["dims"]["seq"] for c in encoder["parity"]["cases"]] == [6, 6, 6, 1, 16] and encoder["dim_sizes"] == {
        "seq": [1, 6, 16]}
    assert encoder["signature"]["outputs"] == ["sentence:float32:-1,2", "tokens:float32:-1,-1,50"]
    branch, loop = catalogue["branch"].manifest["parity"], catalogue["loop"].manifest["parity"]
    assert branch["control_flow"] == {"if": 1, "while": 0} and branch["paths"] == 2  # both sides of the if
    assert loop["control_flow"] == {"if": 0, "while": 1} and loop["paths"] >= 2  # zero rounds and some
    assert catalogue["resnet18"].manifest["parity"]["paths"] is None  # all Paddle's code: nothing to trace
    samples = read_bundle(catalogue["encoder"].bundle).samples()
    assert samples[0].dtype == np.int64 and 0 <= samples[0].min() and samples[0].max() <= 49


def test_graph_break_that_converts_is_proven_and_noted(catalogue):
    manifest = catalogue["numpy_argmax"].manifest
    line = source_line("NumpyArgmax", "k = int(x.numpy().argmax())")
    (note,) = [n for n in manifest["notes"] if n.startswith(f"tests/catalogue_nets.py:{line} ")]
    assert "to_static turned it into graph operations here" in note and "paddle.argmax" in note


def test_dict_outputs_are_named_by_their_keys(catalogue):
    manifest = catalogue["dict_heads"].manifest
    assert manifest["signature"]["outputs"] == ["embedding:float32:-1,8", "logits:float32:-1,4",
                                                "probabilities:float32:-1,4"]


# ---- served over V2 --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXPORTED)
def test_served_over_v2_like_the_dygraph_network_on_fresh_sizes(catalogue, client, name):
    done = catalogue[name]
    bundle, layer = read_bundle(done.bundle), done.layer()
    names = [o["name"] for o in bundle.outputs]
    assert client.is_model_ready(name)
    for seed, family in enumerate(inputs.FAMILIES):  # low and high values: both sides of a branch
        x = fresh_inputs(done.entry, family, seed + 100)
        tensors = []
        for key, array in x.items():
            tensors.append(th.InferInput(key, list(array.shape), np_to_triton_dtype(array.dtype)))
            tensors[-1].set_data_from_numpy(array, binary_data=True)
        result = client.infer(name, tensors, outputs=[th.InferRequestedOutput(n, binary_data=True) for n in names])
        for output, expected in zip(names, dygraph(layer, x), strict=True):
            figures = bundle.tolerance.compare(expected, result.as_numpy(output))
            assert figures["passed"], (name, family, output, figures)


def test_auto_only_considers_runtimes_that_passed_at_export(server, catalogue):
    for name in EXPORTED:
        table = server.get(f"/v2/models/{name}/stats").json()
        rows = {row["backend"]: row for row in table["backends"]}
        chosen = [row["backend"] for row in table["backends"] if row["chosen"]]
        assert len(chosen) == 1 and rows[chosen[0]]["passed"]
        for runtime, status in CATALOGUE[name].runtimes.items():
            platform = {"paddle": "paddle_inference"}.get(runtime, runtime)
            if status == "unavailable" and runtime != "paddle_tensorrt":
                assert rows[platform]["passed"] is None and not rows[platform]["chosen"], rows[platform]
    loop = {row["backend"]: row for row in server.get("/v2/models/loop/stats").json()["backends"]}
    assert loop["openvino"]["reason"].startswith("unavailable at export: could not load the graph") \
        and "Loop" in loop["openvino"]["reason"]


def test_v2_json_with_the_layers_names_dtypes_and_errors(server, catalogue):
    """Four dtypes over plain JSON: the layer's own tensor names, datatypes and shapes; one output asked for by
    name; a float where INT32 is declared refused in V2's error shape; no friendly API without PreProcess."""
    done = catalogue["mixed"]
    meta = server.get("/v2/models/mixed").json()
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [
        ("image", "FP32", [-1, 1, 8, 8]), ("scale", "FP64", [-1, 1]), ("category", "INT32", [-1]),
        ("mask", "BOOL", [-1, 4])]
    assert [(o["name"], o["datatype"], o["shape"]) for o in meta["outputs"]] == [("scores", "FP32", [-1, 3]),
                                                                                 ("scale2", "FP64", [-1, 1])]
    x = fresh_inputs(done.entry, "centred", 7)
    body = {"inputs": [{"name": k, "shape": list(v.shape), "datatype": np_to_triton_dtype(v.dtype),
                        "data": v.ravel().tolist()} for k, v in x.items()], "outputs": [{"name": "scores"}]}
    r = server.post("/v2/models/mixed/infer", json=body)
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    expected = dygraph(done.layer(), x)[0]
    assert out["name"] == "scores" and read_bundle(done.bundle).tolerance.compare(
        expected, np.asarray(out["data"], np.float32).reshape(out["shape"]))["passed"]
    body["inputs"][2]["data"] = [0.5] * FRESH_BATCH
    bad = server.post("/v2/models/mixed/infer", json=body)
    assert bad.status_code == 400 and "category" in bad.json()["error"]
    assert server.post("/predict/house?model=mixed", json=[0] * 13).status_code == 404


# ---- refused, with the user's line and the fix -------------------------------------------------------------


def source_line(cls: str, text: str) -> int:
    """The line of tests/catalogue_nets.py in class ``cls`` that holds ``text``."""
    lines, first = inspect.getsourcelines(getattr(catalogue_nets, cls))
    return first + next(i for i, line in enumerate(lines) if text in line)


@pytest.mark.parametrize("name", REFUSED)
def test_refused_in_one_line_naming_the_line_and_the_paddle_api(workdir, name):
    entry = CATALOGUE[name]
    out = workdir / "refused" / name
    status, stdout, stderr = run_export(command(name, entry, workdir / "weights" / f"{name}.pdparams", out, Path()))
    lines = stderr.strip().splitlines()
    assert status == 2 and len(lines) == 1 and lines[0].startswith("error: "), stderr
    line = source_line(entry.layer.split(":")[1], entry.at)
    assert re.search(rf"tests/catalogue_nets\.py:{line}\b", lines[0]), (line, lines[0])
    assert all(text in lines[0] for text in entry.refused), lines[0]
    assert stdout == "" and not out.parent.exists()  # no bundle, no temporary folder, no parent folder it made
    print(lines[0])


def test_refusal_from_the_shell_is_one_line_and_verbose_adds_the_traceback(workdir):
    entry = CATALOGUE["numpy_reduction"]
    argv = command("numpy_reduction", entry, workdir / "weights" / "numpy_reduction.pdparams",
                   workdir / "shell" / "x", Path())
    proc = run_module("export", *argv, check=False, timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [next(iter(proc.stderr.strip().splitlines()))], proc.stderr
    assert proc.stderr.startswith("error: tests/catalogue_nets.py:")
    verbose = run_module("export", *argv, "--verbose", check=False, timeout=300)
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr
    assert verbose.stderr.strip().splitlines()[-1] == proc.stderr.strip()


def test_require_makes_a_missing_runtime_fatal(catalogue, workdir):
    entry = CATALOGUE["loop"]
    out = workdir / "required" / "loop"
    status, _, stderr = run_export(command("loop", entry, catalogue["loop"].weights, out, Path()) +
                                   ["--require", "openvino"])
    assert status == 2 and stderr.strip().startswith("error: --require openvino: openvino unavailable: "), stderr
    assert not out.exists()


def test_verify_reruns_the_report_on_an_existing_bundle(catalogue):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert verify_main([str(catalogue["loop"].bundle)]) == 0
    report = out.getvalue()
    assert report.startswith("[verify] custom/loop -> ")
    assert re.search(r"\n  paddle +oneDNN on +passed", report) and re.search(r"\n  openvino +- +unavailable", report)


# ---- docs/EXPORT.md's table ----------------------------------------------------------------------------------


def test_docs_table_states_what_the_catalogue_found(catalogue):
    section = (ROOT / "docs" / "EXPORT.md").read_text().split("\n## What exports\n", 1)[1].split("\n## ", 1)[0]
    rows = {m.group(1): [c.strip() for c in m.group(2).split("|")]
            for m in re.finditer(r"^\| `(\w+)` \|(.*)\|$", section, re.M)}
    assert set(rows) == set(CATALOGUE), set(rows) ^ set(CATALOGUE)
    for name in EXPORTED:
        statuses = [cell.split()[0] for cell in rows[name][1:4]]
        expected = catalogue[name].manifest["parity"]["runtimes"]
        assert statuses == [expected[r]["status"] for r in ("paddle", "onnxruntime", "openvino")], (name, rows[name])
    for name in REFUSED:
        assert rows[name][1].startswith("refused"), rows[name]


if __name__ == "__main__":
    export_all(Path(sys.argv[1]), Path(sys.argv[2]))
