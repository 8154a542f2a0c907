# A local stand-in for apache/airflow:3.3.2-python3.11 (docs/images.md, "Building here"),
# FROM the local python:3.11.14-slim-bookworm (python.Dockerfile), tagged with the official
# name by scripts/images.py. The official image's layout, as the project's airflow.Dockerfile
# and the chart rely on it: the airflow user (UID 50000, group 0, home /home/airflow),
# AIRFLOW_HOME=/opt/airflow (group-writable, the working directory), Airflow installed into
# the airflow user's site (PIP_USER, ~/.local/bin on PATH), AIRFLOW_VERSION set, and the
# entrypoint `dumb-init -- /entrypoint` (entrypoint in this folder: the subset of the
# official one the chart's commands and probes use).
# Airflow comes from PyPI at AIRFLOW_VERSION, with every dependency held to
# requirements.lock. Unlike the official image it has no providers beyond the ones
# apache-airflow itself requires: the project's airflow extra brings its own.
FROM python:3.11.14-slim-bookworm
ARG AIRFLOW_VERSION=3.3.2
ENV AIRFLOW_VERSION=${AIRFLOW_VERSION} \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW_UID=50000 \
    AIRFLOW_USER_HOME_DIR=/home/airflow \
    PIP_USER=true \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/home/airflow/.local/bin:/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
RUN useradd --uid 50000 --gid 0 --create-home --home-dir /home/airflow --shell /bin/bash airflow \
 && mkdir -p /opt/airflow/dags /opt/airflow/logs /opt/airflow/config /opt/airflow/plugins \
 && chown -R airflow:0 /opt/airflow /home/airflow \
 && chmod -R g+rwX /opt/airflow /home/airflow
COPY entrypoint /entrypoint
USER 50000:0
RUN --mount=type=bind,source=requirements.lock,target=/tmp/requirements.lock \
    pip install --no-cache-dir --user --constraint /tmp/requirements.lock "apache-airflow==${AIRFLOW_VERSION}"
WORKDIR /opt/airflow
ENTRYPOINT ["/usr/bin/dumb-init", "--", "/entrypoint"]
CMD []
