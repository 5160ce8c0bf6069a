# syntax=docker/dockerfile:1
# The API image: FastAPI + the torch-free shared package, nothing else.
# Build from the repository root:  docker build -f docker/api.Dockerfile -t hotpipe-api .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/cache/huggingface

# One unprivileged user; the numeric id lets Kubernetes check runAsNonRoot.
RUN groupadd --system --gid 10001 hotpipe \
    && useradd --system --uid 10001 --gid hotpipe --create-home --home-dir /home/hotpipe hotpipe \
    && mkdir -p /cache/huggingface \
    && chown -R hotpipe:hotpipe /cache

WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY hotpipe/ hotpipe/
COPY shared/ shared/
COPY producer/ producer/
# No workers/: setup.py packages only the source roots present, so this image has no hotpipe.workers.
# Only the api extra: the producer resolves checkpoints from model_index.json and never imports torch.
# DL3013: this installs the checkout itself; its dependencies and their ranges are in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir '.[api]'

USER 10001
WORKDIR /home/hotpipe
EXPOSE 8000
# /healthz says the process serves; readiness (Redis reachable) is /readyz, probed by Kubernetes.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["hotpipe"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]
