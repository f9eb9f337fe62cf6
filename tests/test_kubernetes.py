"""deploy/kubernetes/ and deploy/kserve/, offline: schemas first, then how the pieces fit each other and the server.

Kubernetes objects are validated with kubernetes-validate (the Kubernetes OpenAPI schemas, shipped
inside the package; strict: an unknown field is an error) for the oldest and newest Kubernetes
versions we claim. KServe's InferenceService is a custom resource, so it is validated against
tests/schemas/kserve-inferenceservice-v1beta1.json, written from KServe's API types (its $comment
says which), whose containers and pod fields refer to the same Kubernetes definitions.
"""
from __future__ import annotations

import copy
import re

import kubernetes_validate
import pytest

from serve import config as serve_config

from .conftest import ROOT
from .deploy_helpers import inference_service, kserve_validator, manifests
from .dockerfile import read_image

KUBERNETES_VERSIONS = ("1.28.0", kubernetes_validate.utils.latest_version())  # the oldest we claim, the newest known


def pod(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def container(deployment: dict) -> dict:
    (only,) = pod(deployment)["containers"]
    return only


def cores(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(version):
    objects = manifests()
    assert set(objects) == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler",
                            "PodDisruptionBudget", "PersistentVolumeClaim"}
    for kind, obj in objects.items():
        kubernetes_validate.validate(obj, version, strict=True)
    broken = copy.deepcopy(objects["Deployment"])
    container(broken)["readinesProbe"] = container(broken).pop("readinessProbe")  # a typo must not pass
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_inference_service_validates_against_the_kserve_schema():
    validator, isvc = kserve_validator(), inference_service()
    assert not [e.message for e in validator.iter_errors(isvc)]
    for breakage in ({"canaryTrafficPercent": 110}, {"scaleMetric": "latency"}, {"minReplica": 1}):
        broken = copy.deepcopy(isvc)
        broken["spec"]["predictor"].update(breakage)
        assert list(validator.iter_errors(broken)), breakage
    broken = copy.deepcopy(isvc)
    broken["spec"]["predictor"]["containers"][0]["readinesProbe"] = {}  # strict Kubernetes Container
    assert list(validator.iter_errors(broken))


def test_settings_are_the_servers_own():
    """Every SERVE_* key of the ConfigMap is a setting the server reads, with a value it accepts."""
    data = manifests()["ConfigMap"]["data"]
    for key, value in data.items():
        if not key.startswith("SERVE_"):
            assert key == "PROMETHEUS_MULTIPROC_DIR", key
            continue
        name = key[len("SERVE_"):]
        assert name in serve_config.DEFAULTS, f"{key}: the server has no such setting"
        serve_config._parse(name, value)  # raises ValueError for a value the server refuses
    image, _, _ = read_image(ROOT / "Dockerfile")
    assert data["SERVE_BIND"].rsplit(":", 1)[1] in image.expose, "the port the image exposes"
    assert data["PROMETHEUS_MULTIPROC_DIR"].startswith("/tmp/"), "per pod, on the pod's own emptyDir"


def test_resources_follow_the_thread_arithmetic():
    """CPUs = workers x predictors per model x math threads (docs/SERVING.md); KServe's target = 4 per worker."""
    data = manifests()["ConfigMap"]["data"]
    predictor_threads = int(data["SERVE_WORKERS"]) * int(data["SERVE_POOL_SIZE"]) * int(data["SERVE_THREADS"])
    isvc = inference_service()["spec"]["predictor"]
    for resources in (container(manifests()["Deployment"])["resources"], isvc["containers"][0]["resources"]):
        assert cores(resources["requests"]["cpu"]) == predictor_threads
        assert resources["limits"] == resources["requests"], "Guaranteed QoS: limits equal requests"
    assert isvc["containers"][0]["resources"] == container(manifests()["Deployment"])["resources"]
    assert isvc["scaleMetric"] == "concurrency"
    assert isvc["scaleTarget"] == 4 * int(data["SERVE_WORKERS"])


MODELS_MIB = 1.2 * 1024  # the workers with both models loaded, as deployment.yaml says (test_container measures it)


def test_memory_budgets_fit_beside_the_models():
    """What requests may hold (body and decode budgets, per worker, times the workers) fits in the pod's memory
    limit beside the loaded models (tests/test_hostile.py measures the whole under the costliest uploads)."""
    data = manifests()["ConfigMap"]["data"]
    settings = serve_config.resolve(serve_config.from_env({k: v for k, v in data.items() if k.startswith("SERVE_")}))
    per_worker = settings["BODY_BUDGET_MB"] + settings["DECODE_BUDGET_MB"]
    limit = container(manifests()["Deployment"])["resources"]["limits"]["memory"]
    assert limit.endswith("Gi")
    assert settings["WORKERS"] * per_worker + MODELS_MIB <= float(limit[:-2]) * 1024


def test_deployment_service_autoscaler_and_budget_fit_together():
    objects = manifests()
    deployment, data = objects["Deployment"], objects["ConfigMap"]["data"]
    serve, labels = container(deployment), deployment["spec"]["template"]["metadata"]["labels"]
    port = next(p for p in serve["ports"] if p["name"] == "http")
    assert port["containerPort"] == int(data["SERVE_BIND"].rsplit(":", 1)[1])
    assert serve["envFrom"] == [{"configMapRef": {"name": objects["ConfigMap"]["metadata"]["name"]}}]
    for probe, path in (("readinessProbe", "/v2/health/ready"), ("livenessProbe", "/v2/health/live"),
                        ("startupProbe", "/v2/health/live")):
        assert serve[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    # Zero downtime: a new pod is ready before an old one goes, and never fewer than one ready pod.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    for selector in (deployment["spec"]["selector"], objects["PodDisruptionBudget"]["spec"]["selector"]):
        assert selector["matchLabels"].items() <= labels.items()
    assert objects["Service"]["spec"]["selector"].items() <= labels.items()
    assert objects["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    target = objects["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert objects["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2, "one replica is no replica set"
    # Prometheus scrapes each pod at the server's own port and path.
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port["containerPort"]),
                           "prometheus.io/path": "/metrics"}


def test_pod_runs_as_the_image_user_on_a_read_only_root():
    """The image's non-root user; writes only to /tmp (an emptyDir), where the image puts HOME; bundles read-only."""
    deployment, data = manifests()["Deployment"], manifests()["ConfigMap"]["data"]
    image, _, _ = read_image(ROOT / "Dockerfile")
    uid, gid = map(int, image.user.split(":"))
    security = pod(deployment)["securityContext"]
    assert security["runAsNonRoot"] and (security["runAsUser"], security["runAsGroup"]) == (uid, gid)
    serve = container(deployment)
    assert serve["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"]: m for m in serve["volumeMounts"]}
    volumes = {v["name"]: v for v in pod(deployment)["volumes"]}
    assert image.env["HOME"] == "/tmp" and "emptyDir" in volumes[mounts["/tmp"]["name"]]
    bundles = mounts[data["SERVE_MODELS"]]
    assert bundles["readOnly"] and re.fullmatch(r"releases/\d+", bundles["subPath"])
    claim = volumes[bundles["name"]]["persistentVolumeClaim"]
    assert claim["claimName"] == manifests()["PersistentVolumeClaim"]["metadata"]["name"] and claim["readOnly"]


def test_inference_service_is_a_v2_custom_predictor_of_the_same_image():
    isvc, deployment = inference_service(), manifests()["Deployment"]
    (serve,) = isvc["spec"]["predictor"]["containers"]
    assert serve["name"] == "kserve-container", "the name KServe looks for"
    assert serve["image"] == container(deployment)["image"]
    (port,) = serve["ports"]  # Knative routes to exactly one port
    env = {e["name"]: e["value"] for e in serve["env"]}
    assert env["PROTOCOL"] == "v2"
    assert re.fullmatch(r"pvc://" + manifests()["PersistentVolumeClaim"]["metadata"]["name"] + r"/releases/\d+",
                        env["STORAGE_URI"]), "a release of the bundle volume (mounted at /mnt/models)"
    assert env["SERVE_MODELS"] == "/mnt/models"
    assert int(env["SERVE_BIND"].rsplit(":", 1)[1]) == port["containerPort"]
    assert serve["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": port["containerPort"]}
    assert serve["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": port["containerPort"]}
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert annotations["prometheus.kserve.io/port"] == str(port["containerPort"])
    assert annotations["prometheus.kserve.io/path"] == "/metrics"
    assert serve["securityContext"]["runAsUser"] == int(read_image(ROOT / "Dockerfile")[0].user.split(":")[0])
