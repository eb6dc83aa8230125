# syntax=docker/dockerfile:1.7
# TorchServe with the dreamsuite backbone archive baked in (no network at run time).
#   docker build -f deploy/docker/torchserve.Dockerfile -t dreamsuite-torchserve:cpu .
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG BACKBONE=efficientnet_lite0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.14.1 torchvision==0.29.1
RUN pip install torchserve==0.12.0 torch-model-archiver==0.12.0 pyyaml numpy
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protos protos
COPY dreamsuite dreamsuite
COPY services services
COPY handlers handlers
RUN pip install . && dreamsuite archive --backbone "${BACKBONE}" -o /model-store --no-config

FROM ${PYTHON_IMAGE} AS runtime
# TorchServe 0.12 needs Java 17.
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 model-server \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/model-server --create-home model-server
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=10001:10001 /model-store /home/model-server/model-store
COPY --chown=10001:10001 deploy/torchserve/config.properties /home/model-server/config.properties
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    XDG_CACHE_HOME=/tmp/cache \
    LOG_LOCATION=/home/model-server/logs \
    METRICS_LOCATION=/home/model-server/logs \
    TEMP=/tmp
USER 10001:10001
WORKDIR /home/model-server
# 7070 gRPC inference (and Ping), 8080 HTTP inference (/ping), 8082 Prometheus metrics.
EXPOSE 7070 8080 8082
# TorchServe implements no grpc.health.v1: ask the Ping of its gRPC inference API.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["dreamsuite", "health", "127.0.0.1:7070", "--torchserve", "--timeout", "4"]
ENTRYPOINT ["torchserve", "--foreground", "--ncs", \
            "--model-store", "/home/model-server/model-store", \
            "--ts-config", "/home/model-server/config.properties", "--models", "all"]
