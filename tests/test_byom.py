"""Bring your own model from Python: ``export_layer`` on any paddle.nn.Layer, and the errors a user meets.

The command line, the server and V2 clients for such bundles are tested with the whole catalogue in
tests/test_export_catalogue.py.
"""
from __future__ import annotations

import json

import numpy as np
import paddle
import pytest
import yaml
from paddle.static import InputSpec

from export import ExportError, export_layer
from export.__main__ import main
from tests.byom_nets import TabularImageNet

INPUTS = ["image:float32:-1,1,16,16", "features:float32:-1,5", "category:int64:-1"]


def sample(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"image": rng.standard_normal((n, 1, 16, 16)).astype(np.float32),
            "features": rng.standard_normal((n, 5)).astype(np.float32),
            "category": rng.integers(0, 10, n).astype(np.int64)}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The layer's (random but fixed) weights saved as .pdparams, as a user would have them."""
    paddle.seed(7)
    path = tmp_path_factory.mktemp("byom") / "my.pdparams"
    paddle.save(TabularImageNet().state_dict(), str(path))
    return path


def test_export_layer_from_python_with_generated_and_given_samples(tmp_path):
    paddle.seed(3)
    layer = TabularImageNet()
    spec = [InputSpec([None, 1, 16, 16], "float32", "image"), InputSpec([None, 5], "float32", "features"),
            InputSpec([None], "int64", "category")]
    # onnx=False: the runtimes of ONNX are the catalogue's business; here, what Python passes in
    out = export_layer(layer, spec, tmp_path / "a", output_names=["scores", "embedding"], onnx=False)
    parity = json.loads((out / "manifest.json").read_text())["parity"]
    assert parity["origin"].startswith("generated: 3 shapes x 3 value families")
    assert [(c["label"], c["calls"]) for c in parity["cases"]] == [("batch 1", 3), ("batch 3", 3), ("batch 8", 3)]
    out = export_layer(layer, spec, tmp_path / "b", samples=sample(9), onnx=False)
    manifest = json.loads((out / "manifest.json").read_text())
    cases = [(c["label"], c["calls"]) for c in manifest["parity"]["cases"]]
    assert cases[:2] == [("samples, batch 1", 9), ("samples, batch 9", 1)] and manifest["parity"]["passed"]
    assert manifest["parity"]["origin"].startswith("samples given by the caller, 9 rows; generated")
    assert [o["name"] for o in yaml.safe_load((out / "inference.yml").read_text())["Outputs"]] == ["output_0", "output_1"]
    assert np.array_equal(np.load(out / "samples.npz")["category"], sample(9)["category"][:8])


def test_an_embedding_index_out_of_range_asks_for_the_range(tmp_path):
    """Generated ids 0..9 on an embedding of 5 rows: not a parity failure but the question of the ids' range;
    stating it (LOW..HIGH) exports."""
    layer = TabularImageNet(categories=5)
    with pytest.raises(ExportError, match=r"failed on the parity inputs of batch 1 .* expected >= 0 and < 5.*"
                                          r"state them: --input NAME:DTYPE:SHAPE:LOW\.\.HIGH"):
        export_layer(layer, INPUTS, tmp_path / "a")
    out = export_layer(layer, [*INPUTS[:2], "category:int64:-1:0..4"], tmp_path / "b", onnx=False)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["signature"]["inputs"][2] == "category:int64:-1:0..4" and manifest["parity"]["passed"]
    assert 0 <= np.load(out / "samples.npz")["category"].min() and np.load(out / "samples.npz")["category"].max() <= 4


BAD = {  # flags after --layer/--weights/--out -> what the one error line says
    "no class": (["--input", INPUTS[0]], "cannot import it", "tests.byom_nets:Nope"),
    "bad dtype": (["--input", "image:float33:-1,1,16,16"], "dtype must be one of", None),
    "too few inputs": (["--input", INPUTS[0]], "failed on the parity inputs", None),
    "bad range": (["--input", INPUTS[0], "--input", INPUTS[1], "--input", "category:int64:-1:5..2"],
                  "LOW..HIGH needs LOW < HIGH", None),
    "unknown dim": ([*sum((["--input", i] for i in INPUTS), []), "--dim", "seq=3,4"],
                    "no input has a dimension named 'seq'", None),
    "unreadable samples": ([*sum((["--input", i] for i in INPUTS), []), "--samples", "{missing}"],
                           "not a readable .npz", None),
    "bad kwargs": ([*sum((["--input", i] for i in INPUTS), []), "--layer-kwargs", '{"colour": 1}'],
                   "could not be constructed with --layer-kwargs", None),
}


@pytest.mark.parametrize("case", list(BAD))
def test_layer_export_errors_are_one_line(case, weights, tmp_path, capsys):
    flags, reason, layer = BAD[case]
    flags = [f.replace("{missing}", str(tmp_path / "none.npz")) for f in flags]
    status = main(["--layer", layer or "tests.byom_nets:TabularImageNet", "--weights", str(weights),
                   "--out", str(tmp_path / "x"), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and err[0].startswith("error: ") and reason in err[0], err
    assert not (tmp_path / "x").exists()


def test_pdmodel_needs_a_recipe(tmp_path):
    with pytest.raises(ExportError, match="fmt='pdmodel' from a layer object"):
        export_layer(TabularImageNet(), [InputSpec([None, 5], "float32", "x")], tmp_path / "y", fmt="pdmodel")
