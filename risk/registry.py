"""Model versions in service: training a version, the promotion gate, promotion and rollback.

Every promotion and rollback is appended to `<model_dir>/HISTORY` (JSON lines), so
`rollback` knows what was in service before, and an auditor knows what decided when.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from risk.artifacts import METADATA_FILE, current_version, load_model, save_model, set_current
from risk.errors import ModelError
from risk.evaluation import Progress, evaluate
from risk.model import MODEL_KIND, TrainingData, fit
from risk.policy import CostMatrix, Policy

HISTORY_FILE = "HISTORY"


@dataclass(frozen=True)
class Gate:
    """A challenger must not cost more, nor rank applicants much worse, than the champion."""

    max_cost_increase: float = 0.0
    max_auc_drop: float = 0.005

    def check(self, challenger: dict[str, Any], champion: dict[str, Any] | None) -> tuple[bool, list[str]]:
        if champion is None:
            return True, ["no champion in service"]
        if challenger.get("cv") != champion.get("cv"):
            return False, [f"evaluated on other folds ({challenger.get('cv')} vs {champion.get('cv')}); re-evaluate"]
        if challenger.get("costs") != champion.get("costs"):
            return False, [f"evaluated under other costs ({challenger.get('costs')} vs {champion.get('costs')})"]
        reasons = []
        passed = True
        cost_new = challenger["metrics"]["cost_policy"]["mean"]
        cost_old = champion["metrics"]["cost_policy"]["mean"]
        auc_new = challenger["metrics"]["auc"]["mean"]
        auc_old = champion["metrics"]["auc"]["mean"]
        if cost_new > cost_old + self.max_cost_increase:
            passed = False
            reasons.append(f"cost per applicant {cost_new:.4f} > champion {cost_old:.4f} + {self.max_cost_increase}")
        else:
            reasons.append(f"cost per applicant {cost_new:.4f} vs champion {cost_old:.4f}")
        if auc_new < auc_old - self.max_auc_drop:
            passed = False
            reasons.append(f"AUC {auc_new:.4f} < champion {auc_old:.4f} - {self.max_auc_drop}")
        else:
            reasons.append(f"AUC {auc_new:.4f} vs champion {auc_old:.4f}")
        return passed, reasons


def train_version(
    model_dir: Path,
    data: TrainingData,
    costs: CostMatrix,
    review_capacity: float,
    repeats: int = 3,
    seed: int = 0,
    progress: Progress | None = None,
) -> str:
    """Evaluate the training procedure by repeated CV, fit it on all data, save (not promote)."""
    reports = evaluate(
        data.applications,
        data.bad,
        [MODEL_KIND],
        costs,
        review_capacity,
        repeats=repeats,
        seed=seed,
        progress=progress,
    )
    report = reports[MODEL_KIND]
    # The policy's review band is sized on out-of-fold scores: what the model will see live.
    policy = Policy.from_costs(costs, review_capacity=review_capacity, scores=report.out_of_fold)
    if progress:
        progress("fitting on all applicants")
    model = fit(data, seed=seed)
    summary = report.summary()
    metrics = {k: summary[k] for k in ("auc", "brier", "cost_bayes", "cost_policy", "review_rate", "calibration")}
    extra = {
        "kind": MODEL_KIND,
        "seed": seed,
        "cv": {"repeats": repeats, "folds": 10, "seed": seed, "data_sha256": data.sha256},
        "costs": {
            "bad_approved": costs.bad_approved_cost,
            "good_declined": costs.good_declined_cost,
            "review": costs.review_cost,
            "review_capacity": review_capacity,
        },
        "out_of_fold_scores": [round(float(p), 5) for p in np.asarray(report.out_of_fold)],
        "labels": [bool(b) for b in data.bad],
    }
    model_dir.mkdir(parents=True, exist_ok=True)
    return save_model(model_dir, model, policy, data.sha256, metrics, make_current=False, extra=extra)


def metadata(model_dir: Path, version: str) -> dict[str, Any]:
    try:
        return json.loads((model_dir / version / METADATA_FILE).read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"model version {version!r} not found in {model_dir}") from err


def champion(model_dir: Path) -> dict[str, Any] | None:
    """The metadata of the version in service, or None if there is none it could serve
    (a model that no longer fits the event schema is no champion to defend)."""
    try:
        version = current_version(model_dir)
        load_model(model_dir, version)
        return metadata(model_dir, version)
    except ModelError:
        return None


def promote(model_dir: Path, version: str, gate: Gate | None = None, force: bool = False) -> list[str]:
    """Make `version` current if it passes the gate (or `force`). Returns the gate's reasons."""
    challenger = metadata(model_dir, version)
    load_model(model_dir, version)  # a version the service could not load is never promoted
    passed, reasons = (gate or Gate()).check(challenger, champion(model_dir))
    if not passed and not force:
        raise ModelError(f"version {version} did not pass the promotion gate: {'; '.join(reasons)}")
    previous = _current_or_none(model_dir)
    set_current(model_dir, version)
    _record(model_dir, "promote", version, previous, reasons)
    return reasons


def rollback(model_dir: Path) -> str:
    """Put back the version that was current before the current one. Returns it."""
    current = current_version(model_dir)
    # The promotion that put the current version in service names what it replaced. A
    # rollback entry is no such promotion: rolling back twice goes further back, not forth.
    for entry in reversed(history(model_dir)):
        if entry["action"] == "promote" and entry["version"] == current and entry.get("previous"):
            previous = entry["previous"]
            if previous == current:
                continue
            load_model(model_dir, previous)
            set_current(model_dir, previous)
            _record(model_dir, "rollback", previous, current, [f"rolled back from {current}"])
            return previous
    raise ModelError(f"no earlier version recorded before {current}; nothing to roll back to")


def history(model_dir: Path) -> list[dict[str, Any]]:
    path = model_dir / HISTORY_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def versions(model_dir: Path) -> list[dict[str, Any]]:
    if not model_dir.is_dir():  # nothing trained here yet (a fresh install, a new ONBOARDING_HOME)
        return []
    current = _current_or_none(model_dir)
    out = []
    for folder in sorted(p for p in model_dir.iterdir() if (p / METADATA_FILE).is_file()):
        meta = json.loads((folder / METADATA_FILE).read_text())
        metrics = meta.get("metrics", {})
        out.append(
            {
                "version": meta["version"],
                "current": meta["version"] == current,
                "created_at": meta.get("created_at"),
                "auc": metrics.get("auc", {}).get("mean") if isinstance(metrics.get("auc"), dict) else None,
                "cost": (metrics.get("cost_policy") or {}).get("mean")
                if isinstance(metrics.get("cost_policy"), dict)
                else None,
                "policy": meta.get("policy"),
            }
        )
    return out


def _current_or_none(model_dir: Path) -> str | None:
    try:
        return current_version(model_dir)
    except ModelError:
        return None


def _record(model_dir: Path, action: str, version: str, previous: str | None, reasons: list[str]) -> None:
    entry = {
        "at": datetime.now(UTC).isoformat(),
        "action": action,
        "version": version,
        "previous": previous,
        "reasons": reasons,
    }
    with (model_dir / HISTORY_FILE).open("a") as fh:
        fh.write(json.dumps(entry) + "\n")
