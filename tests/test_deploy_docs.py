"""The deployment sections of the docs, command by command, as tests/test_course.py does for the guide.

README "Scaling out", docs/SERVING.md "Container" and "Kubernetes and KServe", docs/COURSE.md
"On AI Studio": every line of their ```bash blocks must be claimed by one of the checks below (a
line nobody claims fails ``test_every_command_is_checked``). A check runs its lines where they can
run here (``docker run`` as the image's command, the release copies on temporary folders, the AI
Studio lines with a temporary HOME), and otherwise checks them against what they name: the
Dockerfile's stages and settings, the manifests' names, patches applied offline and validated.
The Prometheus scrape config is checked by applying its relabelling; links must resolve.
"""
from __future__ import annotations

import copy
import filecmp
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import requests
import yaml

from serve import config as serve_config
from train.config import config_from_args, resolve

from .conftest import ROOT, run_module
from .deploy_helpers import (HOUSE, ImageRun, Process, dependency_closure, drawn_digit_png,
                             export_small_bundles, free_port, inference_service, kserve_validator, manifests)
from .dockerfile import read_image
from .packaging_helpers import declared

SECTIONS = ((ROOT / "README.md", "Scaling out"), (ROOT / "docs" / "SERVING.md", "Container"),
            (ROOT / "docs" / "SERVING.md", "Kubernetes and KServe"), (ROOT / "docs" / "COURSE.md", "On AI Studio"))
VOLUME = "/mnt/paddle-d2s-bundles"  # where the docs mount the bundle volume on the publishing machine
KINDS = {  # what a command line starts with -> the check that claims it
    "docker build": r"docker build ", "docker run": r"docker run ", "docker tag": r"docker tag ",
    "docker push": r"docker push ", "kubectl apply": r"kubectl apply ", "kubectl rollout": r"kubectl rollout ",
    "kubectl port-forward": r"kubectl port-forward ", "kubectl get": r"kubectl get ",
    "kubectl patch": r"kubectl patch ", "export": r"python -m export ", "train": r"python -m train ",
    "launch": r"python -m paddle\.distributed\.launch ", "publish": rf"(cp|mv) .*{re.escape(VOLUME)}/",
    "python -c": r"python -c ", "pip install": r"pip install ", "data copy": r"mkdir -p ~/work/data && cp ",
}


def section(path: Path, title: str) -> str:
    """A ``## title`` section of a Markdown file, up to the next ``## `` heading."""
    text = path.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def blocks(language: str) -> list[str]:
    return [b for path, title in SECTIONS for b in re.findall(rf"```{language}\n(.*?)```", section(path, title), re.S)]


def commands() -> list[tuple[str, str]]:
    """``(command, comment)`` for every line of the sections' bash blocks, continuations joined."""
    found = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            command, _, comment = line.partition(" #")
            if command.strip() and not command.strip().startswith("#"):
                found.append((command.strip(), comment.strip()))
    return found


def kind(command: str) -> str | None:
    return next((name for name, pattern in KINDS.items() if re.match(pattern, command)), None)


def of_kind(name: str) -> list[tuple[str, str]]:
    chosen = [(c, comment) for c, comment in commands() if kind(c) == name]
    assert chosen, f"no {name!r} line in the docs any more: drop its check"
    return chosen


def options(words: list[str], flags_with_values: set[str]) -> tuple[dict[str, list[str]], list[str]]:
    """``{flag: [values]}`` and the positional words of a command's arguments."""
    flags, positional, i = {}, [], 0
    while i < len(words):
        if words[i] in flags_with_values:
            flags.setdefault(words[i], []).append(words[i + 1])
            i += 2
            continue
        if words[i].startswith("-"):
            flags.setdefault(words[i], [])  # a switch: present, no value
        else:
            positional.append(words[i])
        i += 1
    return flags, positional


@pytest.fixture(scope="module")
def small(data_dir, tmp_path_factory) -> Path:
    """A folder holding ``models/`` (mnist/1, housing/1) and the ``runs/`` they were exported from."""
    base = tmp_path_factory.mktemp("docs")
    export_small_bundles(base / "models", base / "runs", data_dir)
    return base


def test_every_command_is_checked():
    unclaimed = [command for command, _ in commands() if kind(command) is None]
    assert not unclaimed, f"commands in the deployment docs that no test checks: {unclaimed}"
    assert len(commands()) >= 25


# --- docker ---------------------------------------------------------------------------------------


def built_images() -> dict[str, dict[str, str]]:
    """``{tag: build args}`` of the docs' ``docker build`` lines, each checked against the Dockerfile."""
    built = {}
    for command, _ in of_kind("docker build"):
        flags, positional = options(shlex.split(command)[2:], {"-t", "--build-arg"})
        assert positional == ["."], f"{command}: the build context is the repository root"
        args = dict(a.split("=", 1) for a in flags.get("--build-arg", []))
        _, stages, global_args = read_image(ROOT / "Dockerfile", args)
        assert args.keys() <= global_args.keys(), f"{command}: the Dockerfile has no such ARG"
        assert f"base-{global_args['VARIANT']}" in {s.name for s in stages}, f"{command}: no such variant"
        built[flags["-t"][0]] = args
    return built


def run_settings(command: str) -> tuple[dict[str, list[str]], dict[str, str], str]:
    """A ``docker run`` line's flags, its -e settings and its image, checked against the image."""
    flags, positional = options(shlex.split(command)[2:], {"-p", "-v", "-e", "--gpus"})
    image_tag = positional[-1]
    image, _, _ = read_image(ROOT / "Dockerfile", built_images()[image_tag])
    (published,) = flags["-p"]
    assert published.split(":")[-1] in image.expose, f"{command}: the image listens on {image.expose}"
    (mount,) = flags["-v"]
    assert mount.split(":")[1] == image.env["SERVE_MODELS"], f"{command}: bundles go to {image.env['SERVE_MODELS']}"
    settings = dict(e.split("=", 1) for e in flags.get("-e", []))
    for key, value in settings.items():  # settings the server reads, with values it accepts
        name = key.removeprefix("SERVE_")
        assert key.startswith("SERVE_") and name in serve_config.DEFAULTS, key
        serve_config._parse(name, value)
    return flags, settings, image_tag


def server_env(image, settings: dict[str, str]) -> dict[str, str]:
    """The container's environment: the image's ENV, then the line's -e settings."""
    return {**image.env, **settings}


def test_docker_lines_name_the_dockerfile_and_the_manifests():
    built = built_images()
    for command, comment in of_kind("docker run"):
        flags, settings, tag = run_settings(command)
        gpu = built[tag].get("VARIANT") == "gpu"
        assert gpu == ("--gpus" in flags) == (settings.get("SERVE_DEVICE") == "gpu"), command
        arithmetic = re.match(r"(\d+) cores: (\d+) x (\d+) x (\d+)$", comment)
        if arithmetic:  # the comment's thread arithmetic is what the settings give
            env = server_env(read_image(ROOT / "Dockerfile")[0], settings)
            product = [int(env[k]) for k in ("SERVE_WORKERS", "SERVE_POOL_SIZE", "SERVE_THREADS")]
            assert [int(g) for g in arithmetic.groups()[1:]] == product, command
            assert int(arithmetic.group(1)) == product[0] * product[1] * product[2], command
    (tag_line,), (push_line,) = of_kind("docker tag"), of_kind("docker push")
    source, target = shlex.split(tag_line[0])[2:]
    assert source in built and shlex.split(push_line[0])[2:] == [target]
    deployment = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert target == deployment["image"] == inference_service()["spec"]["predictor"]["containers"][0]["image"]


def test_docker_run_lines_serve(small, tmp_path):
    """Each CPU ``docker run`` line starts as the container would, with its -e settings, and serves."""
    started = 0
    for i, (command, _) in enumerate(of_kind("docker run")):
        flags, settings, tag = run_settings(command)
        if "--gpus" in flags:
            continue  # needs a GPU build; checked above against the settings it names
        image, _, _ = read_image(ROOT / "Dockerfile", built_images()[tag])
        server = ImageRun(image, tmp_path / f"run{i}", small / "models", settings).start(tmp_path / f"run{i}.log")
        try:
            server.wait_ready(timeout=240, workers=int(server_env(image, settings)["SERVE_WORKERS"]))
            answer = requests.post(f"{server.url}/predict/house", json=HOUSE, timeout=30)
            assert answer.status_code == 200, answer.text
        finally:
            assert server.stop() == 0, server.log()
        started += 1
    assert started >= 2


# --- kubectl --------------------------------------------------------------------------------------


def apply_json_patch(document: dict, patch: list[dict]) -> dict:
    """RFC 6902 add / remove / replace, enough for the docs' patches (kubectl applies the same)."""
    result = copy.deepcopy(document)
    for operation in patch:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in operation["path"].split("/")[1:]]
        node = result
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key = int(last) if isinstance(node, list) else last
        if operation["op"] == "remove":
            del node[key]
        elif operation["op"] == "replace":
            node[key]  # must exist: a KeyError here is kubectl's "path not found"
            node[key] = operation["value"]
        else:
            assert operation["op"] == "add", operation
            node[key] = operation["value"]
    return result


def published_release() -> str:
    """The release the docs' copy commands publish (the target of their final ``mv``)."""
    (move,) = [c for c, _ in of_kind("publish") if c.startswith("mv ")]
    return shlex.split(move)[-1].removeprefix(VOLUME + "/")


def test_kubectl_lines_name_what_the_manifests_define():
    objects, isvc = manifests(), inference_service()
    names = {"deployment": objects["Deployment"]["metadata"]["name"], "service": objects["Service"]["metadata"]["name"],
             "inferenceservice": isvc["metadata"]["name"]}
    for command, _ in of_kind("kubectl apply"):
        target = ROOT / shlex.split(command)[3]
        assert target in {ROOT / "deploy" / "kubernetes", ROOT / "deploy" / "kserve" / "inferenceservice.yaml"}, \
            f"{command}: tests/test_kubernetes.py validates deploy/kubernetes/ and the InferenceService"
        assert target.exists()
    for command, _ in of_kind("kubectl rollout") + of_kind("kubectl port-forward") + of_kind("kubectl get"):
        words = shlex.split(command)
        if words[1] == "get":  # kubectl get KIND NAME
            resource, name = words[2], words[3]
        else:  # kubectl rollout VERB KIND/NAME, kubectl port-forward KIND/NAME PORTS
            resource, _, name = words[3 if words[1] == "rollout" else 2].partition("/")
        assert names[resource] == name, command
        if words[1] == "port-forward":
            assert int(words[3].split(":")[1]) == objects["Service"]["spec"]["ports"][0]["port"], command


def test_kubectl_patches_apply_and_validate():
    """The rollout patch points the pods at the published release.

    The KServe patches make a valid canary, and from it a valid promotion and a valid rollback.
    """
    objects, isvc, validator = manifests(), inference_service(), kserve_validator()
    lines = [shlex.split(command) for command, _ in of_kind("kubectl patch")]
    patches = [(words[2], words[3], json.loads(words[-1])) for words in lines]
    (deployment_patch,) = [p for resource, name, p in patches if resource == "deployment"]
    rolled = apply_json_patch(objects["Deployment"], deployment_patch)
    kubernetes_validate.validate(rolled, kubernetes_validate.utils.latest_version(), strict=True)
    (bundles,) = [m for m in rolled["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
                  if m["mountPath"] == objects["ConfigMap"]["data"]["SERVE_MODELS"]]
    assert bundles["subPath"] == published_release(), "the patch must change the bundles' mount"
    assert rolled["spec"]["template"] != objects["Deployment"]["spec"]["template"], "a new template rolls the pods"

    canary, promote, rollback = [p for resource, name, p in patches if resource == "inferenceservice"]
    assert all(name == isvc["metadata"]["name"] for resource, name, _ in patches if resource == "inferenceservice")
    on_canary = apply_json_patch(isvc, canary)
    for result in (on_canary, apply_json_patch(on_canary, promote), apply_json_patch(on_canary, rollback)):
        assert not [e.message for e in validator.iter_errors(result)]
    predictor = on_canary["spec"]["predictor"]
    env = {e["name"]: e["value"] for e in predictor["containers"][0]["env"]}
    assert env["STORAGE_URI"].endswith("/" + published_release()) and predictor["canaryTrafficPercent"] == 10
    assert "canaryTrafficPercent" not in apply_json_patch(on_canary, promote)["spec"]["predictor"]
    assert apply_json_patch(on_canary, rollback)["spec"]["predictor"]["canaryTrafficPercent"] == 0


# --- a new model version: export, publish a release, serve it ------------------------------------


def test_publishing_a_release_serves_both_versions(small, tmp_path):
    """The export and copy lines, run on temporary folders.

    Release 2 serves versions 1 and 2 of the digits model; release 1 is untouched.
    """
    volume, work = tmp_path / "volume", tmp_path / "work"
    shutil.copytree(small / "models", volume / "releases" / "1")
    work.mkdir()
    (export_line,) = of_kind("export")
    words = shlex.split(export_line[0])
    flags, _ = options(words[3:], {"--checkpoint", "--out"})
    assert re.fullmatch(r"bundles/mnist/\d+", flags["--out"][0]), "a numbered version folder"
    words[words.index("--checkpoint") + 1] = str(small / "runs" / "mnist" / "checkpoints" / "best.pdckpt")
    words[words.index("--out") + 1] = str(work / flags["--out"][0])  # the docs' relative path, under work/
    run_module(*words[2:], timeout=300)
    before = {p: p.stat().st_mtime_ns for p in (volume / "releases" / "1").rglob("*")}

    for command, _ in of_kind("publish"):
        subprocess.run(["bash", "-c", command.replace(VOLUME, str(volume))], cwd=work, check=True, timeout=60)
    release = volume / published_release()
    assert sorted(p.name for p in (volume / "releases").iterdir()) == ["1", release.name], "no partial release left"
    assert {p: p.stat().st_mtime_ns for p in (volume / "releases" / "1").rglob("*")} == before
    weights = Path("housing") / "1" / "inference.pdiparams"
    assert (release / weights).stat().st_ino == (volume / "releases" / "1" / weights).stat().st_ino, \
        "the previous release's bundles are hard-linked, not copied"

    port = free_port()
    server = Process([sys.executable, "-m", "serve", "--models", str(release), "--port", str(port), "--workers", "1"],
                     cwd=ROOT,
                     env={**os.environ, "PYTHONUNBUFFERED": "1"}, log=tmp_path / "serve.log",
                     url=f"http://127.0.0.1:{port}")
    try:
        server.wait_ready(timeout=180)
        versions = requests.get(f"{server.url}/v2/models/mnist", timeout=30).json()["versions"]
        assert sorted(versions) == ["1", "2"], versions
        png = {"data": drawn_digit_png(), "headers": {"Content-Type": "image/png"}, "timeout": 30}
        assert requests.post(f"{server.url}/predict/digit", **png).json()["version"] == "2"  # the highest: default
        assert requests.post(f"{server.url}/predict/digit?version=1", **png).json()["version"] == "1"
    finally:
        server.stop()


# --- AI Studio, and the training launcher ---------------------------------------------------------


def ai_studio_extras(command: str) -> list[str]:
    """The extras of the AI Studio install line, ``pip install -e ".[a,b]"`` (the toolkit, in place)."""
    words = shlex.split(command)
    match = re.fullmatch(r"\.\[([\w,]+)\]", words[3]) if words[:3] == ["pip", "install", "-e"] else None
    assert match and len(words) == 4, f"not an install of the toolkit with extras: {command}"
    return match.group(1).split(",")


def third_party_imports() -> set[str]:
    """Top-level modules imported by the toolkit's packages and the notebook's code cells."""
    import ast

    import nbformat

    sources = [p.read_text() for folder in ("train", "export", "serve", "common", "models")
               for p in (ROOT / folder).rglob("*.py")]
    notebook = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    sources += [c.source for c in notebook.cells if c.cell_type == "code"]
    modules = set()
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module.split(".")[0])
    local = {"train", "export", "serve", "common", "models"}
    return {m for m in modules if m not in sys.stdlib_module_names and m not in local}


def test_ai_studio_requirements_cover_the_notebook():
    """The AI Studio line's extras + Paddle's own dependencies = every import, except opt-in extras."""
    import importlib.metadata as md

    (pip_line,) = of_kind("pip install")
    listed = {re.sub(r"[-_.]+", "-", r.name).lower() for r in declared(ai_studio_extras(pip_line[0]))}
    assert not listed & {"paddlepaddle", "paddlepaddle-gpu"}, "AI Studio's image brings its own Paddle"
    owners = md.packages_distributions()
    # Opt-in extras: the ONNX file and its runtimes (export and --backend auto skip them, with a note,
    # when they are not installed); Jupyter brings IPython itself.
    extras = {"paddle2onnx", "onnx", "onnxruntime", "openvino", "ipython"}
    provided = dependency_closure(listed | {"paddlepaddle"}) | extras
    needed = {re.sub(r"[-_.]+", "-", owners[m][0]).lower() for m in third_party_imports() if m in owners}
    assert needed <= provided, f"imported, but neither listed nor brought by Paddle: {needed - provided}"
    assert {m for m in third_party_imports() if m not in owners} == set(), "imports of packages not installed here"


def test_ai_studio_lines_run(tmp_path, data_dir):
    """Run with a fresh HOME whose Paddle cache holds the official files: Paddle checks them and downloads nothing."""
    home = tmp_path / "home"
    for name in ("mnist", "uci_housing"):
        shutil.copytree(data_dir / name, home / ".cache" / "paddle" / "dataset" / name)
    env = {**os.environ, "HOME": str(home)}
    python_lines = [c for c, _ in of_kind("python -c")]
    assert len(python_lines) == 2
    for command in python_lines:
        words = shlex.split(command)
        proc = subprocess.run([sys.executable, *words[1:]], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    (pip_line,) = of_kind("pip install")
    for requirement in declared(ai_studio_extras(pip_line[0])):  # offline: what is installed here satisfies it
        installed = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(installed, prereleases=True), (str(requirement), installed)

    (copy_line,) = of_kind("data copy")
    subprocess.run(["bash", "-c", copy_line[0]], cwd=tmp_path, env=env, check=True, timeout=60)
    kept = home / "work" / "data"
    for name in ("mnist", "uci_housing"):
        comparison = filecmp.dircmp(data_dir / name, kept / name)
        assert not (comparison.left_only or comparison.diff_files), comparison.report()

    (train_line,) = of_kind("train")
    argv = shlex.split(train_line[0])[3:]
    config = config_from_args(argv)
    resolve(config)  # the real parser and validation; the GPU run itself needs a GPU
    assert Path(os.path.expanduser(config.data_dir.replace("~", str(home), 1))) == kept, "trains on the kept copy"


def test_launch_line_uses_real_flags():
    """Paddle's launcher knows the flags; the training flags after the script pass the toolkit's parser."""
    help_text = subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--help"], capture_output=True,
                               text=True, timeout=120).stdout
    for command, _ in of_kind("launch"):
        words = shlex.split(command)
        script = words.index("train/__main__.py")
        for flag in (w for w in words[3:script] if w.startswith("--")):
            assert re.search(rf"(^|[\s,]){re.escape(flag)}\b", help_text), f"{command}: launcher has no {flag}"
        resolve(config_from_args(words[script + 1:]))


# --- Prometheus, links ----------------------------------------------------------------------------


def relabel(labels: dict[str, str], rules: list[dict]) -> dict[str, str] | None:
    """Prometheus's relabelling (keep and replace actions), or None if a rule drops the target."""
    labels = dict(labels)
    for rule in rules:
        value = rule.get("separator", ";").join(labels.get(name, "") for name in rule.get("source_labels", []))
        match = re.fullmatch(rule.get("regex", "(.*)"), value)
        action = rule.get("action", "replace")
        if action == "keep":
            if not match:
                return None
        elif action == "replace":
            if match:
                replacement = rule.get("replacement", "$1")
                labels[rule["target_label"]] = re.sub(r"\$(?:\{(\d+)\}|(\d+))",
                                                      lambda m: match.group(int(m.group(1) or m.group(2))) or "",
                                                      replacement)
        else:
            raise AssertionError(f"relabel action {action!r} not modelled here")
    return labels


def test_scrape_config_finds_every_pod_at_its_metrics():
    (scrape,) = [yaml.safe_load(b) for b in blocks("yaml")]
    (job,) = scrape["scrape_configs"]
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}], "one target per pod, not per Service"
    template = manifests()["Deployment"]["spec"]["template"]
    meta = {f"__meta_kubernetes_pod_annotation_{re.sub(r'[^a-zA-Z0-9_]', '_', k)}": v
            for k, v in template["metadata"]["annotations"].items()}
    pod = {"__address__": "10.1.2.3:8000", "__metrics_path__": "/metrics", "__meta_kubernetes_namespace": "serving",
           "__meta_kubernetes_pod_name": "paddle-d2s-serve-7d9f-x2x4q", **meta}
    target = relabel(pod, job["relabel_configs"])
    assert target["__address__"] == "10.1.2.3:8000" and target["__metrics_path__"] == "/metrics"
    assert target["pod"] == "paddle-d2s-serve-7d9f-x2x4q" and target["namespace"] == "serving"
    unannotated = {k: v for k, v in pod.items() if "annotation" not in k}
    assert relabel(unannotated, job["relabel_configs"]) is None, "pods without the annotation are not scraped"
    metrics_source = (ROOT / "serve" / "metrics.py").read_text()
    for query in blocks("text"):
        for metric in re.findall(r"\b(serve_\w+?)(?:_bucket)?\[", query):
            assert f'"{metric.removesuffix("_total")}' in metrics_source, f"serve/metrics.py defines no {metric}"


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_in_the_sections_resolve():
    for path, title in SECTIONS:
        for target in re.findall(r"\]\(([^)\s]+)\)", section(path, title)):
            if target.startswith(("http://", "https://")):
                continue
            file, _, anchor = target.partition("#")
            linked = (path.parent / file).resolve() if file else path
            assert linked.is_file(), f"{path.name} '{title}': {target}"
            if anchor:
                headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.M)
                assert anchor in {github_anchor(h) for h in headings}, f"{path.name} '{title}': {target}"
