# syntax=docker/dockerfile:1
# The service image, registry.example.com/onboarding:<package version> (docs/images.md):
# the listener, the SLA service, the rq worker and `rq cron`, the archive's metrics and its
# CronJob. The manifests in deploy/k8s/ run it with `args:` only (no `command:`), so the
# image has no ENTRYPOINT: args[0] is the command (onboarding-listener, onboarding-sla,
# onboarding-archive, rq), found on PATH in /opt/venv/bin.
#   docker build -f deploy/docker/service.Dockerfile -t registry.example.com/onboarding:0.1.0 .
#
# Base image: an exact Python patch release on an exact Debian release. A tag can still be
# re-pushed; to pin the bytes, append the digest the registry reports
# (`docker buildx imagetools inspect python:3.11.14-slim-bookworm`) as `@sha256:...` to
# both FROM lines. None is written here: it could not be looked up where this was written,
# and a made-up digest would only break the build.

FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the wheel is built from (the .dockerignore allowlist keeps the rest out).
COPY pyproject.toml README.md LICENSE requirements.lock ./
COPY onboarding/ onboarding/
COPY listener/ listener/
COPY intake/ intake/
COPY risk/ risk/
COPY airflow_adapter/ airflow_adapter/
COPY archiver/ archiver/
COPY review/ review/
COPY sla/ sla/
COPY ops/ ops/
COPY stack/ stack/
# The project's wheel and a wheel of every dependency of its `service` extra (the
# listener, SLA service, review page, rq worker and archive: no Airflow, no model), each
# at the version requirements.lock pins (a constraint: only what the extra needs, so none
# of the lock's development tools). Any dependency published only as source is built
# here, not in the final image.
RUN python -m pip wheel --wheel-dir /wheels --constraint requirements.lock ".[service]"

FROM python:3.11.14-slim-bookworm
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    ONBOARDING_HOME=/var/lib/onboarding
# A numeric user matching the manifests' runAsUser/runAsGroup, with no home and no shell.
RUN groupadd --system --gid 10001 onboarding \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin onboarding
# Installed from the build stage's wheels only (--no-index), under the same constraint;
# the wheels are mounted, not copied, so no layer keeps them. The venv has no pip: the
# base image's pip installs into it, named by its path (PATH finds the venv's python
# first, which has no pip). Bytecode is compiled here, so a read-only root filesystem
# costs nothing at start.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,source=requirements.lock,target=/tmp/requirements.lock \
    /usr/local/bin/python -m venv --without-pip /opt/venv \
 && /usr/local/bin/python -m pip --python /opt/venv/bin/python install --no-index --find-links /wheels \
        --constraint /tmp/requirements.lock "onboarding-decisions[service]" \
 && /usr/local/bin/python -m pip --python /opt/venv/bin/python check
# The processes write only to their volumes (/archive, /tmp where the manifests mount
# one); the data home below does not exist in the image: mount a volume at
# $ONBOARDING_HOME for a command that needs it, as the manifests do with ARCHIVE_DIR.
WORKDIR /srv/onboarding
# No HEALTHCHECK: one image runs several commands with different probes, and Kubernetes
# ignores Docker health checks; each manifest declares its own (httpGet /livez and
# /readyz for the listener and the SLA service, `onboarding-archive worker-check
# --liveness` for the rq worker).
HEALTHCHECK NONE
USER 10001:10001
CMD ["onboarding-listener", "--help"]
