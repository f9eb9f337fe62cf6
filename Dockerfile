# The serving image: the production server (granian + Flask + Paddle Inference), serving the bundles mounted at /models.
#
#   docker build -t paddle-d2s-serve .                                   # CPU
#   docker build --build-arg VARIANT=gpu -t paddle-d2s-serve:gpu .       # GPU (CUDA 12.6)
#   docker run --rm -p 8000:8000 -v "$PWD/bundles:/models:ro" paddle-d2s-serve
#
# The server-only install: Paddle (CPU or GPU build), then the toolkit with its `serve`, `onnx` and
# `openvino` extras at the versions of their lock, requirements-serve.txt (README, "Install"). Only
# serve/ and common/ are copied (.dockerignore lets nothing else in), so only they are installed:
# no training, export or test tools. Settings are the SERVE_* variables of docs/SERVING.md
# (docker run -e ...). tests/test_container.py lints this file with hadolint and starts its CMD,
# with its ENV, as a plain process until /v2/health/ready says 200.
ARG VARIANT=cpu

# CPU: the Python the tests run (3.11) and Paddle's CPU wheel from PyPI.
FROM python:3.11-slim-bookworm AS base-cpu
# libgomp1: Paddle's kernels and oneDNN link against the system's OpenMP runtime; nothing else is
# missing from the slim image. Versions are not pinned: Debian only ships security fixes within a release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir paddlepaddle==3.3.1

# GPU: CUDA and cuDNN runtime libraries, and Paddle's CUDA 12.6 build from Paddle's own index (the
# paddlepaddle-gpu on PyPI is 2.6 for CUDA 11.8: README, "GPU, and several GPUs").
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 AS base-gpu
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir paddlepaddle-gpu==3.3.1 -i https://www.paddlepaddle.org.cn/packages/stable/cu126/

# The base is one of the two stages above, not an image from a registry: no tag to pin (DL3006).
# hadolint ignore=DL3006
FROM base-${VARIANT}
WORKDIR /app
COPY pyproject.toml README.md requirements-serve.txt ./
COPY serve/ serve/
COPY common/ common/
COPY deploy/docker/healthcheck.py deploy/docker/healthcheck.py
# The toolkit installed in place (editable: one copy of the code, in /app, and its metadata, which
# the server reads its version from, in the venv); the lock as constraints pins every dependency;
# pip check fails the build if they and Paddle's own disagree. A system user with no login, numeric
# in USER below so that Kubernetes' runAsNonRoot can check it.
RUN /opt/venv/bin/pip install --no-cache-dir -c requirements-serve.txt --editable ".[serve,onnx,openvino]" \
 && /opt/venv/bin/pip check \
 && groupadd --system --gid 10001 serve \
 && useradd --system --uid 10001 --gid serve --no-create-home --home-dir /tmp --shell /usr/sbin/nologin serve

# HOME=/tmp: Paddle creates ~/.cache/paddle at import, so home must be writable; /tmp is the only
# writable place (an emptyDir under Kubernetes, whose root filesystem is read-only), and the metrics
# files of the workers go there too. Workers x predictors x math threads = 2 x 1 x 1 = 2 cores (the
# thread arithmetic of docs/SERVING.md); each worker runs one request at a time while its event
# loop receives the next ones. The limits (docs/SERVING.md, Limits) keep their defaults.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SERVE_MODELS=/models \
    SERVE_BIND=0.0.0.0:8000 \
    SERVE_WORKERS=2 \
    SERVE_POOL_SIZE=1 \
    SERVE_THREADS=1

USER 10001:10001
EXPOSE 8000
# Docker only; Kubernetes ignores HEALTHCHECK and uses the probes in deploy/kubernetes/deployment.yaml.
# start-period: importing Paddle and warming every model up takes seconds to a minute.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "deploy/docker/healthcheck.py"]
CMD ["python", "-m", "serve"]
