"""What the friendly API does with a bundle, built from its ``inference.yml`` and nothing else.

PaddleClas's predictor builds its operators from the bundle's PreProcess/PostProcess; so does this
server. A bundle whose PreProcess is named ``DigitImage`` gets a ``DigitPipeline`` (``/predict/digit``),
one named ``NormalizeFeatures`` a ``FeaturePipeline`` (``/predict/house``); a bundle without PreProcess
is served over the V2 protocol only. A PreProcess this server does not implement refuses the bundle
at load, with the reason, instead of being served with preprocessing of our own.
"""
from __future__ import annotations

import numpy as np

from common import housing
from common.bundle import Bundle, BundleError
from common.digit_image import DigitPreprocessor, ImageError
from common.image_decode import Header, peak_bytes


class DigitPipeline:
    """Image bytes -> the bundle's digit preprocessing -> probabilities -> labels, top-k."""

    kind = "digit"

    def __init__(self, bundle: Bundle):
        try:
            self.preprocessor = DigitPreprocessor.from_spec(bundle.info["PreProcess"])
        except ValueError as exc:
            raise BundleError(f"{bundle.path}: {exc}") from None
        expected = [-1, 1, self.preprocessor.canvas, self.preprocessor.canvas]
        if len(bundle.inputs) != 1 or bundle.inputs[0]["shape"][1:] != expected[1:] \
                or bundle.inputs[0]["dtype"] != "float32":
            raise BundleError(f"{bundle.path}: a DigitImage PreProcess feeds one float32 input of shape {expected}, "
                              f"the graph declares {bundle.inputs}")
        post = bundle.info.get("PostProcess") or {}
        if post.get("name") != "Topk" or not isinstance(post.get("label_list"), list) \
                or len(post["label_list"]) != bundle.outputs[0]["shape"][-1]:
            raise BundleError(f"{bundle.path}: a DigitImage bundle needs PostProcess Topk with one label per output "
                              f"class, got {post!r}")
        self.labels = [str(label) for label in post["label_list"]]
        self.topk = max(1, min(int(post.get("topk", 1)), len(self.labels)))

    def header(self, data: bytes) -> Header:
        """An uploaded file's header, read without decoding; ``ImageError`` (a message for the client) if unusable."""
        return self.preprocessor.header(data)

    def peak_bytes(self, header: Header) -> int:
        """Memory decoding and preprocessing that file take at their peak (what the decode budget reserves)."""
        return peak_bytes(header, self.preprocessor.min_side)

    def decode(self, data: bytes, max_pixels: int, header: Header) -> np.ndarray:
        """The file's pixels, under the bundle's limits and ``max_pixels``; ``ImageError`` if unusable."""
        return self.preprocessor.decode(data, max_pixels, header)

    def model_input(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the uint8 28x28 the model sees, its float32 (1, 1, 28, 28) input); ``ImageError`` if there is no digit."""
        gray = self.preprocessor.to_mnist(image)
        return gray, self.preprocessor.normalize(gray)

    def answer(self, probabilities: np.ndarray) -> dict:
        """The label, its probability, the top-k and every probability, for one image."""
        values = probabilities.tolist()  # Python floats, the float32 values exactly, in one call
        order = np.argsort(-probabilities, kind="stable")[:self.topk].tolist()
        best = self.labels[order[0]]
        return {"digit": int(best) if best.isdigit() else best, "probability": values[order[0]],
                "top": [{"label": self.labels[i], "probability": values[i]} for i in order],
                "probabilities": values}


class FeaturePipeline:
    """Named numbers -> ``(raw - mean) / std`` with the bundle's training statistics -> the graph."""

    kind = "house"

    def __init__(self, bundle: Bundle):
        pre = bundle.info["PreProcess"]
        names, mean, std = pre.get("feature_names"), pre.get("mean"), pre.get("std")
        width = bundle.inputs[0]["shape"][-1]
        if not (isinstance(names, list) and isinstance(mean, list) and isinstance(std, list)
                and len(names) == len(mean) == len(std) == width and len(bundle.inputs) == 1):
            raise BundleError(f"{bundle.path}: NormalizeFeatures needs feature_names, mean and std with one "
                              f"entry per input column ({width}), for a single input")
        self.names = [str(n) for n in names]
        self.mean, self.std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
        post = bundle.info.get("PostProcess") or {}
        self.unit = post.get("unit", "")

    def inputs(self, rows: list[list[float]]) -> np.ndarray:
        """Raw feature rows -> the normalised float32 batch (may hold infinities: callers check)."""
        return housing.normalize(rows, self.mean, self.std)


PIPELINES = {"DigitImage": DigitPipeline, "NormalizeFeatures": FeaturePipeline}


def pipeline_for(bundle: Bundle):
    """The friendly-API pipeline the bundle declares, None for V2-only bundles; BundleError if unknown."""
    pre = bundle.info.get("PreProcess")
    if not pre:
        return None
    name = pre.get("name") if isinstance(pre, dict) else None
    if name not in PIPELINES:
        raise BundleError(f"{bundle.path}: PreProcess {name!r} is not implemented by this server (it implements "
                          f"{', '.join(PIPELINES)}); re-export the bundle with this toolkit's python -m export")
    return PIPELINES[name](bundle)


__all__ = ["DigitPipeline", "FeaturePipeline", "pipeline_for", "ImageError"]
