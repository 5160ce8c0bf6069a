# syntax=docker/dockerfile:1
# The worker image: a Celery worker with torch (CUDA build) and Diffusers.
# Build from the repository root:  docker build -f docker/worker.Dockerfile -t hotpipe-worker .
# torch's Linux wheel on PyPI is the CUDA 13.0 build and brings its own CUDA libraries (cuDNN,
# cuBLAS) as pip packages; the base image supplies a matching CUDA userland, the host the driver.
FROM nvidia/cuda:13.0.2-runtime-ubuntu24.04

# One torch version everywhere: the Makefile pins the same one for CPU setups.
ARG TORCH_VERSION=2.13.0

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/hotpipe \
    PATH=/opt/hotpipe/bin:$PATH \
    HF_HOME=/cache/huggingface \
    HOTPIPE_DEVICE=cuda:0 \
    HOTPIPE_WORKER_READY_FILE=/tmp/hotpipe-worker-ready

# Ubuntu 24.04's own Python (3.12) in a virtual environment (PEP 668 forbids pip on the system one).
# /models exists so that a named volume mounted there (compose's models-init) is the worker's to write.
# DL3008: apt versions are left to the pinned base image's release; pinning them breaks on
# every Ubuntu security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv "$VIRTUAL_ENV" \
    && groupadd --system --gid 10001 hotpipe \
    && useradd --system --uid 10001 --gid hotpipe --create-home --home-dir /home/hotpipe hotpipe \
    && mkdir -p /cache/huggingface /models \
    && chown -R hotpipe:hotpipe /cache /models

# torch first, pinned, in its own layer: it is most of the image and changes least often.
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY hotpipe/ hotpipe/
COPY shared/ shared/
COPY producer/ producer/
COPY workers/ workers/
# DL3013: this installs the checkout itself; its dependencies and their ranges are in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir '.[worker]'

USER 10001
WORKDIR /home/hotpipe
# Downloaded checkpoints outlive the container: mount a volume (or a shared PVC) here.
VOLUME ["/cache/huggingface"]
# The worker touches its ready file once it consumes; the file lives in the container's own
# layer (not a volume), so a restarted container starts unready.
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
    CMD ["sh", "-c", "test -f \"$HOTPIPE_WORKER_READY_FILE\""]
# Prometheus /metrics, served by the worker's parent process (HOTPIPE_WORKER_METRICS_PORT's default).
EXPOSE 9464
ENTRYPOINT ["hotpipe"]
CMD ["worker", "--family", "stable-diffusion"]
