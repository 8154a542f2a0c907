"""The batch instance's risk DAGs' task bodies (dags/batch/risk_model.py wires them): the
DAG's params in, `risk.maintenance` (no Airflow) does the work.

`risk.maintenance` loads the model stack, so it is imported when a task runs, not when the
dag-processor parses the DAG file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["compute_psi", "gate_and_promote", "train_challenger"]


def train_challenger(params: Mapping[str, Any] | None) -> str:
    """Train a challenger with the run's `repeats` (default 3); returns its version."""
    from risk import maintenance

    return maintenance.train_challenger(int((params or {}).get("repeats", 3)))


def gate_and_promote(version: str) -> dict[str, Any]:
    """The challenger's model card, and its promotion only through the gate (a report). A
    challenger whose signature does not verify with the service's key is never promoted: the
    task fails without retries (the files will not heal), the champion stays in service."""
    from risk import maintenance
    from risk.integrity import ModelIntegrityError

    try:
        return maintenance.gate_and_promote(version)
    except ModelIntegrityError as err:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(err)) from err


def compute_psi(params: Mapping[str, Any] | None) -> dict[str, float]:
    """The population stability index per feature over the run's `window_days` (default 7)."""
    from risk import maintenance

    return maintenance.compute_psi(int((params or {}).get("window_days", 7)))
