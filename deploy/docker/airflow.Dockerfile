# syntax=docker/dockerfile:1
# The Airflow image, registry.example.com/onboarding-airflow:<package version>
# (docs/images.md), for both Helm releases (deploy/helm/realtime-values.yaml and
# batch-values.yaml, `images.airflow`): the official Airflow image plus this project's
# wheel (airflow_adapter/ with the auth manager, onboarding/, risk/, ...), the DAG folder of each instance
# and the realtime instance's airflow_local_settings.py.
#   docker build -f deploy/docker/airflow.Dockerfile -t registry.example.com/onboarding-airflow:0.1.0 .
#
# Base images: exact versions. The Airflow version must equal apache-airflow in
# pyproject.toml and requirements.lock (tests/deploy/test_image.py checks). A tag can still
# be re-pushed; to pin the bytes, append the digest the registry reports
# (`docker buildx imagetools inspect apache/airflow:3.3.2-python3.11`) as `@sha256:...`.
# None is written here: it could not be looked up where this was written, and a made-up
# digest would only break the build.

# The wheel is pure Python; it is built as in service.Dockerfile, from the same sources.
FROM python:3.11.14-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
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
RUN python -m pip wheel --no-deps --wheel-dir /wheels .

FROM apache/airflow:3.3.2-python3.11
# The official image's way to add packages: as the airflow user (into its user site),
# naming the image's own Airflow version so pip cannot move it. Every dependency of the
# wheel is held to requirements.lock (a constraint: the lock's development tools are not
# installed). `pip check` fails the build if those pins break a package the base image
# ships (one of its providers): fix the lock, do not ship a broken set.
USER airflow
# The wheel with its `airflow` extra: Airflow's providers the instances use, the model
# (scikit-learn, skops), the PostgreSQL drivers; not the service image's rq and pyarrow.
RUN --mount=type=bind,from=build,source=/wheels,target=/tmp/onboarding-wheels \
    --mount=type=bind,source=requirements.lock,target=/tmp/requirements.lock \
    pip install --no-cache-dir --constraint /tmp/requirements.lock \
        "apache-airflow==${AIRFLOW_VERSION}" "$(echo /tmp/onboarding-wheels/onboarding_decisions-*.whl)[airflow]" \
 && pip check
# Each instance's DAG folder; neither is the chart's default ($AIRFLOW_HOME/dags), which
# stays empty: a release must name its own (`dags.mountPath`, or
# AIRFLOW__CORE__DAGS_FOLDER), so the realtime instance never schedules retraining and
# the batch instance never runs onboarding. Owned by root: the airflow user reads them.
COPY dags/realtime/ /opt/onboarding/dags/realtime/
COPY dags/batch/ /opt/onboarding/dags/batch/
# Found by every Airflow process of either instance ($AIRFLOW_HOME/config is on sys.path).
# The realtime instance needs it (Param schema-check cache, a warm model before forking
# tasks); the batch instance only pays the model warm-up in its scheduler and workers.
# The chart mounts its own airflowLocalSettings over this path unless the release sets
# `airflowLocalSettings: null` (docs/images.md).
COPY deploy/realtime/airflow_local_settings.py /opt/airflow/config/airflow_local_settings.py
# No HEALTHCHECK: Kubernetes ignores Docker health checks; the chart probes each component
# (api-server /api/v2/monitor/health, the scheduler's health server, Celery inspect).
HEALTHCHECK NONE
# The official image's airflow user (UID 50000, group 0), the chart's default uid.
USER 50000:0
