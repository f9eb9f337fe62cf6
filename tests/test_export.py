"""python -m export: bundles that Paddle Inference loads, proven equal to the dygraph model.

Real checkpoints, real files, real predictors; no mocks. Test-only models (control flow, noise)
are registered in ``models.REGISTRY`` for one test, the way a user would add a model.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import paddle
import pytest
import yaml
from paddle import nn

import models
from common.bundle import BUNDLE_FORMAT, read_bundle, sha256_file
from common.runtimes import PredictorRunner, create_predictor
from export import ExportError, check_bundle, export_checkpoint
from tests.conftest import ROOT, run_module
from common import checkpoint

# ---------------------------------------------------------------------------------------------
# helpers


def checkpoint_for(base: Path, task: str, name: str, folder: Path, net: nn.Layer | None = None) -> Path:
    """A checkpoint of model ``name`` (fresh random weights) with ``base``'s data, stats and history.

    Same file format as ``python -m train`` writes (``checkpoint.encode``); saves training one
    model per test: the export does not care how good the weights are.
    """
    state = checkpoint.load(base)
    net = net if net is not None else models.build_model(task, name)
    state.update(config={**state["config"], "model": name, "dropout": None}, model_state=net.state_dict())
    for key in ("format", "paddle_version", "saved_at"):
        state.pop(key, None)
    path = folder / f"{task}-{name}.pdckpt"
    path.write_bytes(checkpoint.encode(state))
    return path


def dygraph(ckpt: Path, x: np.ndarray) -> np.ndarray:
    """What the checkpoint's dygraph model, with its task's head, answers (probabilities / $1000s)."""
    from export.pipeline import plan_from_checkpoint

    with paddle.no_grad():
        return plan_from_checkpoint(ckpt, with_samples=False).layer(paddle.to_tensor(x)).numpy()


def predict(bundle: Path, x: np.ndarray, mkldnn: bool) -> np.ndarray:
    """A Paddle Inference predictor's (first) output for ``x``."""
    return PredictorRunner(create_predictor(bundle, mkldnn=mkldnn)).run(np.ascontiguousarray(x))[0]


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary or set-aside folders an export may have left behind."""
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def mnist_test(data_dir: Path, start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (count, 28, 28) MNIST test digits and their labels."""
    ds = paddle.vision.datasets.MNIST(
        image_path=str(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz"),
        label_path=str(data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz"), mode="test", download=False,
        backend="cv2")
    images = np.asarray(ds.images[start:start + count], dtype=np.uint8).reshape(-1, 28, 28)
    return images, np.asarray(ds.labels[start:start + count], dtype=np.int64).reshape(-1)


def housing_test(data_dir: Path, ckpt: Path) -> np.ndarray:
    from common import housing
    from common.datasets import housing_split

    stats = checkpoint.load(ckpt)["stats"]
    return housing.normalize(housing_split(str(data_dir))[1][:, :13], stats["feature_mean"], stats["feature_std"])


# ---------------------------------------------------------------------------------------------
# the bundle


def test_mnist_bundle_contents(mnist_bundle, mnist_checkpoint):
    bundle = read_bundle(mnist_bundle, verify=True)
    info, m = bundle.info, bundle.manifest
    assert info["Global"]["task"] == "mnist" and info["Global"]["model_name"] == "cnn"
    assert info["Inputs"] == [{"name": "image", "shape": [-1, 1, 28, 28], "dtype": "float32"}]
    assert info["PostProcess"]["label_list"] == [str(d) for d in range(10)]
    assert "transform_ops" in info["PreProcess"]
    assert m["format"] == BUNDLE_FORMAT
    assert set(m["files"]) == {"inference.json", "inference.pdiparams", "inference.yml", "inference.onnx",
                               "samples.npz"}
    src = m["source_checkpoint"]
    assert src["sha256"] == sha256_file(mnist_checkpoint) and src["epoch"] == src["best_epoch"]
    assert src["metrics"]["test_acc"] > 0.98 and "val_acc" in src["metrics"]
    parity = m["parity"]
    assert parity["passed"] and parity["dygraph_metrics"]["acc"] > 0.98
    assert [(c["label"], c["calls"]) for c in parity["cases"]] == [("samples, batch 1", 320), ("samples, batch 64", 5)]
    runtimes = parity["runtimes"]
    assert {name: r["status"] for name, r in runtimes.items()} == {
        "paddle": "passed", "onnxruntime": "passed", "openvino": "passed", "paddle_tensorrt": "skipped"}
    assert [s["label"] for s in runtimes["paddle"]["settings"]] == ["oneDNN on", "oneDNN off"]
    figures = [f for r in runtimes.values() for s in r.get("settings", []) for c in s["cases"]
               for f in c["outputs"].values()]
    assert len(figures) == 8 and all(f["max_abs_diff"] <= 1e-5 and f["top1_mismatches"] == 0 for f in figures)
    assert m["training_config"]["model"] == "cnn"
    print("mnist parity:", [(s["label"], c["case"], c["outputs"]["probabilities"]["max_abs_diff"])
                            for s in runtimes["paddle"]["settings"] for c in s["cases"]])


def test_housing_bundle_answers_in_dollars(housing_bundle, housing_checkpoint, data_dir):
    bundle = read_bundle(housing_bundle, verify=True)
    stats = checkpoint.load(housing_checkpoint)["stats"]
    assert bundle.inputs == [{"name": "features", "shape": [-1, 13], "dtype": "float32"}]
    assert bundle.info["PreProcess"]["mean"] == stats["feature_mean"]
    assert bundle.info["PostProcess"]["unit"] == "$1000s"
    x = housing_test(data_dir, housing_checkpoint)
    price = predict(housing_bundle, x, mkldnn=False)[:, 0]
    from common.datasets import read_housing

    truth = read_housing(str(data_dir))[404:, 13]
    # De-normalised in the graph: the bundle's error in $1000s is the one training measured.
    assert np.mean(np.abs(price - truth)) == pytest.approx(bundle.manifest["source_checkpoint"]["metrics"]["test_mae"],
                                                           rel=1e-4)
    print("housing parity:", [(s["label"], c["case"], c["outputs"]["price"]["max_abs_diff"])
                              for s in bundle.manifest["parity"]["runtimes"]["paddle"]["settings"] for c in s["cases"]])


@pytest.mark.parametrize("task,name", [(t, n) for t in models.REGISTRY for n in models.REGISTRY[t]])
def test_every_registered_model_exports(task, name, mnist_checkpoint, housing_checkpoint, tmp_path):
    base = mnist_checkpoint if task == "mnist" else housing_checkpoint
    out = export_checkpoint(checkpoint_for(base, task, name, tmp_path), tmp_path / "bundle")
    bundle = read_bundle(out, verify=True)
    assert bundle.model_name == name and bundle.manifest["parity"]["passed"]
    assert leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# parity on an existing bundle


def test_parity_fails_on_altered_parameters(mnist_bundle, mnist_checkpoint, tmp_path):
    bundle = Path(shutil.copytree(mnist_bundle, tmp_path / "bundle"))
    assert check_bundle(bundle, mnist_checkpoint)["passed"]
    # Add 30 to the first class's bias of the last layer: probabilities shift, many top-1 become 0.
    bias = checkpoint.load(mnist_checkpoint)["model_state"]["classifier.6.bias"].numpy()
    params = (bundle / "inference.pdiparams").read_bytes()
    assert params.count(bias.tobytes()) == 1
    altered = bias.copy()
    altered[0] += 30
    (bundle / "inference.pdiparams").write_bytes(params.replace(bias.tobytes(), altered.tobytes()))
    with pytest.raises(ExportError, match="does not match its sha256"):
        check_bundle(bundle, mnist_checkpoint)
    with pytest.raises(ExportError, match=r"parity failed: .* max abs diff .* top-1 differ") as err:
        check_bundle(bundle, mnist_checkpoint, verify=False)
    print(err.value)
    proc = run_module("export.verify", str(bundle), "--checkpoint", str(mnist_checkpoint), "--no-checksums",
                      check=False)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: parity failed")
    assert len(proc.stderr.strip().splitlines()) == 1


def test_random_forward_is_refused_and_leaves_nothing(housing_checkpoint, tmp_path, monkeypatch):
    class Noisy(nn.Layer):
        """Adds fresh noise on every call: no static graph can be proven equal to it."""

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(13, 1)

        def forward(self, x):
            return self.fc(x) + 0.1 * paddle.randn([1])

    monkeypatch.setitem(models.REGISTRY["housing"], "noisy", Noisy)
    ckpt = checkpoint_for(housing_checkpoint, "housing", "noisy", tmp_path)
    with pytest.raises(ExportError, match="Noisy.forward is not deterministic: two calls on the same input differ"):
        export_checkpoint(ckpt, tmp_path / "new" / "deeper" / "bundle")
    assert not (tmp_path / "new").exists() and leftovers(tmp_path) == []  # parents it made are gone too


def test_a_graph_that_differs_fails_parity_and_leaves_nothing(housing_checkpoint, tmp_path, monkeypatch):
    """A network whose static graph really computes something else: Paddle's std (n - 1) where NumPy's (n) ran."""
    class NumpyStd(nn.Layer):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(13, 1)

        def forward(self, x):
            return self.fc(x) / float(x.numpy().std())

    monkeypatch.setitem(models.REGISTRY["housing"], "numpy_std", NumpyStd)
    ckpt = checkpoint_for(housing_checkpoint, "housing", "numpy_std", tmp_path)
    with pytest.raises(ExportError, match=r"parity failed: .* max abs diff .* the likely cause: tests/test_export.py:"
                                          r"\d+ `return self.fc\(x\) / float\(x.numpy\(\).std\(\)\)`.*paddle.std"):
        export_checkpoint(ckpt, tmp_path / "new" / "bundle")
    assert not (tmp_path / "new").exists() and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# a fresh process, and the snippet in docs/EXPORT.md


def doc_snippet() -> str:
    """The "load a bundle from your own Python code" snippet of docs/EXPORT.md."""
    text = (ROOT / "docs" / "EXPORT.md").read_text()
    return re.search(r"<!-- snippet: load-bundle -->\s*```python\n(.*?)```", text, re.S).group(1)


def test_fresh_process_loads_bundle_without_toolkit(mnist_bundle, mnist_checkpoint, data_dir, tmp_path):
    from common.digit_image import normalize

    x = normalize(mnist_test(data_dir, 0, 32)[0])
    np.save(tmp_path / "x.npy", x)
    code = doc_snippet()
    code = code.replace('bundle = "bundles/mnist-cnn"', f'bundle = {str(mnist_bundle)!r}')
    code = re.sub(r"\nx = .*\n", f"\nx = np.load({str(tmp_path / 'x.npy')!r})\n", code)
    code += textwrap.dedent(f"""
        import sys
        np.save({str(tmp_path / 'out.npy')!r}, probabilities)
        assert not any(m.split('.')[0] in ('train', 'models', 'export') for m in sys.modules), 'toolkit imported'
        toolkit = [m for m in sys.modules if m.split('.')[0] in ('train', 'models', 'export', 'common')]
        print('toolkit modules:', toolkit)
        """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "toolkit modules: []" in proc.stdout
    out = np.load(tmp_path / "out.npy")
    assert np.abs(out - dygraph(mnist_checkpoint, x)).max() <= 1e-5


# ---------------------------------------------------------------------------------------------
# preprocessing shared with serving


def test_exported_model_on_user_like_images(mnist_bundle, data_dir):
    """Every 10th MNIST test image (1000, spread over the writers), re-rendered 5 ways, through
    ``common.digit_image.preprocess`` and the exported model.

    The fixture model (2 epochs) scores 98.96% on the plain test set, so a per-kind bar of 98%
    on a sample is within sampling noise of the truth (on all 10000 images: 98.1-99.0% per kind).
    Asserted: 98% over all renderings, and no kind more than 1.5 points below the plain images.
    """
    from common.digit_image import normalize, preprocess
    from bench.digit_renderings import KINDS, render_like_user

    images, labels = mnist_test(data_dir, 0, 10000)
    images, labels = images[::10], labels[::10]
    runner = PredictorRunner(create_predictor(mnist_bundle, mkldnn=True))
    plain = float(np.mean(runner.run(normalize(images))[0].argmax(1) == labels))
    rng = np.random.default_rng(0)
    accuracy = {}
    for kind in KINDS:
        x = np.concatenate([preprocess(render_like_user(im, rng, kind)) for im in images])
        accuracy[kind] = float(np.mean(runner.run(x)[0].argmax(1) == labels))
    pooled = float(np.mean(list(accuracy.values())))
    print(f"accuracy on {len(labels)} MNIST test images: plain {plain}, re-rendered {accuracy}, "
          f"all renderings {pooled}")
    assert pooled >= 0.98, accuracy
    assert all(plain - acc <= 0.015 for acc in accuracy.values()), (plain, accuracy)


# ---------------------------------------------------------------------------------------------
# models that resist conversion


class Branchy(nn.Layer):
    """Data-dependent Python control flow: the branch depends on the input's values (Paddle exports
    it; paddle2onnx 2.1 aborts on it with SIGABRT, see test_backends.py)."""

    def __init__(self, width: int = 13):
        super().__init__()
        self.fc = nn.Linear(width, 1)

    def forward(self, x):
        if x.mean() > 0:
            y = self.fc(x) * 2.0
        else:
            y = self.fc(x) - 1.0
        return y


class TwoDtypes(nn.Layer):
    """Branches returning different dtypes: fine in dygraph, but no conditional op of a static graph has two."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(13, 1)

    def forward(self, x):
        if x.mean() > 0:
            return self.fc(x)
        return paddle.cast(self.fc(x), "float64")


def test_data_dependent_if_is_converted(housing_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(models.REGISTRY["housing"], "branchy", Branchy)
    ckpt = checkpoint_for(housing_checkpoint, "housing", "branchy", tmp_path)
    out = export_checkpoint(ckpt, tmp_path / "bundle")  # parity at batch 1 takes both branches
    runner = PredictorRunner(create_predictor(out, mkldnn=False))
    positive = np.abs(np.random.default_rng(0).normal(size=(8, 13))).astype(np.float32)
    for x in (positive, -positive):  # one input per branch
        ref = dygraph(ckpt, x)
        assert np.abs(runner.run(x)[0] - ref).max() <= 1e-5 * max(1, np.abs(ref).max())
    assert not np.allclose(dygraph(ckpt, positive), dygraph(ckpt, -positive) * -1)  # the branches differ


def test_unconvertible_forward_names_construct_and_fix(housing_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(models.REGISTRY["housing"], "two_dtypes", TwoDtypes)
    ckpt = checkpoint_for(housing_checkpoint, "housing", "two_dtypes", tmp_path)
    with pytest.raises(ExportError) as err:
        export_checkpoint(ckpt, tmp_path / "bundle")
    message = str(err.value)
    print(message)
    assert "\n" not in message
    assert "could not convert TwoDtypes.forward" in message and "paddle.static.nn.cond" in message
    assert "true_block&false_block must be equal" in message  # Paddle's own reason
    assert not (tmp_path / "bundle").exists() and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# bad input: one line, exit 2, nothing written


def bad_cases(housing_checkpoint: Path, tmp: Path) -> dict[str, tuple[list[str], str]]:
    truncated = tmp / "truncated.pdckpt"
    truncated.write_bytes(housing_checkpoint.read_bytes()[:2000])
    foreign = tmp / "foreign.pdparams"
    paddle.save(nn.Linear(13, 1).state_dict(), str(foreign))
    existing = tmp / "existing"
    existing.mkdir()
    (tmp / "file").write_text("x")
    locked = tmp / "locked"
    locked.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root ignores permissions; sysfs refuses new entries even to root
        locked = Path("/sys")
    ok = str(housing_checkpoint)
    return {
        "missing": (["--checkpoint", str(tmp / "nope.pdckpt"), "--out", str(tmp / "a")], "does not exist"),
        "truncated": (["--checkpoint", str(truncated), "--out", str(tmp / "a")], "truncated or corrupt"),
        "foreign": (["--checkpoint", str(foreign), "--out", str(tmp / "a")], "not a toolkit checkpoint"),
        "existing": (["--checkpoint", ok, "--out", str(existing)], "already exists; pass --force"),
        "under_file": (["--checkpoint", ok, "--out", str(tmp / "file" / "bundle")], "cannot write the bundle"),
        "read_only": (["--checkpoint", ok, "--out", str(locked / "bundle")], "cannot write the bundle"),
    }


@pytest.mark.parametrize("case", ["missing", "truncated", "foreign", "existing", "under_file", "read_only"])
def test_bad_input_one_line_nothing_written(case, housing_checkpoint, tmp_path):
    args, reason = bad_cases(housing_checkpoint, tmp_path)[case]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    proc = run_module("export", *args, check=False, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and reason in lines[0], proc.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing created, nothing removed
    assert proc.stdout == ""


def test_force_replaces_bundle(housing_checkpoint, housing_bundle, tmp_path):
    out = Path(shutil.copytree(housing_bundle, tmp_path / "bundle"))
    (out / "stale.txt").write_text("from the old bundle")
    export_checkpoint(housing_checkpoint, out, force=True, batch=8)
    assert not (out / "stale.txt").exists() and leftovers(tmp_path) == []
    bundle = read_bundle(out, verify=True)
    assert bundle.inputs[0]["shape"] == [8, 13] and [c["batch"] for c in bundle.manifest["parity"]["cases"]] == [8]
    with pytest.raises(ExportError, match="not a bundle"):  # --force never wipes an arbitrary folder
        export_checkpoint(housing_checkpoint, ROOT / "docs", force=True)


# ---------------------------------------------------------------------------------------------
# --format pdmodel and --onnx


def onnx_vs_predictor(bundle: Path, x: np.ndarray) -> float:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(bundle / "inference.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    return float(np.abs(onnx_out - predict(bundle, x, mkldnn=False)).max())


def test_pdmodel_with_onnx(mnist_checkpoint, data_dir, tmp_path):
    from common.digit_image import normalize

    out = export_checkpoint(mnist_checkpoint, tmp_path / "legacy", fmt="pdmodel", onnx=True)
    files = {p.name for p in out.iterdir()}
    assert {"inference.pdmodel", "inference.onnx"} <= files and "inference.json" not in files
    bundle = read_bundle(out, verify=True)
    assert bundle.graph_file.name == "inference.pdmodel"
    assert bundle.manifest["parity"]["runtimes"]["onnxruntime"]["status"] == "passed"
    x = normalize(mnist_test(data_dir, 0, 64)[0])
    assert onnx_vs_predictor(out, x) <= 1e-5
    assert np.abs(predict(out, x, mkldnn=True) - dygraph(mnist_checkpoint, x)).max() <= 1e-5


def test_cli_json_with_onnx(housing_checkpoint, data_dir, tmp_path):
    proc = run_module("export", "--checkpoint", str(housing_checkpoint), "--out", str(tmp_path / "b"), "--onnx")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert proc.stdout.strip() == "\n".join(manifest["report"]) and proc.stderr == ""  # the report, nothing else
    assert re.search(r"\n  onnxruntime +- +passed ", proc.stdout) and "inference.onnx" in proc.stdout
    assert manifest["parity"]["runtimes"]["onnxruntime"]["status"] == "passed" and "inference.onnx" in manifest["files"]
    x = housing_test(data_dir, housing_checkpoint)
    assert onnx_vs_predictor(tmp_path / "b", x) <= 1e-4  # $1000s, ~50 at most: relative 2e-6
    assert yaml.safe_load((tmp_path / "b" / "inference.yml").read_text())["Global"]["format"] == "json"


def test_export_takes_a_run_folder_and_the_latest_pointer(housing_checkpoint, tmp_path):
    checkpoints = housing_checkpoint.parent
    from_folder = export_checkpoint(checkpoints.parent, tmp_path / "from-run-folder")
    assert read_bundle(from_folder).manifest["source_checkpoint"]["path"] == str(housing_checkpoint.resolve())
    from_latest = export_checkpoint(checkpoints / "latest", tmp_path / "from-latest")
    named = checkpoints / (checkpoints / "latest").read_text().strip()
    assert read_bundle(from_latest).manifest["source_checkpoint"]["path"] == str(named.resolve())
    with pytest.raises(ExportError, match="is a folder without checkpoints/best.pdckpt"):
        export_checkpoint(tmp_path, tmp_path / "nothing")
    bad = tmp_path / "latest"
    bad.write_text("../../etc/passwd\n")
    with pytest.raises(ExportError, match="points to '../../etc/passwd', which is not a checkpoint"):
        export_checkpoint(bad, tmp_path / "nothing")
