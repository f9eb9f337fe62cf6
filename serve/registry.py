"""The models a server holds: found on disk at start, loaded and warmed up in a background thread.

``DIR/<name>/`` is a bundle (version 1), or holds numbered version folders ``DIR/<name>/1/``,
``2/``...; the highest number is the default version. Discovery reads each bundle's YAML only
(fast, so routes know every model at once); the loader thread then checks the sha256 sums,
builds the backend (with ``--backend auto``, the fastest of those that match Paddle Inference:
serve/autoselect.py) and runs a few dummy batches. Until that is done a model answers 503, and a
bundle that fails any step is refused with a log line and reports the reason, while the others serve.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from flask import current_app

from common.bundle import CONFIG_FILE, MANIFEST_FILE, Bundle, read_bundle

from . import autoselect
from .batching import DynamicBatcher
from .errors import ApiError
from .pipelines import pipeline_for

log = logging.getLogger("serve")

LOADING, READY, FAILED = "loading", "ready", "failed"


@dataclass
class ModelVersion:
    """One version of one model and where it stands."""

    name: str
    version: str
    path: Path
    state: str = LOADING
    reason: str = ""
    bundle: Bundle | None = None
    pipeline: object = None  # the friendly API's DigitPipeline / FeaturePipeline, None: V2 only
    runner: object = None  # a backend, or a DynamicBatcher around one
    platform: str = ""  # the backend serving it: paddle_inference, onnxruntime, openvino, paddle_tensorrt
    selection: dict | None = None  # how that backend was chosen, the table of candidates (GET .../stats)

    @property
    def kind(self) -> str | None:
        """The friendly endpoint this version serves ("digit", "house"), None for V2 only."""
        return self.pipeline.kind if self.pipeline else None


@dataclass
class Model:
    """A named model: its versions by number, the highest being the default."""

    name: str
    versions: dict[str, ModelVersion] = field(default_factory=dict)

    @property
    def default(self) -> ModelVersion:
        return self.versions[max(self.versions, key=int)]


def _is_bundle(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() or (path / MANIFEST_FILE).is_file()


NO_BUNDLES_HINT = ("export one with `python -m export --checkpoint CKPT --out DIR/NAME` "
                   "(scripts/quickstart.py writes bundles/), or point --models / SERVE_MODELS at a folder of bundles")


def discover(root: Path) -> dict[str, Model]:
    """Models under ``root`` (or ``root`` itself when it is a bundle), by name.

    ``ValueError`` ("no bundles in ROOT ...") when there is none: a server with nothing to serve
    would start and never become ready, so it refuses to start instead.
    """
    if not root.is_dir():
        raise ValueError(f"no bundles in {root}: the folder does not exist; {NO_BUNDLES_HINT}")
    folders = [root] if _is_bundle(root) else sorted(p for p in root.iterdir() if p.is_dir())
    models = {}
    for folder in folders:
        if _is_bundle(folder):
            versions = {"1": folder}
        else:
            versions = {p.name: p for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and _is_bundle(p)}
            versions = {str(int(v)): p for v, p in versions.items()}  # "01" and "1" are the same version
        if not versions:
            log.warning("skipping %s: neither a bundle nor a folder of numbered bundle versions", folder)
            continue
        models[folder.name] = Model(folder.name, {v: ModelVersion(folder.name, v, p) for v, p in versions.items()})
    if not models:
        raise ValueError(f"no bundles in {root}: expected {root}/NAME/ or {root}/NAME/VERSION/ folders holding "
                         f"{CONFIG_FILE} and {MANIFEST_FILE}; {NO_BUNDLES_HINT}")
    return models


def current() -> "Registry":
    """The registry of the app handling this request."""
    return current_app.extensions["registry"]


class Registry:
    """All models, their load state, and lookups that turn absence into 404 and loading into 503."""

    def __init__(self, settings: dict, metrics=None, busy=None):
        self.settings, self.metrics, self.busy = settings, metrics, busy
        self.models = discover(Path(settings["MODELS"]))
        self.done = threading.Event()
        for mv in self.all_versions():
            self._peek(mv)

    def all_versions(self) -> list[ModelVersion]:
        return [mv for model in self.models.values() for mv in model.versions.values()]

    def start(self) -> None:
        """Load every model in a background thread, so liveness answers at once."""
        threading.Thread(target=self._load_all, name="model-loader", daemon=True).start()

    def _peek(self, mv: ModelVersion) -> None:
        """Read the YAML (no checksums yet) so the task and input are known before loading."""
        try:
            mv.bundle = read_bundle(mv.path, verify=False)  # also checks Global.task, Inputs and Outputs
            mv.pipeline = pipeline_for(mv.bundle)  # refuses a PreProcess this server does not implement
        except Exception as exc:  # noqa: BLE001  whatever is wrong with one bundle refuses it, not the server
            mv.bundle = mv.pipeline = None  # so lookups by kind never touch a bundle that could not be read
            self._refuse(mv, exc)
        self._report(mv)

    def _load_all(self) -> None:
        for mv in self.all_versions():
            if mv.state == LOADING:
                self._load(mv)
                self._report(mv)
        self.done.set()
        ready = sum(mv.state == READY for mv in self.all_versions())
        log.info("%d of %d model versions ready", ready, len(self.all_versions()))

    def _load(self, mv: ModelVersion) -> None:
        """Verify, build the backend, warm up; any failure refuses this version only."""
        started = time.perf_counter()
        try:
            mv.bundle = read_bundle(mv.path, verify=True)
            mv.pipeline = pipeline_for(mv.bundle)
            # A bundle exported with a fixed batch N runs exactly N samples per call (FixedBatch pads
            # and splits): warm up with N, and let the batcher fill calls up to N.
            max_batch = mv.bundle.fixed_batch or self.settings["MAX_BATCH_SIZE"]
            warmup = [mv.bundle.zeros(mv.bundle.fixed_batch or 1)] * self.settings["WARMUP_BATCHES"]
            if self.settings["DYNAMIC_BATCHING"]:
                warmup.append(mv.bundle.zeros(max_batch))
            backend, mv.selection = autoselect.select(mv.bundle, self.settings, warmup, max_batch)
            mv.runner, mv.platform = backend, backend.name
            if self.settings["DYNAMIC_BATCHING"]:
                mv.runner = DynamicBatcher(backend, max_batch, self.settings["MAX_DELAY_MS"],
                                           self.settings["POOL_TIMEOUT_S"], self._batch_observer(mv),
                                           busy=self.busy)
        except Exception as exc:  # noqa: BLE001  any failure (bad bundle, Paddle error) refuses this model only
            self._refuse(mv, exc)
            return
        mv.state = READY
        log.info("model %r version %s backends (%s; parity on %s):\n  %s", mv.name, mv.version,
                 mv.selection["selected_by"], mv.selection.get("parity_inputs", "-"),
                 "\n  ".join(autoselect.table_lines(mv.selection)))
        log.info("model %r version %s ready (%s, %s, %.2f s)", mv.name, mv.version, mv.kind or "V2 only",
                 mv.platform, time.perf_counter() - started)

    def _refuse(self, mv: ModelVersion, exc: Exception) -> None:
        mv.state, mv.reason = FAILED, f"{type(exc).__name__}: {exc}"
        log.error("REFUSING model %r version %s from %s: %s", mv.name, mv.version, mv.path, mv.reason)

    def _report(self, mv: ModelVersion) -> None:
        if self.metrics:
            self.metrics.model_state(mv.name, mv.version, mv.state)
            if mv.selection:
                self.metrics.model_backends(mv.name, mv.version, mv.selection["backends"])

    def _batch_observer(self, mv: ModelVersion):
        return (lambda n: self.metrics.batch_size.labels(mv.name).observe(n)) if self.metrics else None

    # ---- lookups used by the routes -------------------------------------------------------

    def find(self, name: str, version: str | None = None) -> ModelVersion:
        """The model version, whatever its state; 404 if there is no such model or version."""
        model = self.models.get(name)
        if model is None:
            raise ApiError(404, "model_not_found", f"no model named {name!r}; "
                           f"available: {', '.join(sorted(self.models)) or 'none'}")
        if version is None:
            return model.default
        mv = model.versions.get(version.lstrip("0") or "0") if version.isdigit() else None
        if mv is None:
            raise ApiError(404, "version_not_found", f"model {name!r} has no version {version!r}; "
                           f"available: {', '.join(sorted(model.versions, key=int))}")
        return mv

    def ready(self, name: str, version: str | None = None) -> ModelVersion:
        """The model version if it can serve; 404 if unknown, 503 if loading or refused."""
        mv = self.find(name, version)
        return self._check_ready(mv)

    def for_kind(self, kind: str, name: str | None, version: str | None) -> ModelVersion:
        """The model named, or else the first (by name) ready model whose default version serves ``kind``
        ("digit" or "house", as its bundle's PreProcess declares)."""
        if name:
            mv = self.find(name, version)
            if mv.bundle is not None and mv.kind != kind:
                raise ApiError(404, "model_not_found", f"model {name!r} does not serve /predict/{kind} "
                               f"({'its bundle has no PreProcess: use /v2' if mv.kind is None else 'it is a ' + mv.kind + ' model'})")
            return self._check_ready(mv)
        candidates = [m for m in sorted(self.models.values(), key=lambda m: m.name) if m.default.kind == kind]
        if not candidates:
            raise ApiError(404, "model_not_found", f"no model serving /predict/{kind} is loaded")
        # A refused or loading model must not shadow a ready one that sorts after it.
        ready = [m for m in candidates if m.default.state == READY]
        return self._check_ready(self.find((ready or candidates)[0].name, version))

    @staticmethod
    def _check_ready(mv: ModelVersion) -> ModelVersion:
        if mv.state == LOADING:
            raise ApiError(503, "not_ready", f"model {mv.name!r} version {mv.version} is still loading",
                           {"Retry-After": "1"})
        if mv.state == FAILED:
            raise ApiError(503, "model_unavailable",
                           f"model {mv.name!r} version {mv.version} was refused at load: {mv.reason}")
        return mv

    def is_ready(self) -> bool:
        """Loading is over and at least one model serves."""
        return self.done.is_set() and any(mv.state == READY for mv in self.all_versions())
