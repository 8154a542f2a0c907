"""Who may do what on the realtime Airflow (FAB auth manager): the listener's and the SLA
service's roles and the users.

The listener's credential must be worth little if it leaks: it may trigger runs of the
onboarding DAG and read them back, and nothing else. FAB's DAG-level permissions say that
precisely; Airflow's SimpleAuthManager has no per-DAG permissions at all.

Run inside the instance's environment (AIRFLOW_HOME, database URL) after `airflow db migrate`:

    onboarding-access                 # users and passwords from ACCESS_* variables, see main()
    python -m ops.access              # the same
    onboarding-access --listener-secret onboarding-airflow-listener \
        --sla-secret onboarding-airflow-sla                          # Kubernetes: see below

In Kubernetes the Airflow chart's post-install/post-upgrade user Job runs it with
`--listener-secret NAME`: the listener's password is ACCESS_LISTENER_PASSWORD if given,
else the one already in that Secret (an upgrade keeps it), else a new random one; it is
written to the Secret (key `password`, and `username`) before Airflow is told, so a Job that
fails half-way and is retried converges on one password. The listener pods mount the
Secret and read the file at each login (onboarding/airflow.py), so a rotation needs no
restart once the kubelet has refreshed the mount. `--sla-secret NAME` does the same for the
SLA service's read-only user (ACCESS_SLA_PASSWORD, ACCESS_SLA_USER, default `sla`).

It is idempotent: each role is reset to exactly its permissions, passwords are set to
the given values, so a rotated password takes effect on the next run. One Python process
instead of five `airflow users/roles` CLI calls (each one loads Airflow for seconds).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from typing import Any

from onboarding.console import add_version, environment_epilog
from onboarding.env import Env
from onboarding.errors import ConfigError, OnboardingError
from ops.errors import OpsError

LISTENER_ROLE = "OnboardingListener"

# (action, resource). What the listener's three calls need, per FabAuthManager.is_authorized_dag:
#   POST /api/v2/dags/onboarding/dagRuns      can_create on "DAG Run:onboarding" + can_edit on "DAG:onboarding"
#   GET  /api/v2/dags/onboarding/dagRuns/{id} can_read on "DAG Run:onboarding" + can_read on "DAG:onboarding"
#   GET  /api/v2/dags/onboarding              can_read on "DAG:onboarding"
# can_edit on the DAG is what FAB demands for any write below it; it also lets the holder
# pause the onboarding DAG (documented in docs/security.md as the residual risk).
LISTENER_PERMISSIONS: tuple[tuple[str, str], ...] = (
    ("can_read", "DAG:onboarding"),
    ("can_edit", "DAG:onboarding"),
    ("can_read", "DAG Run:onboarding"),
    ("can_create", "DAG Run:onboarding"),
)


SLA_ROLE = "OnboardingSla"

# The SLA service only reads (`onboarding-sla serve` looks up each overdue signup's run:
# sla/overdue.py `list_overdue` -> AirflowClient.get_run; the scheduler heartbeats come from
# /api/v2/monitor/health, which needs no credential):
#   GET  /api/v2/dags/onboarding/dagRuns/{id} can_read on "DAG Run:onboarding" + can_read on "DAG:onboarding"
# Re-driving (`onboarding-sla redrive`: trigger and clear) is an operator's command, run with
# the admin's credential, never from the pod.
SLA_PERMISSIONS: tuple[tuple[str, str], ...] = (
    ("can_read", "DAG:onboarding"),
    ("can_read", "DAG Run:onboarding"),
)


def apply(
    admin_password: str,
    listener_password: str,
    listener_user: str = "listener",
    sla_password: str | None = None,
    sla_user: str = "sla",
) -> None:
    """Create or update the admin and listener users and the listener's role; with
    `sla_password`, the SLA service's read-only user and role too."""
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    with get_application_builder() as appbuilder:
        sm = appbuilder.sm
        sm.sync_roles()  # the built-in roles (Admin, Op, ...) with every permission FAB knows
        _ensure_role(sm, LISTENER_ROLE, LISTENER_PERMISSIONS)
        users = [("admin", admin_password, "Admin"), (listener_user, listener_password, LISTENER_ROLE)]
        if sla_password:
            _ensure_role(sm, SLA_ROLE, SLA_PERMISSIONS)
            users.append((sla_user, sla_password, SLA_ROLE))
        for username, password, role_name in users:
            _ensure_user(sm, username, password, sm.find_role(role_name))


def _ensure_role(sm: Any, name: str, permissions: tuple[tuple[str, str], ...]) -> None:
    """The role holds exactly `permissions` afterwards."""
    role = sm.find_role(name) or sm.add_role(name)
    wanted = {sm.create_permission(action, resource) for action, resource in permissions}
    for permission in list(role.permissions):
        if permission not in wanted:
            sm.remove_permission_from_role(role, permission)
    for permission in wanted:
        sm.add_permission_to_role(role, permission)


def _ensure_user(sm: Any, username: str, password: str, role: Any) -> None:
    user = sm.find_user(username=username)
    if user is None:
        created = sm.add_user(username, username, "-", f"{username}@onboarding.invalid", role, password)
        if not created:
            raise OpsError(f"could not create Airflow user {username!r}")
        return
    user.roles = [role]
    sm.update_user(user)
    sm.reset_password(user.id, password)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="onboarding-access",
        description="Create or update the realtime Airflow's admin and listener users and the listener's "
        "least-privilege role (FAB). Run with the instance's AIRFLOW_HOME and database settings, after "
        "`airflow db migrate`. Passwords: ACCESS_ADMIN_PASSWORD and ACCESS_LISTENER_PASSWORD (or *_FILE); "
        "ACCESS_LISTENER_USER (default listener).",
        epilog=environment_epilog(
            (
                "ACCESS_ADMIN_PASSWORD[_FILE]",
                "ACCESS_LISTENER_PASSWORD[_FILE]",
                "ACCESS_LISTENER_USER",
                "ACCESS_SLA_PASSWORD[_FILE]",
                "ACCESS_SLA_USER",
                "ACCESS_K8S_API_URL",
                "ACCESS_K8S_NAMESPACE",
                "ACCESS_K8S_CA_FILE",
                "ACCESS_K8S_TOKEN_FILE",
                "KUBERNETES_SERVICE_HOST",
                "KUBERNETES_SERVICE_PORT",
                "AIRFLOW_HOME",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            ),
            note="and Airflow's own settings",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_version(parser)
    parser.add_argument(
        "--listener-secret",
        metavar="NAME",
        help="Kubernetes: keep the listener's password in this Secret of the pod's namespace (read it if "
        "ACCESS_LISTENER_PASSWORD is unset, generate one if the Secret has none, write it back)",
    )
    parser.add_argument(
        "--sla-secret",
        metavar="NAME",
        help="Kubernetes: the same for the SLA service's read-only user (ACCESS_SLA_PASSWORD, ACCESS_SLA_USER)",
    )
    args = parser.parse_args(argv)
    env = Env(os.environ)
    try:
        admin_password = env.secret("ACCESS_ADMIN_PASSWORD")
        listener_password = env.secret("ACCESS_LISTENER_PASSWORD")
        listener_user = env.str("ACCESS_LISTENER_USER", "listener")
        sla_password = env.secret("ACCESS_SLA_PASSWORD")
        sla_user = env.str("ACCESS_SLA_USER", "sla")
        if not admin_password:
            raise ConfigError("ACCESS_ADMIN_PASSWORD (or ACCESS_ADMIN_PASSWORD_FILE) is required")
        if args.listener_secret:
            listener_password, source = _listener_secret(args.listener_secret, listener_user, listener_password)
        elif not listener_password:
            raise ConfigError("ACCESS_LISTENER_PASSWORD (or ACCESS_LISTENER_PASSWORD_FILE) is required")
        else:
            source = "from the environment"
        sla_source = "from the environment" if sla_password else ""
        if args.sla_secret:
            sla_password, sla_source = _listener_secret(args.sla_secret, sla_user, sla_password)
        apply(admin_password, listener_password, listener_user, sla_password, sla_user)
    except OnboardingError as err:
        print(f"onboarding-access: {err}", file=sys.stderr)
        return 2
    print(
        f"users admin and {listener_user} ready (listener password {source}); "
        f"role {LISTENER_ROLE} has {len(LISTENER_PERMISSIONS)} permissions"
    )
    if sla_password:
        print(f"user {sla_user} ready (password {sla_source}); role {SLA_ROLE} has {len(SLA_PERMISSIONS)} permissions")
    return 0


def _listener_secret(name: str, username: str, given: str | None) -> tuple[str, str]:
    """A user's password (the listener's, the SLA service's), stored in the Secret `name`
    before Airflow hears of it."""
    from ops.k8s_secret import ClusterSettings, SecretStore

    store = SecretStore(ClusterSettings.from_env(os.environ))
    try:
        current = store.get(name)
        if current is None:
            raise OpsError(f"Secret {store.settings.namespace}/{name} does not exist: create it first")
        if given:
            password, source = given, "from the environment"
        elif current.get("password"):
            password, source = current["password"], f"kept from Secret {name}"
        else:
            password, source = secrets.token_urlsafe(32), "generated"
        if current.get("password") != password or current.get("username") != username:
            store.patch(name, {"username": username, "password": password})
            source += f", written to Secret {name}"
        return password, source
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main())
