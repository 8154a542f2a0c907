"""The local stack: the whole service on one machine (both Airflow instances, listeners, rq
worker and cron, metrics endpoints) under a small supervisor."""

from stack.errors import StackError
from stack.instance import AirflowInstance, InstanceSpec
from stack.processes import ManagedProcess
from stack.settings import StackSettings

__all__ = ["AirflowInstance", "InstanceSpec", "ManagedProcess", "StackError", "StackSettings"]
