"""Backends: OpenVINO, ``--backend auto`` and its table, and what export writes for them.

Servers run as in tests/test_serve.py (real processes on loopback); their answers are compared with a
Paddle Inference predictor built here from the same bundle, under the bundle's own parity tolerance.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from common.bundle import DTYPES, read_bundle, sha256_file
from common.runtimes import RUNTIMES, PredictorRunner, create_predictor
from tests.conftest import ROOT
from tests.test_serve import HOUSE, Server

# ---- bundles --------------------------------------------------------------------------------


def renew_checksums(bundle: Path, *names: str) -> None:
    """Rewrite manifest.json's sha256 of ``names`` (or drop the entry of a file that is gone)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name in names:
        if (bundle / name).is_file():
            manifest["files"][name] = sha256_file(bundle / name)
        else:
            manifest["files"].pop(name, None)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def scale_largest_weight(onnx_file: Path, factor: float = 1.5) -> None:
    """Make an ONNX file wrong but loadable: its largest weight times ``factor`` (a layer's weights, not
    the last bias, which softmax would cancel)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_file))
    # paddle2onnx writes weights as Constant nodes; other converters as initializers
    tensors = [*model.graph.initializer,
               *(a.t for node in model.graph.node if node.op_type == "Constant" for a in node.attribute if a.name == "value")]
    weight = max((t for t in tensors if t.data_type == onnx.TensorProto.FLOAT), key=lambda t: int(np.prod(t.dims)))
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(factor), weight.name))
    onnx.save(model, str(onnx_file))


def make_old_style(bundle: Path) -> None:
    """A bundle as exported before this change: no inference.onnx, no samples.npz, no recorded tolerance."""
    for name in ("inference.onnx", "samples.npz"):
        (bundle / name).unlink()
    renew_checksums(bundle, "inference.onnx", "samples.npz")
    manifest = json.loads((bundle / "manifest.json").read_text())
    del manifest["tolerance"]
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture(scope="module")
def models(mnist_bundle, housing_bundle, tmp_path_factory) -> Path:
    """mnist and housing as exported (ONNX and samples by default), mnist with a wrong inference.onnx,
    and housing as an old-style bundle."""
    root = tmp_path_factory.mktemp("backend-models")
    shutil.copytree(mnist_bundle, root / "mnist")
    shutil.copytree(housing_bundle, root / "housing")
    shutil.copytree(mnist_bundle, root / "mnist_wrong_onnx")
    scale_largest_weight(root / "mnist_wrong_onnx" / "inference.onnx")
    renew_checksums(root / "mnist_wrong_onnx", "inference.onnx")
    shutil.copytree(housing_bundle, root / "housing_old")
    make_old_style(root / "housing_old")
    return root


@pytest.fixture(scope="module")
def auto(models, tmp_path_factory):
    """The production server with no --backend: auto is the default. One worker: each worker times the
    backends itself, so two would answer the stats table with their own figures."""
    server = Server.ready([sys.executable, "-m", "serve", "--models", str(models), "--port", "{port}", "--workers", "1"],
                          tmp_path_factory.mktemp("auto") / "server.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def openvino(models, tmp_path_factory):
    server = Server.ready([sys.executable, "-m", "serve", "--models", str(models), "--port", "{port}", "--workers", "1",
                           "--request-threads", "2", "--backend", "openvino"],
                          tmp_path_factory.mktemp("openvino") / "server.log")
    yield server
    server.stop()


# ---- what Paddle Inference answers --------------------------------------------------------------


def v2_outputs(server: Server, model: str, bundle: Path, arrays: list[np.ndarray]) -> list[np.ndarray]:
    """The V2 answer to ``arrays`` (one per declared input), as arrays."""
    declared = read_bundle(bundle, verify=False).inputs
    body = {"inputs": [{"name": t["name"], "datatype": DTYPES[t["dtype"]], "shape": list(a.shape),
                        "data": a.ravel().tolist()} for t, a in zip(declared, arrays)]}
    r = server.post(f"/v2/models/{model}/infer", json=body)
    assert r.status_code == 200, r.text
    return [np.asarray(o["data"], np.float32).reshape(o["shape"]) for o in r.json()["outputs"]]


def assert_paddle_answers(server: Server, model: str, bundle: Path) -> None:
    """``server`` answers the bundle's samples as a Paddle Inference predictor does, within the export's tolerance."""
    b = read_bundle(bundle)
    samples = b.samples()
    expected = PredictorRunner(create_predictor(bundle)).run(samples)
    for want, got in zip(expected, v2_outputs(server, model, bundle, samples), strict=True):
        figures = b.tolerance.compare(want, got)
        assert figures["passed"], (model, figures)


def house_price(bundle: Path) -> float:
    """Paddle Inference's price for HOUSE, normalised with the bundle's own statistics."""
    pre = read_bundle(bundle).info["PreProcess"]
    x = ((np.asarray(HOUSE) - pre["mean"]) / pre["std"]).astype(np.float32)[None]
    return float(PredictorRunner(create_predictor(bundle)).run(x)[0][0, 0])


def stats(server: Server, model: str, version: str | None = None) -> dict:
    r = server.get(f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/stats")
    assert r.status_code == 200, r.text
    return r.json()


def rows_by_backend(table: dict) -> dict[str, dict]:
    return {row["backend"]: row for row in table["backends"]}


# ---- OpenVINO --------------------------------------------------------------------------------


def test_openvino_serves_paddle_answers(openvino, models):
    for model in ("mnist", "housing"):
        assert openvino.get(f"/v2/models/{model}").json()["platform"] == "openvino"
        assert_paddle_answers(openvino, model, models / model)
    price = openvino.post("/predict/house", json=HOUSE).json()["price"]
    assert price == pytest.approx(house_price(models / "housing"), rel=1e-5, abs=1e-4)
    (row,) = stats(openvino, "mnist")["backends"]
    assert row["backend"] == "openvino" and row["chosen"] and "forced" in row["reason"]


def test_openvino_refuses_a_bundle_without_onnx(openvino):
    r = openvino.get("/v2/models/housing_old/ready")
    assert r.status_code == 503 and "cannot be served with --backend openvino: the bundle has no inference.onnx" \
        in r.json()["error"]


# ---- auto ------------------------------------------------------------------------------------


def test_auto_serves_paddle_answers_with_the_fastest_that_passed(auto, models):
    for model in ("mnist", "housing", "mnist_wrong_onnx"):
        assert_paddle_answers(auto, model, models / model)
    for model in ("mnist", "housing", "mnist_wrong_onnx", "housing_old"):
        table = stats(auto, model)
        chosen = [row for row in table["backends"] if row["chosen"]]
        assert len(chosen) == 1 and chosen[0]["passed"], table
        assert auto.get(f"/v2/models/{model}").json()["platform"] == chosen[0]["backend"] == table["platform"]
        timed = [row for row in table["backends"] if row["passed"]]
        assert chosen[0]["batch_1_median_us"] == min(row["batch_1_median_us"] for row in timed)  # no batching here
    price = auto.post("/predict/house", json=HOUSE).json()["price"]
    assert price == pytest.approx(house_price(models / "housing"), rel=1e-5, abs=1e-4)


def test_auto_never_chooses_an_onnx_that_fails_parity(auto, models):
    table = rows_by_backend(stats(auto, "mnist_wrong_onnx"))
    for runtime in ("onnxruntime", "openvino"):
        row = table[runtime]
        assert row["passed"] is False and not row["chosen"] and row["reason"].startswith("parity failed")
        assert row["max_abs_diff"] > 1e-5 and row["batch_1_median_us"] is None
    assert table["paddle_inference"]["chosen"]
    assert auto.get("/v2/models/mnist_wrong_onnx").json()["platform"] == "paddle_inference"
    assert_paddle_answers(auto, "mnist_wrong_onnx", models / "mnist_wrong_onnx")


def test_stats_table(auto):
    table = stats(auto, "mnist")
    assert table == stats(auto, "mnist", "1") and table["name"] == "mnist" and table["version"] == "1"
    assert table["selected_by"] == "--backend auto: fastest at batch 1 among those within tolerance"
    assert table["parity_inputs"] == "samples.npz, 8 rows" and table["batch_sizes"] == [1, 16]
    assert table["tolerance"] == {"atol": 1e-5, "rtol": 0.0, "top1": True, "origin": "manifest.json"}
    rows = rows_by_backend(table)
    assert list(rows) == ["paddle_inference", "onnxruntime", "openvino", "paddle_tensorrt"]
    for name in ("paddle_inference", "onnxruntime", "openvino"):
        row = rows[name]
        assert row["passed"] and row["max_abs_diff"] <= 1e-5, row
        assert row["batch_1_median_us"] > 0 and row["batch_n_median_us"] > 0
    trt = rows["paddle_tensorrt"]  # written, never run on a CPU
    assert (trt["passed"], trt["batch_1_median_us"], trt["chosen"], trt["reason"]) == \
        (None, None, False, "GPU only (--device gpu)")
    chosen = next(name for name, row in rows.items() if row["chosen"])
    metrics = auto.get("/metrics").text
    assert f'serve_model_backend{{backend="{chosen}",model="mnist",version="1"}} 1.0' in metrics
    assert auto.get("/v2/models/nope/stats").status_code == 404
    assert stats(auto, "mnist-image")["platform"] == chosen  # the image entry runs on the same backend


def test_stats_of_an_old_style_bundle(auto):
    """No samples.npz: zeros and a note; no recorded tolerance: the default, said so; no ONNX: skipped rows."""
    table = stats(auto, "housing_old")
    assert table["parity_inputs"].startswith("no samples.npz in the bundle: 4 rows of zeros")
    assert table["tolerance"]["origin"].startswith("default")
    rows = rows_by_backend(table)
    assert rows["paddle_inference"]["chosen"]
    assert rows["onnxruntime"]["passed"] is None and "no inference.onnx" in rows["onnxruntime"]["reason"]


def test_gunicorn_auto_with_dynamic_batching(models, mnist_bundle, tmp_path):
    """Under gunicorn with dynamic batching, auto decides on the batcher's size."""
    (tmp_path / "models").mkdir()
    shutil.copytree(mnist_bundle, tmp_path / "models" / "mnist")
    server = Server.ready([sys.executable, "-m", "gunicorn", "-c", "serve/gunicorn_conf.py", "-w", "1", "--threads", "2",
                    "-b", "127.0.0.1:{port}", "serve.app:create_app()"], tmp_path / "server.log",
                   env={"SERVE_MODELS": str(tmp_path / "models"), "SERVE_DYNAMIC_BATCHING": "1",
                        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus")})
    try:
        table = stats(server, "mnist")
        assert table["selected_by"] == "--backend auto: fastest at batch 16 among those within tolerance"
        chosen = next(row for row in table["backends"] if row["chosen"])
        timed = [row for row in table["backends"] if row["passed"]]
        assert chosen["batch_n_median_us"] == min(row["batch_n_median_us"] for row in timed)
        assert_paddle_answers(server, "mnist", tmp_path / "models" / "mnist")
        assert f'backend="{chosen["backend"]}",model="mnist",version="1"}} 1.0' in server.get("/metrics").text
    finally:
        server.stop()


class Stub:
    """A stand-in backend: sleeps ``seconds[batch]`` (default ``seconds[1]``), answers the row sums."""

    def __init__(self, name: str, seconds: dict, fail_at: int | None = None):
        self.name, self.seconds, self.fail_at, self.closed = name, seconds, fail_at, False

    def run(self, inputs):
        if len(inputs[0]) == self.fail_at:
            raise RuntimeError("no kernel for this shape")
        time.sleep(self.seconds.get(len(inputs[0]), self.seconds[1]))
        return [inputs[0].sum(axis=1, keepdims=True)]

    def close(self):
        self.closed = True


@pytest.mark.parametrize("dynamic_batching,winner", [(False, "onnxruntime"), (True, "paddle_inference")])
def test_auto_picks_the_fastest_at_the_batch_it_will_run(housing_bundle, monkeypatch, dynamic_batching, winner):
    """serve.autoselect.select with stand-ins: the fastest at batch 1 (or at the batcher's size with dynamic
    batching) serves, the others are closed, one that fails at a batch size is a failed row."""
    from serve import autoselect
    from serve.config import DEFAULTS

    stubs = {"paddle": Stub("paddle_inference", {1: 0.005, 16: 0.001}),
             "onnxruntime": Stub("onnxruntime", {1: 0.0005, 16: 0.01}),
             "openvino": Stub("openvino", {1: 0.0}, fail_at=16)}
    monkeypatch.setattr(autoselect, "create_backend", lambda bundle, settings, warmup, name=None: stubs[name])
    settings = {**DEFAULTS, "BACKEND": "auto", "DYNAMIC_BATCHING": dynamic_batching}
    chosen, report = autoselect.select(read_bundle(housing_bundle), settings, [], 16)
    rows = rows_by_backend(report)
    assert chosen is stubs["paddle" if winner == "paddle_inference" else winner] and rows[winner]["chosen"]
    assert [name for name, stub in stubs.items() if stub.closed] == [n for n in stubs if stubs[n] is not chosen]
    assert rows["openvino"]["passed"] is False
    assert rows["openvino"]["reason"] == "failed at batch 16: RuntimeError: no kernel for this shape"


# ---- forced backends that cannot run -----------------------------------------------------------


def test_forcing_onnxruntime_without_onnx_refuses_the_model(models, tmp_path):
    from serve.app import create_app

    shutil.copytree(models / "housing_old", tmp_path / "housing")
    app = create_app({"MODELS": str(tmp_path), "BACKEND": "onnxruntime", "WARMUP_BATCHES": 0})
    assert app.extensions["registry"].done.wait(60)
    r = app.test_client().post("/predict/house", json=HOUSE)
    assert r.status_code == 503 and r.json["error"]["code"] == "model_unavailable"
    assert "cannot be served with --backend onnxruntime: the bundle has no inference.onnx" in r.json["error"]["message"]


def test_forced_backend_not_installed_stops_the_server_with_one_line(models, tmp_path):
    """`python -m serve --backend openvino` without the package: exit 2 and one line, before any model loads."""
    hidden = tmp_path / "hide" / "openvino"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ImportError('No module named openvino (hidden by the test)')\n")
    proc = subprocess.run([sys.executable, "-m", "serve", "--models", str(models), "--backend", "openvino"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(hidden.parent)})
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("serve:")]
    assert lines == ["serve: error: --backend openvino: the openvino package is not installed (pip install "
                     "'paddle-d2s-toolkit[openvino]'): No module named openvino (hidden by the test)"], proc.stderr
    assert "Traceback" not in proc.stderr


# ---- export: ONNX by default, samples.npz, the tolerance, OpenVINO parity ---------------------------


def test_export_writes_onnx_samples_and_tolerance_by_default(mnist_bundle, mnist_checkpoint, data_dir):
    from export.pipeline import plan_from_checkpoint

    b = read_bundle(mnist_bundle)
    assert {"inference.onnx", "samples.npz"} <= set(b.manifest["files"]) and b.manifest["notes"] == []
    assert b.manifest["tolerance"] == {"atol": 1e-5, "rtol": 0.0, "top1": True}
    (x,) = b.samples()
    assert x.shape == (8, 1, 28, 28) and x.dtype == np.float32
    assert np.array_equal(x, plan_from_checkpoint(mnist_checkpoint, str(data_dir)).samples.x[0][:8])
    for runtime in ("onnxruntime", "openvino"):
        result = b.runtime_result(runtime)
        assert result["status"] == "passed" and [c["batch"] for c in result["settings"][0]["cases"]] == [1, 64], result


def test_every_registered_runtime_is_a_backend_choice_and_an_auto_candidate():
    """Adding a runtime is one class and one entry in common.runtimes.RUNTIMES: the server takes the rest from it."""
    from serve import autoselect, backends
    from serve.config import CHOICES

    assert CHOICES["BACKEND"] == ("auto", *RUNTIMES)
    assert set(autoselect.CANDIDATES) | {"paddle"} == set(RUNTIMES)
    assert all(runtime.sharing in backends.POOLS for runtime in RUNTIMES.values())


def test_a_runtime_that_disagrees_is_recorded_failed_and_required_it_is_fatal(housing_checkpoint, tmp_path,
                                                                               monkeypatch):
    """An inference.onnx that converts but computes something else: the export ships the Paddle bundle, records
    onnxruntime and OpenVINO as failed with their figures (and drops the file no server may use); --require
    onnxruntime makes that fatal."""
    from export import ExportError, ExportWarning, export_checkpoint, pipeline

    real = pipeline.to_onnx

    def wrong(folder):
        assert real(folder) is None
        scale_largest_weight(folder / "inference.onnx")
    monkeypatch.setattr(pipeline, "to_onnx", wrong)
    with pytest.warns(ExportWarning, match=r"onnxruntime failed: on samples, batch 1: output 'price' max abs diff"):
        b = read_bundle(export_checkpoint(housing_checkpoint, tmp_path / "b"))
    for runtime in ("onnxruntime", "openvino"):
        result = b.runtime_result(runtime)
        figures = result["settings"][0]["cases"][0]["outputs"]["price"]
        assert result["status"] == "failed" and not figures["passed"] and figures["max_abs_diff"] > 1e-3, result
    assert b.runtime_result("paddle")["status"] == "passed" and b.onnx_file is None
    assert any(note.startswith("onnxruntime failed: ") for note in b.manifest["notes"])
    with pytest.raises(ExportError, match="--require onnxruntime: onnxruntime failed: "):
        export_checkpoint(housing_checkpoint, tmp_path / "c", require=("onnxruntime",))
    assert not (tmp_path / "c").exists()


def test_a_forced_backend_the_export_ruled_out_is_refused(housing_bundle, tmp_path):
    """--backend openvino on a bundle whose export recorded OpenVINO as unavailable: refused with that reason."""
    from serve.app import create_app

    shutil.copytree(housing_bundle, tmp_path / "housing")
    manifest = json.loads((tmp_path / "housing" / "manifest.json").read_text())
    manifest["parity"]["runtimes"]["openvino"] = {"status": "unavailable", "reason": "Conversion is failed for: Loop-11"}
    (tmp_path / "housing" / "manifest.json").write_text(json.dumps(manifest))
    app = create_app({"MODELS": str(tmp_path), "BACKEND": "openvino", "WARMUP_BATCHES": 0})
    assert app.extensions["registry"].done.wait(60)
    r = app.test_client().get("/v2/models/housing/ready")
    assert r.status_code == 503 and "--backend openvino: unavailable at export: Conversion is failed for: Loop-11" \
        in r.json["error"]


def test_export_without_openvino_skips_it_and_no_onnx_skips_both(housing_checkpoint, tmp_path, monkeypatch):
    from export import export_checkpoint

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    b = read_bundle(export_checkpoint(housing_checkpoint, tmp_path / "a"))
    assert b.runtime_result("onnxruntime")["status"] == "passed" and b.manifest["notes"] == []
    assert b.runtime_result("openvino") == {"status": "skipped", "reason": b.runtime_result("openvino")["reason"]}
    assert b.runtime_result("openvino")["reason"].startswith("the openvino package is not installed")
    b = read_bundle(export_checkpoint(housing_checkpoint, tmp_path / "b", onnx=False))
    assert b.onnx_file is None and b.manifest["notes"] == []
    for runtime in ("onnxruntime", "openvino"):
        assert b.runtime_result(runtime)["status"] == "skipped"
        assert "has no inference.onnx" in b.runtime_result(runtime)["reason"]
