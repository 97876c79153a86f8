# Heliox code location image. One image runs every Dagster process:
#   user code (gRPC):  dagster code-server start -h 0.0.0.0 -p 4000 -m heliox_orchestration.definitions
#   webserver:         dagster-webserver -h 0.0.0.0 -p 3000 -w /opt/dagster/app/deploy/workspace.yaml
#   daemon:            dagster-daemon run -w /opt/dagster/app/deploy/workspace.yaml
# The default command is the code server. See docs/deployment.md.
#
# Build:  docker build -t heliox-orchestration:$(git rev-parse --short HEAD) .
# Kubernetes (K8sRunLauncher) images also want dagster-k8s, pinned to the Dagster release:
#         docker build --build-arg EXTRA_PIP_PACKAGES="dagster-k8s==0.29.27" -t ... .

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ARG EXTRA_PIP_PACKAGES=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (cached while only the code changes), pinned exactly as `make install` pins
# them: every version comes from constraints.txt.
COPY setup.py pyproject.toml constraints.txt ./
COPY heliox_orchestration ./heliox_orchestration
RUN python -m pip install --upgrade pip \
 && python -m pip install -c constraints.txt . ${EXTRA_PIP_PACKAGES} \
 && python -m pip check \
 && python -m compileall -q -j0 /opt/venv/lib > /dev/null
# compileall: with PYTHONDONTWRITEBYTECODE pip compiles nothing, and the read-only image could not
# cache what Python compiles, so every run process would compile Dagster and pandas from source.

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    HELIOX_DATA_DIR=/opt/dagster/data \
    HELIOX_ENV=production
# A fixed numeric UID/GID so Kubernetes `runAsNonRoot` can verify the user.
RUN groupadd --system --gid 10001 dagster \
 && useradd --system --uid 10001 --gid dagster --home-dir /opt/dagster --shell /usr/sbin/nologin dagster \
 && mkdir -p /opt/dagster/app/deploy /opt/dagster/dagster_home/storage /opt/dagster/data
COPY --from=build /opt/venv /opt/venv
COPY deploy/dagster.yaml /opt/dagster/dagster_home/dagster.yaml
COPY deploy/dagster-postgres-url.yaml deploy/workspace.yaml /opt/dagster/app/deploy/
RUN chown -R 10001:10001 /opt/dagster
WORKDIR /opt/dagster/app
USER 10001:10001

# 4000: user code gRPC server; 3000: dagster-webserver.
EXPOSE 4000 3000
HEALTHCHECK --interval=30s --timeout=10s --start-period=60s --retries=3 \
    CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", \
     "-m", "heliox_orchestration.definitions", "--location-name", "heliox_orchestration"]
