"""Model versions in service: training a version, the promotion gate, promotion and rollback.

Every promotion and rollback is appended to `<model_dir>/HISTORY` (JSON lines), so
`rollback` knows what was in service before, and an auditor knows what decided when.

Promotion and rollback verify the version they put in service with the service's key
(`RiskSettings.verifier()`, `risk.integrity`) before they write `CURRENT`: a version the
realtime side would refuse is never put in service, `--force` (which overrides the gate)
included. Such a refusal is appended to HISTORY too (action `refused`): someone may have
tampered with the version.
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
from risk.evaluation import CANDIDATES, Progress, evaluate
from risk.integrity import ModelIntegrityError, Pointer, Signer, Verifier, verify_version
from risk.model import MODEL_KIND, TrainingData, feature_schema, fit
from risk.policy import CostMatrix, Policy

HISTORY_FILE = "HISTORY"


@dataclass(frozen=True)
class Gate:
    """A challenger must not cost more, rank applicants much worse, nor treat a protected group
    worse (disparate impact down, or equal-opportunity difference up, by more than
    `max_fairness_worsening`) than the champion, judged on the same folds of the same data."""

    max_cost_increase: float = 0.0
    max_auc_drop: float = 0.005
    max_fairness_worsening: float = 0.05

    def check(self, challenger: dict[str, Any], champion: dict[str, Any] | None) -> tuple[bool, list[str]]:
        """Compare two evaluations. `champion` is the champion's metadata, or its training
        procedure re-run on the challenger's folds (`rerun_champion`)."""
        if champion is None:
            return True, ["no champion in service"]
        if challenger.get("cv") != champion.get("cv"):
            return False, [f"evaluated on other folds ({challenger.get('cv')} vs {champion.get('cv')}); re-evaluate"]
        if challenger.get("costs") != champion.get("costs"):
            return False, [f"evaluated under other costs ({challenger.get('costs')} vs {champion.get('costs')})"]
        reasons = [f"champion: {champion['rerun']}"] if champion.get("rerun") else []
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
        fair_passed, fair_reasons = self._check_fairness(challenger.get("fairness"), champion.get("fairness"))
        return passed and fair_passed, reasons + fair_reasons

    def _check_fairness(self, new: dict[str, Any] | None, old: dict[str, Any] | None) -> tuple[bool, list[str]]:
        if not old:
            return True, ["fairness not compared: the champion has no fairness report"]
        if not new:
            return False, ["the challenger has no fairness report"]
        passed, reasons = True, []
        tolerance = self.max_fairness_worsening
        for attribute, reference in old.items():
            entry = new.get(attribute)
            if entry is None:
                passed = False
                reasons.append(f"the challenger's fairness report has no {attribute}")
                continue
            di_new, di_old = entry["disparate_impact"], reference["disparate_impact"]
            eo_new, eo_old = entry["equal_opportunity_difference"], reference["equal_opportunity_difference"]
            if di_new < di_old - tolerance:
                passed = False
                reasons.append(f"{attribute}: disparate impact {di_new:.3f} < champion {di_old:.3f} - {tolerance}")
            else:
                reasons.append(f"{attribute}: disparate impact {di_new:.3f} vs champion {di_old:.3f}")
            if eo_new > eo_old + tolerance:
                passed = False
                reasons.append(
                    f"{attribute}: equal-opportunity difference {eo_new:.3f} > champion {eo_old:.3f} + {tolerance}"
                )
            else:
                reasons.append(f"{attribute}: equal-opportunity difference {eo_new:.3f} vs champion {eo_old:.3f}")
        return passed, reasons


def rerun_champion(
    champion: dict[str, Any], challenger: dict[str, Any], data: TrainingData, progress: Progress | None = None
) -> dict[str, Any]:
    """The champion's training procedure (its kind, hyper-parameter search included) evaluated
    on the challenger's data, folds and costs: what the gate compares a challenger trained on
    new data with. `data` must be the challenger's training data."""
    kind = champion.get("kind", "logistic")
    if kind not in CANDIDATES or CANDIDATES[kind].make is None:
        raise ModelError(f"the champion's kind {kind!r} is not a known training procedure; cannot re-run it")
    cv, costs = challenger["cv"], challenger["costs"]
    if cv.get("data_sha256") != data.sha256:
        raise ModelError("the challenger's training data is not the data given; cannot re-run the champion on it")
    report = evaluate(
        data.applications,
        data.bad,
        [kind],
        CostMatrix(costs["bad_approved"], costs["good_declined"], costs["review"]),
        costs["review_capacity"],
        repeats=cv["repeats"],
        folds=cv["folds"],
        seed=cv["seed"],
        progress=progress,
        protected=data.protected,
        data_set=data.dataset,
    )[kind].summary()
    return {
        "kind": kind,
        "rerun": f"{champion.get('version')} ({kind}) re-trained and evaluated on the challenger's folds",
        "cv": cv,
        "costs": costs,
        "metrics": {k: report[k] for k in ("auc", "brier", "cost_bayes", "cost_policy", "review_rate")},
        "fairness": report["fairness"],
    }


def train_version(
    model_dir: Path,
    data: TrainingData,
    costs: CostMatrix,
    review_capacity: float,
    repeats: int = 3,
    seed: int = 0,
    progress: Progress | None = None,
    kind: str = MODEL_KIND,
    signer: Signer | None = None,
) -> str:
    """Evaluate the training procedure by repeated CV, fit it on all data, save (not promote),
    signed with `signer` (`RiskSettings.signer()`; default the development key)."""
    reports = evaluate(
        data.applications,
        data.bad,
        [kind],
        costs,
        review_capacity,
        repeats=repeats,
        seed=seed,
        progress=progress,
        protected=data.protected,
        data_set=data.dataset,
    )
    report = reports[kind]
    # The policy's review band is sized on out-of-fold scores: what the model will see live.
    policy = Policy.from_costs(costs, review_capacity=review_capacity, scores=report.out_of_fold)
    if progress:
        progress("fitting on all applicants")
    model = fit(data, seed=seed, kind=kind)
    summary = report.summary()
    metrics = {k: summary[k] for k in ("auc", "brier", "cost_bayes", "cost_policy", "review_rate", "calibration")}
    extra = {
        "kind": kind,
        "seed": seed,
        "cv": {"repeats": repeats, "folds": 10, "seed": seed, "data_sha256": data.sha256},
        "costs": {
            "bad_approved": costs.bad_approved_cost,
            "good_declined": costs.good_declined_cost,
            "review": costs.review_cost,
            "review_capacity": review_capacity,
        },
        "fairness": summary["fairness"],
        "hyper_parameters": getattr(model, "params_", None),
        "out_of_fold_scores": [round(float(p), 5) for p in np.asarray(report.out_of_fold)],
        "labels": [bool(b) for b in data.bad],
        # The data set and its feature contract (ONBOARDING_DATASET; checked on load).
        "dataset": data.dataset,
        "features": feature_schema(data.dataset),
    }
    model_dir.mkdir(parents=True, exist_ok=True)
    return save_model(model_dir, model, policy, data.sha256, metrics, make_current=False, extra=extra, signer=signer)


def metadata(model_dir: Path, version: str) -> dict[str, Any]:
    try:
        return json.loads((model_dir / version / METADATA_FILE).read_text())
    except (OSError, ValueError) as err:
        raise ModelError(f"model version {version!r} not found in {model_dir}") from err


def champion(model_dir: Path, verifier: Verifier | None = None) -> dict[str, Any] | None:
    """The metadata of the version in service, or None if there is none it could serve
    (a model that no longer fits the event schema, or whose signature does not verify with
    `verifier`'s key, default the development key, is no champion to defend: the realtime
    side refuses it, and its metrics may have been edited)."""
    try:
        version = current_version(model_dir)
        load_model(model_dir, version, verifier=verifier or Signer().verifier())
        return metadata(model_dir, version)
    except ModelError:
        return None


def promote(
    model_dir: Path,
    version: str,
    gate: Gate | None = None,
    force: bool = False,
    data: TrainingData | None = None,
    progress: Progress | None = None,
    verifier: Verifier | None = None,
    signer: Signer | None = None,
) -> list[str]:
    """Make `version` current if it verifies with `verifier`'s key (`RiskSettings.verifier()`;
    default the development key) and passes the gate (or `force`), signing CURRENT with
    `signer` (`RiskSettings.signer()`; default the development key). Returns the gate's reasons.

    A version that does not verify (unsigned, another key, a file changed after signing) is
    refused before anything else, `force` or not: `ModelIntegrityError`, recorded in HISTORY,
    CURRENT unchanged. `force` overrides the gate only.

    When the champion was evaluated on other folds, data or costs than the challenger (a
    retrain on new data) and `data` is the challenger's training data, the champion's
    training procedure is re-run on the challenger's folds and the gate compares like with
    like; without that data, such a challenger is refused."""
    trusted = verifier or Signer().verifier()
    _verify_or_refuse(model_dir, version, trusted, "promote", _current_or_none(model_dir), force)
    challenger = metadata(model_dir, version)
    load_model(model_dir, version, verifier=trusted)  # a version the service could not load is never promoted
    reference = champion(model_dir, trusted)
    if (
        reference is not None
        and data is not None
        and data.sha256 == (challenger.get("cv") or {}).get("data_sha256")
        and (reference.get("cv") != challenger.get("cv") or reference.get("costs") != challenger.get("costs"))
    ):
        reference = rerun_champion(reference, challenger, data, progress)
    passed, reasons = (gate or Gate()).check(challenger, reference)
    if not passed and not force:
        raise ModelError(f"version {version} did not pass the promotion gate: {'; '.join(reasons)}")
    previous = _current_or_none(model_dir)
    pointer = set_current(model_dir, version, signer)
    _record(model_dir, "promote", version, previous, reasons, pointer.sequence, forced=force and not passed)
    return reasons


def rollback(model_dir: Path, verifier: Verifier | None = None, signer: Signer | None = None) -> str:
    """Put back the version that was current before the current one. Returns it.

    That version must verify with `verifier`'s key (default the development key): if it no
    longer does, the rollback is refused (`ModelIntegrityError`, recorded in HISTORY, CURRENT
    unchanged), not carried on to an older version: which one to serve is the operator's call."""
    trusted = verifier or Signer().verifier()
    current = current_version(model_dir)
    # The promotion that put the current version in service names what it replaced. A
    # rollback entry is no such promotion: rolling back twice goes further back, not forth.
    for entry in reversed(history(model_dir)):
        if entry["action"] == "promote" and entry["version"] == current and entry.get("previous"):
            previous = entry["previous"]
            if previous == current:
                continue
            _verify_or_refuse(model_dir, previous, trusted, "rollback", current)
            load_model(model_dir, previous, verifier=trusted)
            pointer = set_current(model_dir, previous, signer)
            _record(model_dir, "rollback", previous, current, [f"rolled back from {current}"], pointer.sequence)
            return previous
    raise ModelError(f"no earlier version recorded before {current}; nothing to roll back to")


def sign_current(model_dir: Path, verifier: Verifier, signer: Signer) -> Pointer:
    """Sign CURRENT as it is (the upgrade step for a pointer written before pointers were
    signed): the version it names must verify with `verifier`; recorded in HISTORY."""
    version = current_version(model_dir)
    _verify_or_refuse(model_dir, version, verifier, "sign-current", version)
    pointer = set_current(model_dir, version, signer)
    _record(model_dir, "sign-current", version, version, ["CURRENT signed"], pointer.sequence)
    return pointer


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


def _verify_or_refuse(
    model_dir: Path, version: str, verifier: Verifier, action: str, in_service: str | None, force: bool = False
) -> None:
    """Verify `version` before `action` (promote, rollback) puts it in service; on failure,
    record the refusal in HISTORY and raise `ModelIntegrityError` naming the version, the
    reason and the version that stays in service."""
    try:
        verify_version(model_dir / version, verifier)
    except ModelIntegrityError as err:
        stays = f"{in_service} stays in service" if in_service else "no version is in service"
        problem = f"{err.problem}; not put in service by {action}, {stays}"
        if force:
            problem += " (--force overrides the promotion gate, never the signature)"
        try:
            _record(model_dir, "refused", version, in_service, [f"{action}: {err}"])
        except OSError as record_err:
            problem += f" (not recorded in {HISTORY_FILE}: {record_err})"
        raise ModelIntegrityError(version, problem) from None


def _record(
    model_dir: Path,
    action: str,
    version: str,
    previous: str | None,
    reasons: list[str],
    sequence: int | None = None,
    forced: bool = False,
) -> None:
    entry: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(),
        "action": action,
        "version": version,
        "previous": previous,
        "reasons": reasons,
    }
    if sequence is not None:  # the signed CURRENT's promotion number (risk.integrity.Pointer)
        entry["sequence"] = sequence
    if forced:
        entry["forced"] = True
    with (model_dir / HISTORY_FILE).open("a") as fh:
        fh.write(json.dumps(entry) + "\n")
