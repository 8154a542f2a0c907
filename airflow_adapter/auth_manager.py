"""The realtime Airflow's auth manager: FAB's, with one rule more.

FAB demands "can_edit" on a DAG for any write below it, so the listener's role, which
must create runs of `onboarding`, also holds "can_edit on DAG:onboarding" - and FAB lets
that pause, patch or delete the DAG itself. A leaked listener credential could then stop
every decision. Here changing a DAG itself (pause, patch, delete) takes the permission on
all DAGs ("DAGs"), which only Admin and Op hold; writes below the DAG (its runs) keep
FAB's per-DAG rule. (The class name keeps "FabAuthManager": Airflow checks the configured
class path for it.) Selected in deploy/realtime/airflow.cfg
(and the realtime Helm values); proven by
tests/e2e/test_security.py::test_listener_credential_is_refused_everywhere_else.
"""

from __future__ import annotations

import contextlib
from typing import Any

from airflow.providers.fab.auth_manager.fab_auth_manager import FabAuthManager
from airflow.providers.fab.www.security.permissions import RESOURCE_DAG


class OnboardingFabAuthManager(FabAuthManager):
    """FabAuthManager where only a role with a permission on every DAG may change a DAG itself."""

    def is_authorized_dag(self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None) -> bool:
        if (
            access_entity is None
            and method != "GET"
            and not self._is_authorized(method=method, resource_type=RESOURCE_DAG, user=user)
        ):
            return False
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)

    def generate_jwt(self, user: Any, **kwargs: Any) -> str:
        token = super().generate_jwt(user, **kwargs)
        # A login (POST /auth/token) leaves FAB's session in an open transaction (it updates
        # the user's login count, then reads the user again). On SQLite that held the
        # database's write lock until the worker next used the session, stalling the
        # scheduler for tens of seconds; end the transaction with the request.
        with contextlib.suppress(Exception):  # best effort: never fail a login over this
            self.security_manager.session.commit()
        return token
