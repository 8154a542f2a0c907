"""What memoizing Param schema checks buys: Airflow's own Param validation, on vs off.

    python benchmarks/param_schemas.py [--calls 200] [--rounds 5]

Loads dags/realtime/onboarding_dag.py in this process (no database, no server), serializes
and deserializes the DAG as the API server holds it, and times Airflow's own code on the
DAG's real Params with real applicants' signups as the conf:

  api-server trigger  `SerializedDAG.params.deep_merge(conf).validate()`: what
                      `create_dagrun` does for every triggered run; the API server is
                      long-lived, so its cache is warm after the first trigger.
  task process        `airflow.sdk` `process_params(dag, task, conf)`: what each task
                      process does once before its task runs, in a fresh process (the
                      cache is emptied before each call).

each with `airflow_adapter.schema_checks` off (jsonschema's own `validate`) and on, in
alternating rounds so that load on a shared machine hits both alike. Figures are CPU time
per call (this process is single-threaded), the median over the rounds; progress goes to
stderr, the table and the command that produced it to stdout.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore", category=DeprecationWarning)

from jsonschema import validators  # noqa: E402

from airflow_adapter import schema_checks  # noqa: E402

DAG_FILE = ROOT / "dags" / "realtime" / "onboarding_dag.py"


def load_dags() -> tuple[Any, Any]:
    """The onboarding DAG as the DAG file builds it, and as the API server deserializes it."""
    from airflow.serialization.serialized_objects import DagSerialization

    spec = importlib.util.spec_from_file_location("onboarding_dag_benchmark", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    dag = module.onboarding()
    return dag, DagSerialization.from_dict(DagSerialization.to_dict(dag))


def confs(count: int) -> list[dict[str, Any]]:
    """Triggers' confs as the listener sends them, each with a real applicant."""
    from risk.model import load_training_data

    applications = load_training_data().applications
    return [
        {
            "schema_version": 1,
            "event_id": f"evt-bench-{i}",
            "user_id": f"user-bench-{i}",
            "occurred_at": "2026-11-30T00:00:00.000Z",
            "application": dict(applications[i % len(applications)]),
            "accepted_at": "2026-11-30T00:00:00.100Z",
        }
        for i in range(count)
    ]


def cpu_per_call(call: Callable[[dict[str, Any]], Any], batch: list[dict[str, Any]], fresh: bool) -> float:
    """CPU seconds per call; `fresh`: an empty cache before each call, as in a new process."""
    total = 0.0
    for conf in batch:
        if fresh and schema_checks.installed():
            schema_checks.uninstall()
            schema_checks.install()
        start = time.process_time()
        call(conf)
        total += time.process_time() - start
    return total / len(batch)


def metaschema_checks(call: Callable[[dict[str, Any]], Any], conf: dict[str, Any]) -> int:
    cls = validators.validator_for({})
    with mock.patch.object(cls, "check_schema", wraps=cls.check_schema) as check_schema:
        call(conf)
    return check_schema.call_count


def set_memo(on: bool) -> None:
    schema_checks.uninstall()
    if on and not schema_checks.install():
        raise SystemExit("airflow_adapter.schema_checks refused to install: see the warning above")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="validations per path, mode and round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    command = "python benchmarks/param_schemas.py " + shlex.join(argv if argv is not None else sys.argv[1:])

    print("loading the onboarding DAG and sample signups ...", file=sys.stderr, flush=True)
    dag, server_dag = load_dags()
    task = dag.tasks[0]
    batch = confs(args.calls)
    from airflow.sdk.definitions.param import process_params

    paths: dict[str, tuple[Callable[[dict[str, Any]], Any], bool]] = {
        "api-server trigger": (lambda conf: server_dag.params.deep_merge(conf).validate(), False),
        "task process": (lambda conf: process_params(dag, task, conf, suppress_exception=False), True),
    }
    results: dict[tuple[str, bool], list[float]] = {(name, on): [] for name in paths for on in (False, True)}
    checks: dict[tuple[str, bool], int] = {}
    for name, (call, fresh) in paths.items():
        for on in (False, True):
            set_memo(on)
            if not fresh:
                call(batch[0])  # the API server's cache is warm after its first trigger
            checks[name, on] = metaschema_checks(call, batch[0])

    for round_no in range(1, args.rounds + 1):
        order = (False, True) if round_no % 2 else (True, False)
        line = []
        for name, (call, fresh) in paths.items():
            for on in order:
                set_memo(on)
                call(batch[0])
                results[name, on].append(cpu_per_call(call, batch, fresh))
            off_ms, on_ms = results[name, False][-1] * 1e3, results[name, True][-1] * 1e3
            line.append(f"{name}: off {off_ms:.2f} ms, on {on_ms:.2f} ms")
        print(f"round {round_no}/{args.rounds}: " + "; ".join(line), file=sys.stderr, flush=True)
    schema_checks.uninstall()

    versions = ", ".join(f"{p} {importlib.metadata.version(p)}" for p in ("apache-airflow", "jsonschema"))
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nParam validation of the onboarding DAG ({len(server_dag.params)} Params), CPU ms per call,")
    print(f"median of {args.rounds} rounds x {args.calls} calls; metaschema checks per call in brackets\n")
    print("| path | memo off | memo on | off / on |")
    print("|---|---|---|---|")
    for name in paths:
        off = statistics.median(results[name, False]) * 1e3
        on = statistics.median(results[name, True]) * 1e3
        print(
            f"| {name} | {off:.2f} ms [{checks[name, False]}] | {on:.2f} ms [{checks[name, True]}] | {off / on:.1f}x |"
        )
    print(
        f"\n{os.cpu_count()} CPUs, load average {load}, Python {platform.python_version()}, {versions}"
        f"\nCommand: `{command.strip()}`"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
