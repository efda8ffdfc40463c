# The Kafka -> EventBridge bridge as a container image.
#
#   docker build -t kafka-eventbridge-bridge:0.1.0 .
#   docker run --rm -v "$PWD/config/example.yaml:/etc/bridge/config.yaml:ro" \
#     -p 9464:9464 kafka-eventbridge-bridge:0.1.0
#
# Runtime dependencies are the pinned set in requirements.lock (regenerate it with
# scripts/setup-deploy-tools.sh --update-lock after changing pyproject.toml's dependencies).
# The image runs as UID 10001, writes nothing outside /tmp (so it runs with a read-only root
# filesystem and an emptyDir at /tmp), and `bridge` is PID 1 in exec form: SIGTERM reaches the
# bridge, which drains within pipeline.shutdown_timeout_s, commits, leaves the group and exits 0.
# tests/deploy/test_image.py runs these install steps in a clean virtualenv and lints this file.

# ---- build: a virtualenv in /opt/venv with the locked dependencies and the bridge's wheel ----
FROM python:3.11-slim-bookworm AS build

# The build backend, pinned (pyproject.toml asks for setuptools>=77, for its SPDX license).
ARG SETUPTOOLS_VERSION=84.2.1

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src

# The dependencies first, in their own layer: rebuilt only when the lock changes. The venv has
# no pip or setuptools of its own; the base image's pip installs into it with --python.
COPY requirements.lock ./
RUN python -m venv --without-pip /opt/venv \
    && python -m pip --python /opt/venv/bin/python install --no-cache-dir --no-deps \
        -r requirements.lock

# The bridge itself: a wheel built with the pinned backend, installed without dependencies
# (they are all in the lock; `pip check` fails the build if one is missing).
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN python -m pip install --no-cache-dir "setuptools==${SETUPTOOLS_VERSION}" \
    && python -m pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /tmp/dist . \
    && python -m pip --python /opt/venv/bin/python install --no-cache-dir --no-deps /tmp/dist/*.whl \
    && python -m pip --python /opt/venv/bin/python check \
    && /opt/venv/bin/bridge --version

# ---- runtime: the same base, the virtualenv, a non-root user ----
FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="kafka-eventbridge-bridge" \
      org.opencontainers.image.description="Delivers every Kafka record to Amazon EventBridge (or dead-letters it), committing offsets only after." \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"

# HOME=/tmp: the only writable place under a read-only root filesystem. Bytecode was compiled
# at install time, so Python never needs to write .pyc files.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp

RUN groupadd --system --gid 10001 bridge \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin bridge

COPY --from=build /opt/venv /opt/venv

# Numeric, so Kubernetes' runAsNonRoot can verify it without resolving a name.
USER 10001:10001
WORKDIR /tmp

# /healthz, /readyz and /metrics (config key observability.port).
EXPOSE 9464

STOPSIGNAL SIGTERM
ENTRYPOINT ["bridge"]
CMD ["run", "--config", "/etc/bridge/config.yaml"]
