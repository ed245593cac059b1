# Serving image of catsdogs: FastAPI + the bundle's model runtime (OpenVINO or ONNX Runtime), no torch / MLflow / DVC.
# Build:  make docker-build   (or: docker build -t catsdogs-api .)
# Run:    make docker-run     (or: docker run -p 8000:8000 catsdogs-api)
# Works on python:3.11-slim and on any Debian-like base with python3 + venv (the offline
# stand-in scripts/docker/build-base.sh builds), hence `python3` and /opt/venv/bin paths.
# The base is pinned: an exact Python release and Debian suite, and the digest of its multi-arch
# index (docs/docker.md says where it comes from and how to move it forward).
ARG BASE_IMAGE=python:3.11.17-slim-bookworm@sha256:2333bd330d12de02514770b3585cad313644316047cdee24a7acfdece6de6efb

# --- builder: wheel of the package + its runtime dependencies, in a venv ----------------
FROM ${BASE_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
RUN python3 -m venv /opt/venv

# Dependencies get their own layer, so code edits reuse it: the base dependencies of
# pyproject.toml (no extras), pinned by the lock file, with only the model runtime the bundle
# defaults to (scripts/docker/serve-requirements.py). `pip check` covers them; the catsdogs wheel
# goes in without deps because its metadata lists both runtimes.
COPY pyproject.toml ./
COPY requirements/lock.txt requirements/lock.txt
COPY scripts/docker/serve-requirements.py models/model.json ./
RUN python3 serve-requirements.py pyproject.toml model.json > requirements-serve.txt \
    && /opt/venv/bin/pip install --no-cache-dir -r requirements-serve.txt -c requirements/lock.txt \
    && /opt/venv/bin/pip check
# OpenVINO's wheel also carries GPU/NPU plugins, C++ headers and TensorFlow/PaddlePaddle/PyTorch/JAX/GGUF
# frontends (~60 MB); the server compiles ONNX files for the CPU only (tests/docker checks it runs).
RUN ov="$(echo /opt/venv/lib/python3*/site-packages/openvino)" \
    && rm -rf "$ov/include" "$ov/libs/cache.json" "$ov"/libs/libopenvino_intel_[gn]pu_plugin.so \
        "$ov"/libs/libopenvino_*tensorflow* "$ov"/libs/libopenvino_paddle* "$ov"/libs/libopenvino_pytorch* \
        "$ov"/libs/libopenvino_jax* "$ov"/libs/libopenvino_gguf*

COPY src/ src/
# pip leaves with its job done: no package installer in the serving image.
RUN /opt/venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps /wheels/catsdogs-*.whl \
    && /opt/venv/bin/pip uninstall --yes --quiet pip setuptools

# The shipped model bundle, world-readable whatever the permissions in the checkout were
# (the app runs as an unprivileged user).
COPY models/ /app/models/
COPY scripts/docker/entrypoint.sh /app/entrypoint.sh
RUN chmod -R a+rX,go-w /app && chmod 0755 /app/entrypoint.sh

# --- runtime ------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
ARG BASE_IMAGE
ARG VERSION=1.0.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="catsdogs-api" \
      org.opencontainers.image.description="Cats vs Dogs image classifier: FastAPI + ONNX Runtime serving API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"

# Fixed UID/GID so Kubernetes securityContext (runAsUser/fsGroup) can match it.
RUN groupadd --system --gid 10001 catsdogs \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin catsdogs

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app

# Read-only root filesystem: nothing is written outside /tmp (an emptyDir in Kubernetes):
# no .pyc files, HOME and the Prometheus multiprocess directory under /tmp.
# MALLOC_ARENA_MAX=2: decoding threads otherwise each keep a glibc arena of freed image memory
# (worst upload burst 685-863 MiB -> 645-695 MiB peak, same speed; docs/serving.md).
ENV MALLOC_ARENA_MAX=2 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH="/opt/venv/bin:${PATH}" \
    HOME=/tmp \
    CATSDOGS_HOME=/app \
    CATSDOGS_MODEL_PATH=/app/models \
    CATSDOGS_HOST=0.0.0.0 \
    CATSDOGS_PORT=8000 \
    CATSDOGS_WORKERS=1 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus

WORKDIR /app
USER 10001:10001
EXPOSE 8000

# Python, not curl: the image has no HTTP client binary. The port follows CATSDOGS_PORT.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('CATSDOGS_PORT', '8000'), timeout=4)"]

# = catsdogs serve --host 0.0.0.0 --port 8000 --workers $CATSDOGS_WORKERS; extra arguments
# are passed on, e.g. `docker run IMAGE --model models:/catsdogs@champion`.
ENTRYPOINT ["/app/entrypoint.sh"]
CMD []
