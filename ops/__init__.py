"""Operator tools: erase one user's data (`onboarding-erase`), set up the realtime Airflow's
users and least-privilege role (`onboarding-access`), and render or apply the Redis ACL users
(`onboarding-redis-acl`). They sit above the service's jobs and may use all of them."""

from ops.errors import OpsError

__all__ = ["OpsError"]
