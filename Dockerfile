# syntax=docker/dockerfile:1
#
# The cdp-hub daemon image: `cdp-hub run` by default, any other sub-command as the container's arguments.
#
#   docker build -t cdp-hub:0.1.0 .
#   docker build --build-arg EXTRAS=embedded -t cdp-hub:demo .      # adds pgserver + fakeredis for `demo`
#   docker run --rm -p 8080:8080 -v "$PWD/cdp-hub.toml:/etc/cdp-hub/cdp-hub.toml:ro" \
#       -e CDP_HUB_CONFIG=/etc/cdp-hub/cdp-hub.toml cdp-hub:0.1.0 run --stage dlq
#
# Two stages: the first builds a virtual environment with the project (no dev extras), the second copies
# only that environment onto a clean python:3.11-slim and runs it as an unprivileged user.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/cdp-hub
WORKDIR /src
# Exactly what the wheel is built from (.dockerignore keeps everything else out of the context).
COPY pyproject.toml README.md LICENSE ./
COPY cdp_hub ./cdp_hub
COPY connectors ./connectors
COPY channels ./channels
# Optional extras, e.g. EXTRAS=embedded for an image that can run `cdp-hub demo`; empty in production.
ARG EXTRAS=""
RUN /opt/cdp-hub/bin/pip install --upgrade pip \
 && /opt/cdp-hub/bin/pip install ".${EXTRAS:+[$EXTRAS]}" \
 && /opt/cdp-hub/bin/cdp-hub plugins

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="cdp-hub" \
      org.opencontainers.image.description="Customer Data Platform integration hub: Kafka, Greenplum/PostgreSQL, Redis" \
      org.opencontainers.image.licenses="Apache-2.0"
# CDP_HUB_HTTP_HOST: inside a container the server must listen on every interface (the default is loopback).
# The environment wins over the config file, so this holds whatever the mounted cdp-hub.toml says.
ENV PATH=/opt/cdp-hub/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CDP_HUB_HTTP_HOST=0.0.0.0 \
    CDP_HUB_HTTP_PORT=8080 \
    CDP_HUB_DATA_DIR=/var/lib/cdp-hub
RUN groupadd --system --gid 10001 cdp \
 && useradd --system --uid 10001 --gid cdp --home-dir /var/lib/cdp-hub --no-create-home \
        --shell /usr/sbin/nologin cdp \
 && mkdir -p /var/lib/cdp-hub /etc/cdp-hub \
 && chown cdp:cdp /var/lib/cdp-hub
COPY --from=build /opt/cdp-hub /opt/cdp-hub
WORKDIR /var/lib/cdp-hub
USER 10001:10001
EXPOSE 8080
# The slim image has no curl: ask /healthz with the standard library. Containers started with --no-http
# (or a one-off command such as `migrate`) should be run with --no-healthcheck.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('CDP_HUB_HTTP_PORT', '8080'); sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:' + port + '/healthz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["cdp-hub"]
# One supervised worker per stage, more for more cores (docs/scaling.md); one process on the in-process bus.
CMD ["run", "--processes", "auto"]
