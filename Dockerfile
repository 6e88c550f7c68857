# syntax=docker/dockerfile:1.7
# The microsnoop image: the core library, the platform layer (services, components, pipelines, dashboard)
# and MLflow, with the `microsnoop` CLI as entrypoint. One image runs the search API, the dashboard, the
# MLflow server, the pipeline steps and the pipeline upload job (see docs/deploy.md).
#
# CPU image (default; torch from the PyTorch CPU index):
#   docker build -t microsnoop:0.1.0 .
# CUDA image (CUDA base image and a cu12x torch build):
#   docker build -t microsnoop:0.1.0-cuda12.8 \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu22.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#
# Nothing secret is baked in: every credential (PostgreSQL DSN, S3 keys) comes from MICROSNOOP_* variables
# at run time (services/settings.py).

ARG BASE_IMAGE=python:3.11.13-slim-bookworm

# ---------------------------------------------------------------------------------------------------------
# python-base: BASE_IMAGE with a Python 3.11 interpreter. python:3.11-slim has one at /usr/local/bin;
# nvidia/cuda:*-ubuntu22.04 gets Ubuntu's python3.11. Builder and runtime share it so the venv's
# interpreter path is the same in both.
FROM ${BASE_IMAGE} AS python-base
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN set -eux; \
    if ! command -v python3.11 >/dev/null 2>&1; then \
        apt-get update; \
        apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    python3.11 --version

# ---------------------------------------------------------------------------------------------------------
# builder: a virtual environment at /opt/venv with torch from TORCH_INDEX_URL and the project with its
# platform extra, every version constrained by requirements.lock.
FROM python-base AS builder
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends build-essential; \
    if [ ! -x /usr/local/bin/python3.11 ]; then apt-get install -y --no-install-recommends python3.11-dev; fi; \
    rm -rf /var/lib/apt/lists/*; \
    python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:${PATH}
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
# torch alone from its index first (CPU wheel by default, so PyPI's multi-GB CUDA build is never pulled);
# its dependencies and everything else then resolve from the package index under the lock.
RUN pip install --upgrade "pip>=24" \
    && pip install --no-deps --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"
COPY microsnoop ./microsnoop
COPY services ./services
COPY components ./components
COPY pipelines ./pipelines
COPY dashboard ./dashboard
COPY microsnoop_platform ./microsnoop_platform
# The compiled pipeline YAML goes into the installed package (pipelines/compiled/ beside pipelines/runner.py,
# where `microsnoop pipeline submit` looks); `python -P` so /src/pipelines does not shadow the installed one.
RUN pip install -c requirements.lock ".[platform]" \
    && pip check \
    && site="$(python -P -c 'import pathlib, pipelines; print(pathlib.Path(pipelines.__file__).parent)')" \
    && mkdir -p "${site}/compiled" pipelines/compiled \
    && cp -r pipelines/compiled/. "${site}/compiled/" \
    && (ls "${site}"/compiled/*.yaml >/dev/null 2>&1 || echo "warning: pipelines/compiled/ holds no compiled YAML")

# ---------------------------------------------------------------------------------------------------------
# runtime: the venv (with the compiled pipelines) and the shipped model; runs as an unprivileged user and
# writes only under /tmp and /data (the Helm chart mounts both and makes the root filesystem read-only).
FROM python-base AS runtime
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="microsnoop" \
      org.opencontainers.image.description="Unbiased embeddings of heterogeneous microscopy images, as an MLOps platform" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 microsnoop \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin microsnoop \
    && mkdir -p /data \
    && chown 10001:10001 /data
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY models/microsnoop-cpu-v1.pt models/microsnoop-cpu-v1.1.pt ./models/
# The HEALTHCHECK probe: MICROSNOOP_HEALTHCHECK_URL (space-separated URLs) or the three services' defaults;
# healthy when one answers 200. Kubernetes ignores it and uses the chart's probes instead.
COPY --chmod=0755 <<'EOF' /usr/local/bin/microsnoop-healthcheck
#!/opt/venv/bin/python
import os
import sys
import urllib.request

DEFAULT = "http://127.0.0.1:8000/health http://127.0.0.1:8501/_stcore/health http://127.0.0.1:5000/health"
for url in os.environ.get("MICROSNOOP_HEALTHCHECK_URL", DEFAULT).split():
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            if response.status == 200:
                sys.exit(0)
    except OSError:
        continue
sys.exit(1)
EOF
ENV PATH=/opt/venv/bin:${PATH} \
    HOME=/tmp \
    MICROSNOOP_DATA_DIR=/data \
    MPLCONFIGDIR=/tmp/matplotlib \
    NUMBA_CACHE_DIR=/tmp/numba \
    MLFLOW_DISABLE_TELEMETRY=true \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false \
    STREAMLIT_SERVER_HEADLESS=true
USER 10001:10001
EXPOSE 8000 8501 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["microsnoop-healthcheck"]
ENTRYPOINT ["microsnoop"]
CMD ["--help"]
