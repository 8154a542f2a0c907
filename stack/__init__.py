"""The local stack: one machine running Redis, the realtime Airflow instance and the listener."""

from stack.errors import StackError
from stack.instance import AirflowInstance, InstanceSpec
from stack.processes import ManagedProcess
from stack.settings import StackSettings

__all__ = ["AirflowInstance", "InstanceSpec", "ManagedProcess", "StackError", "StackSettings"]
