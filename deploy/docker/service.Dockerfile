# syntax=docker/dockerfile:1.7
# The Python services (dream, guide, ...): one image, the service chosen by the command.
#   docker build -f deploy/docker/service.Dockerfile -t dreamsuite:cpu .
#   docker build -f deploy/docker/service.Dockerfile --build-arg TORCH_INDEX_URL= -t dreamsuite:gpu .
# TORCH_INDEX_URL empty installs the default (CUDA-enabled) torch wheels; the default is the
# CPU-only wheel index, a much smaller image.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.14.1 torchvision==0.29.1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protos protos
COPY dreamsuite dreamsuite
COPY services services
COPY handlers handlers
RUN pip install . && python -c "import dreamsuite.v1, services"

FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 dreamsuite \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/dreamsuite --create-home dreamsuite \
 && mkdir -p /data/artifacts && chown 10001:10001 /data/artifacts
COPY --from=build /opt/venv /opt/venv
# The services read DREAMSUITE_* variables (`dreamsuite serve SERVICE --help` lists them); set
# DREAMSUITE_HEALTH_TARGET to the gRPC address of the service the container runs.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DREAMSUITE_HOST=0.0.0.0 \
    DREAMSUITE_ARTIFACTS=file:///data/artifacts \
    DREAMSUITE_HEALTH_TARGET=127.0.0.1:50051
USER 10001:10001
WORKDIR /home/dreamsuite
EXPOSE 50051 50052 50053 9101 9102 9103
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
    CMD ["dreamsuite", "health", "--timeout", "4"]
ENTRYPOINT ["dreamsuite", "serve"]
CMD ["dream"]
