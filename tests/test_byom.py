"""Bring your own model: any paddle.nn.Layer exported with --layer and served over V2, end to end."""
from __future__ import annotations

import json
import sys

import numpy as np
import paddle
import pytest
import yaml
from paddle.static import InputSpec

from export import ExportError, export_layer
from tests.byom_nets import TabularImageNet
from tests.conftest import run_module
from tests.test_serve import Server

INPUTS = ["image:float32:-1,1,16,16", "features:float32:-1,5", "category:int64:-1"]


def sample(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.standard_normal((n, 1, 16, 16)).astype(np.float32),
            "features": rng.standard_normal((n, 5)).astype(np.float32),
            "category": rng.integers(0, 10, n).astype(np.int64)}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The layer with (random but fixed) weights saved as .pdparams, as a user would have them."""
    paddle.seed(7)
    layer = TabularImageNet()
    layer.eval()
    weights = tmp_path_factory.mktemp("byom") / "my.pdparams"
    paddle.save(layer.state_dict(), str(weights))
    return layer, weights


@pytest.fixture(scope="module")
def bundle(trained, tmp_path_factory):
    """Exported with the documented command line."""
    _, weights = trained
    out = tmp_path_factory.mktemp("models") / "tabimg"
    args = ["export", "--layer", "tests.byom_nets:TabularImageNet", "--weights", str(weights), "--out", str(out),
            "--output", "scores", "--output", "embedding", "--onnx"]
    for spec in INPUTS:
        args += ["--input", spec]
    proc = run_module(*args, timeout=600)
    assert "parity paddle.inference vs dygraph" in proc.stdout and "onnxruntime vs paddle.inference" in proc.stdout
    return out


def test_bundle_declares_the_layers_signature(bundle):
    info = yaml.safe_load((bundle / "inference.yml").read_text())
    assert info["Global"]["task"] == "custom" and info["Global"]["model_name"] == "TabularImageNet"
    assert info["Inputs"] == [{"name": "image", "shape": [-1, 1, 16, 16], "dtype": "float32"},
                              {"name": "features", "shape": [-1, 5], "dtype": "float32"},
                              {"name": "category", "shape": [-1], "dtype": "int64"}]
    assert info["Outputs"] == [{"name": "scores", "shape": [-1, 3], "dtype": "float32"},
                               {"name": "embedding", "shape": [-1, 4], "dtype": "float32"}]
    assert "PreProcess" not in info
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["parity"]["passed"] and manifest["parity"]["onnx"]["passed"]
    assert {(s["batch"], s["onednn"]) for s in manifest["parity"]["settings"]} == \
        {(1, True), (64, True), (1, False), (64, False)}
    assert manifest["source_checkpoint"]["layer"] == "tests.byom_nets:TabularImageNet"


def test_served_over_v2_with_its_own_names_dtypes_and_shapes(trained, bundle, tmp_path):
    layer, _ = trained
    x = sample(5)
    with paddle.no_grad():
        scores, embedding = (t.numpy() for t in layer(*(paddle.to_tensor(x[k]) for k in ("image", "features", "category"))))
    server = Server([sys.executable, "-m", "serve", "--models", str(bundle.parent), "--port", "{port}"],
                    tmp_path / "server.log")
    try:
        server.wait("/v2/health/ready")
        meta = server.get("/v2/models/tabimg").json()
        assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == \
            [("image", "FP32", [-1, 1, 16, 16]), ("features", "FP32", [-1, 5]), ("category", "INT64", [-1])]
        assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [("scores", "FP32"), ("embedding", "FP32")]
        body = {"inputs": [{"name": k, "shape": list(v.shape), "datatype": "INT64" if k == "category" else "FP32",
                            "data": v.ravel().tolist()} for k, v in x.items()]}
        r = server.post("/v2/models/tabimg/infer", json=body)
        assert r.status_code == 200, r.text
        out = {o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"]) for o in r.json()["outputs"]}
        np.testing.assert_allclose(out["scores"], scores, atol=1e-5)
        np.testing.assert_allclose(out["embedding"], embedding, atol=1e-5, rtol=1e-5)
        # Only one output, asked for by name; a float where INT64 is declared is refused in V2's error shape.
        body["outputs"] = [{"name": "embedding"}]
        assert [o["name"] for o in server.post("/v2/models/tabimg/infer", json=body).json()["outputs"]] == ["embedding"]
        body["inputs"][2]["data"] = [0.5] * 5
        bad = server.post("/v2/models/tabimg/infer", json=body)
        assert bad.status_code == 400 and "category" in bad.json()["error"]
        # The friendly API has nothing to offer a bundle without PreProcess.
        assert server.post("/predict/house?model=tabimg", json=[0] * 13).status_code == 404
    finally:
        server.stop()


def test_export_layer_from_python_with_generated_and_given_samples(tmp_path):
    paddle.seed(3)
    layer = TabularImageNet()
    spec = [InputSpec([None, 1, 16, 16], "float32", "image"), InputSpec([None, 5], "float32", "features"),
            InputSpec([None], "int64", "category")]
    out = export_layer(layer, spec, tmp_path / "a", output_names=["scores", "embedding"])
    assert json.loads((out / "manifest.json").read_text())["parity"]["origin"].startswith("64 generated rows")
    out = export_layer(layer, spec, tmp_path / "b", samples=sample(9))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parity"]["samples"] == 9 and manifest["parity"]["passed"]
    assert [o["name"] for o in yaml.safe_load((out / "inference.yml").read_text())["Outputs"]] == ["output_0", "output_1"]


def test_layer_export_errors_are_clear(trained, tmp_path):
    _, weights = trained
    proc = run_module("export", "--layer", "tests.byom_nets:Nope", "--weights", str(weights), "--input", INPUTS[0],
                      "--out", str(tmp_path / "x"), check=False)
    assert proc.returncode == 2 and "cannot import it" in proc.stderr
    proc = run_module("export", "--layer", "tests.byom_nets:TabularImageNet", "--weights", str(weights),
                      "--input", "image:float33:-1,1,16,16", "--out", str(tmp_path / "x"), check=False)
    assert proc.returncode == 2 and "dtype must be one of" in proc.stderr
    proc = run_module("export", "--layer", "tests.byom_nets:TabularImageNet", "--weights", str(weights),
                      "--input", INPUTS[0], "--out", str(tmp_path / "x"), check=False)  # forward needs 3 inputs
    assert proc.returncode == 2 and "error:" in proc.stderr and not (tmp_path / "x").exists()
    with pytest.raises(ExportError, match="fmt='pdmodel' from a layer object"):
        export_layer(TabularImageNet(), [InputSpec([None, 5], "float32", "x")], tmp_path / "y", fmt="pdmodel")
