"""What the deployment tests share: small real bundles, server processes, the image's command, the manifests.

The deployment tests check how the service is started, packaged and rolled out, not how accurate it
is, so their bundles come from a few training steps (seconds), exported and parity-checked like any
other bundle.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import jsonschema
import kubernetes_validate
import numpy as np
import requests
import yaml
from referencing import Registry, Resource

from .conftest import ROOT
from .servers import free_port, stop_group

KUBERNETES = ROOT / "deploy" / "kubernetes"
INFERENCE_SERVICE = ROOT / "deploy" / "kserve" / "inferenceservice.yaml"
KSERVE_SCHEMA = ROOT / "tests" / "schemas" / "kserve-inferenceservice-v1beta1.json"
HOUSE = {"CRIM": 0.00632, "ZN": 18, "INDUS": 2.31, "CHAS": 0, "NOX": 0.538, "RM": 6.575, "AGE": 65.2,
         "DIS": 4.09, "RAD": 1, "TAX": 296, "PTRATIO": 15.3, "B": 396.9, "LSTAT": 4.98}


def export_small_bundles(models: Path, runs: Path, data_dir: Path) -> Path:
    """``models/mnist/1`` and ``models/housing/1``: two steps of the course CNN, three housing epochs."""
    import train
    from export import export_checkpoint

    digits = train.run(train.TrainConfig("mnist", model="course_cnn", epochs=1, train_subset=256, val_size=0,
                                         data_dir=str(data_dir), output=str(runs / "mnist"), progress=False))
    houses = train.run(train.TrainConfig("housing", epochs=3, val_size=0, data_dir=str(data_dir),
                                         output=str(runs / "housing"), progress=False))
    export_checkpoint(digits["best_checkpoint"], models / "mnist" / "1", force=True)
    export_checkpoint(houses["best_checkpoint"], models / "housing" / "1", force=True)
    return models


def drawn_digit_png(digit: str = "7") -> bytes:
    """A digit as a person draws it: thick dark strokes on a white 280x280 canvas, PNG-encoded."""
    canvas = np.full((280, 280), 255, np.uint8)
    cv2.putText(canvas, digit, (70, 230), cv2.FONT_HERSHEY_SIMPLEX, 8, 0, 24, cv2.LINE_AA)
    return cv2.imencode(".png", canvas)[1].tobytes()


class Process:
    """A server process started by a test, its log, and how to stop it (only it, by its own id)."""

    def __init__(self, argv: list[str], *, cwd: Path, env: dict, log: Path, url: str):
        self.url, self.log_path = url, log
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                     start_new_session=True)  # its own group: the workers go with it

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_ready(self, timeout: float = 180, workers: int = 1) -> float:
        """Seconds until ``/v2/health/ready`` answers 200 and ``workers`` processes have loaded their models.

        Every worker loads the models itself, and /v2/health/ready answers for the worker that
        happens to take the request: one ready answer does not mean that the others are, so their
        "model versions ready" log lines are counted too. Fails with the log if the process dies first.
        """
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                ready = requests.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200
            except (requests.ConnectionError, requests.Timeout):  # nothing listens until a worker's models load
                ready = False
            if ready and self.log_path.read_text(errors="replace").count("model versions ready") >= workers:
                return time.monotonic() - start
            time.sleep(0.5)
        raise AssertionError(f"not ready after {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 40) -> int | None:
        """SIGTERM, as ``docker stop`` and Kubernetes send it; the exit status, or None if it had to be killed."""
        return stop_group(self.proc, timeout)


# --- the image's command, run as a plain process --------------------------------------------------


class ImageRun:
    """An image's CMD prepared to run here: its /app laid out, its ENV with the image's paths mapped.

    Mapped, and nothing else: /opt/venv -> this interpreter's environment, /app -> ``root/app``
    (what the COPY lines put there), /models -> ``models`` (a mounted folder), /tmp -> ``root/tmp``
    (also TMPDIR: where Python's temporary files go in the image), the image's port 8000 -> a
    free port on 127.0.0.1 (what ``docker run -p`` does). ``env`` holds the image's ENV only,
    plus ``overrides`` (``docker run -e``); nothing is inherited from the test's environment.
    """

    def __init__(self, image, root: Path, models: Path, overrides: dict[str, str] | None = None):
        from .dockerfile import build_context, ignore_rules

        self.image, self.root, self.port = image, root, free_port()
        (root / "tmp").mkdir(parents=True)
        lay_out_app(image, root / "app", build_context(ROOT, ignore_rules(ROOT / ".dockerignore")))
        places = {"/opt/venv": str(Path(sys.prefix)), "/app": str(root / "app"), "/models": str(models),
                  "/tmp": str(root / "tmp")}
        pattern = re.compile(r"(?<![\w/])(" + "|".join(map(re.escape, places)) + r")(?=/|:|$)")
        port = f"127.0.0.1:{self.port}"
        # one pass: a path already mapped is never mapped again
        self.to_here = lambda text: pattern.sub(lambda m: places[m.group(1)], text.replace("0.0.0.0:8000", port))
        self.env = {key: self.to_here(value) for key, value in {**image.env, **(overrides or {})}.items()}
        self.env["TMPDIR"] = str(root / "tmp")
        self.cwd = Path(self.to_here(image.workdir))
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, log: Path) -> Process:
        argv = [self.to_here(word) for word in self.image.cmd]
        return Process(argv, cwd=self.cwd, env=self.env, log=log, url=self.url)


def lay_out_app(image, app: Path, context: list[str]) -> None:
    """Copy into ``app`` what the image's COPY lines put under its WORKDIR, from the build context's files."""
    for sources, destination in image.copies:
        if not destination.startswith(image.workdir + "/"):
            continue  # e.g. the requirements file copied to /tmp for pip, deleted in the same layer
        there = Path(destination.replace(image.workdir, str(app), 1))
        for source in sources:
            chosen = [f for f in context if f == source or f.startswith(source.rstrip("/") + "/")]
            assert chosen, f"COPY {source}: nothing in the build context (.dockerignore leaves it out?)"
            for relative in chosen:
                if relative == source:  # a file: to the destination, or into it when that is a folder
                    target = there / Path(source).name if destination.endswith("/") else there
                else:  # a folder's contents, below the destination
                    target = there / relative[len(source.rstrip("/")) + 1:]
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / relative, target)


# --- the manifests, and what the image installs ---------------------------------------------------


def manifests() -> dict[str, dict]:
    """Every object under deploy/kubernetes/, by kind."""
    objects = [doc for path in sorted(KUBERNETES.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]
    kinds = [o["kind"] for o in objects]
    assert len(kinds) == len(set(kinds)), f"one object of each kind expected: {kinds}"
    return {o["kind"]: o for o in objects}


def inference_service() -> dict:
    return yaml.safe_load(INFERENCE_SERVICE.read_text())


def kserve_validator() -> jsonschema.Draft202012Validator:
    """The InferenceService schema, its Kubernetes references resolved from kubernetes-validate's strict definitions."""
    version = kubernetes_validate.utils.latest_version()
    definitions = kubernetes_validate.utils.schema_contents(
        f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version)
    schema = json.loads(KSERVE_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    registry = Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))
    return jsonschema.Draft202012Validator(schema, registry=registry)


def dependency_closure(names: set[str]) -> set[str]:
    """``names`` and everything they require (as installed here, environment markers applied)."""
    import importlib.metadata as md

    from packaging.requirements import Requirement

    seen, todo = set(), list(names)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        seen.add(name)
        for text in md.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return seen
