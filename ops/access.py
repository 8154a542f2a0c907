"""Who may do what on the realtime Airflow (FAB auth manager): the listener's role and the users.

The listener's credential must be worth little if it leaks: it may trigger runs of the
onboarding DAG and read them back, and nothing else. FAB's DAG-level permissions say that
precisely; Airflow's SimpleAuthManager has no per-DAG permissions at all.

Run inside the instance's environment (AIRFLOW_HOME, database URL) after `airflow db migrate`:

    onboarding-access                 # users and passwords from ACCESS_* variables, see main()
    python -m ops.access              # the same

It is idempotent: the role is reset to exactly LISTENER_PERMISSIONS, passwords are set to
the given values, so a rotated password takes effect on the next run. One Python process
instead of five `airflow users/roles` CLI calls (each one loads Airflow for seconds).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

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


def apply(admin_password: str, listener_password: str, listener_user: str = "listener") -> None:
    """Create or update the admin and listener users and the listener's role."""
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    with get_application_builder() as appbuilder:
        sm = appbuilder.sm
        sm.sync_roles()  # the built-in roles (Admin, Op, ...) with every permission FAB knows
        role = sm.find_role(LISTENER_ROLE) or sm.add_role(LISTENER_ROLE)
        wanted = {sm.create_permission(action, resource) for action, resource in LISTENER_PERMISSIONS}
        for permission in list(role.permissions):
            if permission not in wanted:
                sm.remove_permission_from_role(role, permission)
        for permission in wanted:
            sm.add_permission_to_role(role, permission)
        for username, password, role_name in (
            ("admin", admin_password, "Admin"),
            (listener_user, listener_password, LISTENER_ROLE),
        ):
            _ensure_user(sm, username, password, sm.find_role(role_name))


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
    )
    parser.parse_args(argv)
    env = Env(os.environ)
    try:
        admin_password = env.secret("ACCESS_ADMIN_PASSWORD")
        listener_password = env.secret("ACCESS_LISTENER_PASSWORD")
        missing = [
            name
            for name, value in (
                ("ACCESS_ADMIN_PASSWORD", admin_password),
                ("ACCESS_LISTENER_PASSWORD", listener_password),
            )
            if not value
        ]
        if missing:
            raise ConfigError(f"{' and '.join(missing)} (or {missing[0]}_FILE) is required")
        apply(str(admin_password), str(listener_password), env.str("ACCESS_LISTENER_USER", "listener"))
    except OnboardingError as err:
        print(f"onboarding-access: {err}", file=sys.stderr)
        return 2
    print(f"users admin and listener ready; role {LISTENER_ROLE} has {len(LISTENER_PERMISSIONS)} permissions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
