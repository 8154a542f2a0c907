"""Honest model evaluation: repeated stratified k-fold CV, side by side with baselines.

Every candidate is a *training procedure* (hyper-parameter search included), so tuning
happens inside each outer training fold and never sees the evaluation fold (nested CV).
All candidates are scored on the same folds, which is also how a challenger is compared
with the champion before promotion.

Reported per candidate, as mean and standard deviation across repeats:
- ROC AUC and Brier score of the out-of-fold probabilities;
- expected cost per applicant of the two-way Bayes rule (decline when P(bad) > 1/6), the
  figure the data set's literature reports (bad approved = 5, good declined = 1);
- expected cost of the three-way policy (with review cost and capacity) and its review rate;
- the calibration curve (mean predicted vs observed bad rate per decile of score).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, VotingClassifier
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from risk.blend import Blend
from risk.boosted import BoostedTrees
from risk.fairness import average, fairness_report
from risk.features import application_to_model_row, raw_model_row
from risk.policy import CostMatrix, Decision, Policy, expected_cost

C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
Progress = Callable[[str], None]


def _logistic_tuned(seed: int) -> Any:
    """Calibrated logistic regression; C chosen by inner 5-fold CV on the training fold."""
    inner = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    pipeline = Pipeline(
        [
            ("vectorize", DictVectorizer(sparse=False)),
            ("scale", StandardScaler()),
            (
                "classify",
                LogisticRegressionCV(
                    Cs=list(C_GRID),
                    l1_ratios=(0.0,),
                    cv=inner,
                    scoring="neg_log_loss",
                    max_iter=3000,
                    use_legacy_attributes=False,
                ),
            ),
        ]
    )
    # ensemble=False: one fitted pipeline (exact reason codes) plus a sigmoid fitted on
    # cross-validated predictions.
    return CalibratedClassifierCV(
        pipeline, method="sigmoid", cv=StratifiedKFold(3, shuffle=True, random_state=seed), ensemble=False
    )


def _logistic_plain(seed: int) -> Any:
    return Pipeline(
        [
            ("vectorize", DictVectorizer(sparse=False)),
            ("scale", StandardScaler()),
            ("classify", LogisticRegression(C=1.0, max_iter=3000)),
        ]
    )


def _ensemble(seed: int) -> Any:
    boosted = Pipeline(
        [
            ("vectorize", DictVectorizer(sparse=False)),
            (
                "classify",
                HistGradientBoostingClassifier(
                    max_depth=3, learning_rate=0.05, max_iter=200, l2_regularization=1.0, random_state=seed
                ),
            ),
        ]
    )
    return VotingClassifier([("logistic", _logistic_tuned(seed)), ("boosted", boosted)], voting="soft")


def _boosted(seed: int) -> Any:
    """Boosted trees of 4 or 6 leaves, their size and number by inner 5-fold CV, Platt-calibrated
    on that CV's out-of-fold scores (risk.boosted).
    Explanation tables are built only for the model put in service (`risk.model.fit`)."""
    return BoostedTrees(seed=seed, explain=False)


def _boosted_inner10(seed: int) -> Any:
    """The service's boosted trees with the same search on an inner 10-fold CV (not in service:
    no better, docs/model.md)."""
    return BoostedTrees(seed=seed, inner_folds=10, explain=False)


def _boosted_inner5x2(seed: int) -> Any:
    """The service's boosted trees with their search and calibration on two repetitions of the
    inner 5-fold CV (each applicant's out-of-fold score averaged over both)."""
    return BoostedTrees(seed=seed, inner_repeats=2, explain=False)


def _blend(seed: int) -> Any:
    """Logit-space blend of the boosted trees and a logistic regression (both without age),
    weight and Platt calibration by inner CV, exact reasons (risk.blend)."""
    return Blend(seed=seed, explain=False)


@dataclass(frozen=True)
class Candidate:
    name: str
    description: str
    make: Callable[[int], Any] | None  # None: a constant rule, no model
    engineered: bool = True  # uses the derived features

    def rows(self, applications: list[dict[str, Any]]) -> list[dict[str, Any]]:
        convert = application_to_model_row if self.engineered else raw_model_row
        return [convert(a) for a in applications]


CANDIDATES: dict[str, Candidate] = {
    "decline_everyone": Candidate("decline_everyone", "baseline: decline every applicant", None),
    "logistic_plain": Candidate(
        "logistic_plain", "baseline: plain logistic regression, raw features, C=1", _logistic_plain, engineered=False
    ),
    "logistic": Candidate(
        "logistic",
        "logistic regression on raw + derived features, C by inner CV, sigmoid-calibrated",
        _logistic_tuned,
    ),
    "boosted": Candidate(
        "boosted",
        "gradient-boosted trees (leaves and trees by inner 5-fold CV, monotone where known), "
        "sigmoid-calibrated, exact TreeSHAP reasons (the service's model)",
        _boosted,
    ),
    "boosted_inner10": Candidate(
        "boosted_inner10",
        "the service's boosted trees, their search and calibration on an inner 10-fold CV instead of 5",
        _boosted_inner10,
    ),
    "boosted_inner5x2": Candidate(
        "boosted_inner5x2",
        "the service's boosted trees, their search and calibration on 2 x 5-fold inner CV",
        _boosted_inner5x2,
    ),
    "ensemble": Candidate(
        "ensemble", "soft vote of the calibrated logistic model and gradient-boosted trees (depth 3)", _ensemble
    ),
    "blend": Candidate(
        "blend",
        "logit-space blend of the boosted trees and a logistic regression (no age), weight by inner CV, "
        "sigmoid-calibrated, exact reasons",
        _blend,
    ),
}


@dataclass
class CandidateReport:
    name: str
    description: str
    auc: list[float] = field(default_factory=list)
    brier: list[float] = field(default_factory=list)
    cost_bayes: list[float] = field(default_factory=list)
    cost_policy: list[float] = field(default_factory=list)
    review_rate: list[float] = field(default_factory=list)
    calibration: list[tuple[float, float]] = field(default_factory=list)
    out_of_fold: list[float] = field(default_factory=list)  # last repeat's probabilities
    fairness_repeats: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        def stats(values: list[float]) -> dict[str, float]:
            if not values:
                return {"mean": float("nan"), "std": float("nan")}
            spread = statistics.pstdev(values) if len(values) > 1 else 0.0
            return {"mean": round(statistics.fmean(values), 4), "std": round(spread, 4)}

        return {
            "name": self.name,
            "description": self.description,
            "auc": stats(self.auc),
            "brier": stats(self.brier),
            "cost_bayes": stats(self.cost_bayes),
            "cost_policy": stats(self.cost_policy),
            "review_rate": stats(self.review_rate),
            "calibration": [(round(p, 4), round(o, 4)) for p, o in self.calibration],
            "fairness": average(self.fairness_repeats),
        }


def calibration_curve(p: np.ndarray, y: np.ndarray, bins: int = 10) -> list[tuple[float, float]]:
    """(mean predicted, observed bad rate) per score decile."""
    order = np.argsort(p)
    return [(float(p[chunk].mean()), float(y[chunk].mean())) for chunk in np.array_split(order, bins)]


def evaluate(
    applications: list[dict[str, Any]],
    bad: list[bool],
    names: list[str],
    costs: CostMatrix,
    review_capacity: float,
    repeats: int = 5,
    folds: int = 10,
    seed: int = 0,
    progress: Progress | None = None,
    protected: list[dict[str, str]] | None = None,
) -> dict[str, CandidateReport]:
    """Evaluate candidates on the same repeated stratified folds; with the applicants'
    protected attributes, also the fairness of each repeat's out-of-fold decisions."""
    y = np.array(bad)
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    splits = list(splitter.split(np.zeros(len(y)), y))
    reports = {n: CandidateReport(n, CANDIDATES[n].description) for n in names}
    for name in names:
        candidate = CANDIDATES[name]
        rows = np.array(candidate.rows(applications), dtype=object)
        for repeat in range(repeats):
            p = np.ones(len(y))  # decline everyone: P(bad) = 1
            for fold, (train, test) in enumerate(splits[repeat * folds : (repeat + 1) * folds]):
                if progress:
                    progress(f"{name}: repeat {repeat + 1}/{repeats}, fold {fold + 1}/{folds}")
                if candidate.make is None:
                    continue
                model = candidate.make(seed + repeat).fit(list(rows[train]), y[train])
                p[test] = model.predict_proba(list(rows[test]))[:, 1]
            decisions = _score(reports[name], p, y, costs, review_capacity)
            if protected:
                reports[name].fairness_repeats.append(fairness_report(decisions, [bool(v) for v in y], protected))
            reports[name].out_of_fold = [float(v) for v in p]
    return reports


def _score(report: CandidateReport, p: np.ndarray, y: np.ndarray, costs: CostMatrix, capacity: float) -> list[Decision]:
    bayes = Policy.from_costs(CostMatrix(costs.bad_approved_cost, costs.good_declined_cost, review_cost=1e9))
    policy = Policy.from_costs(costs, review_capacity=capacity, scores=list(p))
    truth = [bool(v) for v in y]
    decisions = [policy.decide(float(v)) for v in p]
    report.auc.append(float(roc_auc_score(y, p)) if len(set(p.tolist())) > 1 else 0.5)
    report.brier.append(float(brier_score_loss(y, p)))
    report.cost_bayes.append(expected_cost([bayes.decide(float(v)) for v in p], truth, costs))
    report.cost_policy.append(expected_cost(decisions, truth, costs))
    report.review_rate.append(sum(d is Decision.REVIEW for d in decisions) / len(decisions))
    curve = calibration_curve(p, y)
    if report.calibration:
        n = len(report.auc) - 1
        report.calibration = [
            ((a * n + b) / (n + 1), (c * n + d) / (n + 1))
            for (a, c), (b, d) in zip(report.calibration, curve, strict=True)
        ]
    else:
        report.calibration = curve
    return decisions


def markdown_table(reports: dict[str, CandidateReport]) -> str:
    lines = [
        "| candidate | ROC AUC | Brier | cost, Bayes rule | cost, 3-way policy | review rate |",
        "|---|---|---|---|---|---|",
    ]
    for report in reports.values():
        s = report.summary()

        def cell(key: str, s: dict[str, Any] = s) -> str:
            return f"{s[key]['mean']:.3f} ± {s[key]['std']:.3f}"

        lines.append(
            f"| {s['name']} | {cell('auc')} | {cell('brier')} | {cell('cost_bayes')} | "
            f"{cell('cost_policy')} | {cell('review_rate')} |"
        )
    return "\n".join(lines)
