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
from risk.datasets import DEFAULT_DATASET, dataset
from risk.fairness import average, fairness_report
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

    def rows(self, applications: list[dict[str, Any]], data_set: str | None = None) -> list[dict[str, Any]]:
        contract = dataset(data_set)
        convert = contract.model_row if self.engineered else contract.raw_row
        return [convert(a) for a in applications]

    def build(self, seed: int, data_set: str | None = None) -> Any:
        """The training procedure, ready to fit, for a data set's contract (`risk.datasets`)."""
        if self.make is None:
            raise ValueError(f"candidate {self.name!r} is a constant rule, not a model")
        model = self.make(seed)
        if "dataset" in model.get_params(deep=False):
            model.set_params(dataset=data_set or DEFAULT_DATASET)
        return model


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
    # Per repeat: every applicant's out-of-fold P(bad) and cost under the 3-way policy, for
    # the paired bootstrap (`paired_bootstrap`).
    repeat_scores: list[np.ndarray] = field(default_factory=list, repr=False)
    repeat_costs: list[np.ndarray] = field(default_factory=list, repr=False)

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
    data_set: str | None = None,
) -> dict[str, CandidateReport]:
    """Evaluate candidates on the same repeated stratified folds; with the applicants'
    protected attributes, also the fairness of each repeat's out-of-fold decisions.
    `data_set` names the applications' feature contract (default German credit)."""
    y = np.array(bad)
    splitter = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    splits = list(splitter.split(np.zeros(len(y)), y))
    reports = {n: CandidateReport(n, CANDIDATES[n].description) for n in names}
    total = len(names) * repeats * folds
    step = 0
    for name in names:
        candidate = CANDIDATES[name]
        rows = np.array(candidate.rows(applications, data_set), dtype=object)
        for repeat in range(repeats):
            p = np.ones(len(y))  # decline everyone: P(bad) = 1
            for fold, (train, test) in enumerate(splits[repeat * folds : (repeat + 1) * folds]):
                step += 1
                if progress:
                    progress(f"[{step}/{total}] {name}: repeat {repeat + 1}/{repeats}, fold {fold + 1}/{folds}")
                if candidate.make is None:
                    continue
                model = candidate.build(seed + repeat, data_set).fit(list(rows[train]), y[train])
                p[test] = model.predict_proba(list(rows[test]))[:, 1]
            decisions = _score(reports[name], p, y, costs, review_capacity)
            reports[name].repeat_scores.append(p.copy())
            reports[name].repeat_costs.append(_costs_of(decisions, y, costs))
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


def _costs_of(decisions: list[Decision], y: np.ndarray, costs: CostMatrix) -> np.ndarray:
    """Each applicant's cost under these decisions (their mean is `expected_cost`)."""
    out = np.zeros(len(decisions))
    for i, (decision, bad) in enumerate(zip(decisions, y, strict=True)):
        if decision is Decision.REVIEW:
            out[i] = costs.review_cost
        elif decision is Decision.APPROVE and bad:
            out[i] = costs.bad_approved_cost
        elif decision is Decision.DECLINE and not bad:
            out[i] = costs.good_declined_cost
    return out


def _resampled_auc(p: np.ndarray, y: np.ndarray, index: np.ndarray) -> np.ndarray:
    """ROC AUC of each bootstrap resample (rows of `index`), by the rank-sum (Mann-Whitney)
    formula with ties averaged: the same figure as `roc_auc_score` on each resample."""
    from scipy.stats import rankdata  # type: ignore[import-untyped]

    ranks = rankdata(p[index], axis=1)
    positive = y[index]
    n_pos = positive.sum(axis=1)
    n_neg = index.shape[1] - n_pos
    rank_sum = (ranks * positive).sum(axis=1)
    return np.asarray((rank_sum - n_pos * (n_pos + 1) / 2) / np.maximum(n_pos * n_neg, 1))


@dataclass(frozen=True)
class Interval:
    """A point estimate and its 95 % percentile-bootstrap interval."""

    estimate: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.estimate:.3f} [{self.low:.3f}, {self.high:.3f}]"

    def to_dict(self) -> dict[str, float]:
        return {"estimate": round(self.estimate, 4), "low": round(self.low, 4), "high": round(self.high, 4)}


def _interval(estimate: float, resampled: np.ndarray) -> Interval:
    low, high = np.percentile(resampled, [2.5, 97.5])
    return Interval(estimate, float(low), float(high))


def paired_bootstrap(
    reports: dict[str, CandidateReport], bad: list[bool], reference: str, resamples: int = 1000, seed: int = 0
) -> dict[str, dict[str, Interval]]:
    """95 % intervals of each candidate's AUC and 3-way cost per applicant, and of its paired
    difference with `reference` (candidate minus reference), by a paired bootstrap of the
    applicants: each resample draws applicants with replacement, the same applicants for
    every candidate, and a metric is the mean over the CV repeats of that metric on the
    repeat's out-of-fold scores and decisions. The decisions stay those of the full
    evaluation (the policy's thresholds are not refitted per resample)."""
    y = np.asarray(bad, dtype=bool)
    index = np.random.default_rng(seed).integers(0, len(y), size=(resamples, len(y)))
    auc: dict[str, np.ndarray] = {}
    cost: dict[str, np.ndarray] = {}
    for name, report in reports.items():
        auc[name] = np.mean([_resampled_auc(p, y, index) for p in report.repeat_scores], axis=0)
        cost[name] = np.mean([c[index].mean(axis=1) for c in report.repeat_costs], axis=0)
    out: dict[str, dict[str, Interval]] = {}
    for name, report in reports.items():
        auc_point = statistics.fmean(report.auc)
        cost_point = statistics.fmean(report.cost_policy)
        ref = reports[reference]
        out[name] = {
            "auc": _interval(auc_point, auc[name]),
            "cost_policy": _interval(cost_point, cost[name]),
            "auc_difference": _interval(auc_point - statistics.fmean(ref.auc), auc[name] - auc[reference]),
            "cost_difference": _interval(cost_point - statistics.fmean(ref.cost_policy), cost[name] - cost[reference]),
        }
    return out


def no_worse_verdict(
    reports: dict[str, CandidateReport], intervals: dict[str, dict[str, Interval]], reference: str
) -> list[str]:
    """Whether `reference` is no worse than the best other model at 95 %: for AUC and for
    cost, the paired interval of (best - reference) must not lie wholly on the best's side."""
    others = [n for n in reports if n != reference and CANDIDATES[n].make is not None]
    if not others:
        return [f"no candidate to compare {reference} with"]
    lines = []
    best_auc = max(others, key=lambda n: statistics.fmean(reports[n].auc))
    d = intervals[best_auc]["auc_difference"]
    worse = d.low > 0
    lines.append(
        f"AUC: best other candidate {best_auc}, {best_auc} - {reference} = {d}: "
        + (f"{reference} is WORSE at 95 %" if worse else f"{reference} is no worse at 95 %")
    )
    best_cost = min(others, key=lambda n: statistics.fmean(reports[n].cost_policy))
    d = intervals[best_cost]["cost_difference"]
    worse = d.high < 0
    lines.append(
        f"cost, 3-way policy: best other candidate {best_cost}, {best_cost} - {reference} = {d}: "
        + (f"{reference} costs MORE at 95 %" if worse else f"{reference} is no worse at 95 %")
    )
    return lines


def interval_table(intervals: dict[str, dict[str, Interval]], reference: str) -> str:
    """The paired-bootstrap intervals as a markdown table."""
    lines = [
        f"| candidate | ROC AUC [95 % CI] | Δ AUC vs {reference} [95 % CI] | cost, 3-way [95 % CI] "
        f"| Δ cost vs {reference} [95 % CI] |",
        "|---|---|---|---|---|",
    ]
    for name, entry in intervals.items():
        same = name == reference
        lines.append(
            f"| {name} | {entry['auc']} | {'' if same else entry['auc_difference']} | {entry['cost_policy']} "
            f"| {'' if same else entry['cost_difference']} |"
        )
    return "\n".join(lines)


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
