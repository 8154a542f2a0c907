"""A logit-space blend of the boosted trees and a logistic regression, with exact reasons.

    logit(P(bad)) = slope * (w * boosted raw log-odds + (1 - w) * logistic log-odds) + intercept

Shapley values are linear in the model: the blend's exact contribution of a feature is the
same weighted sum of the parts' exact contributions (the trees' TreeSHAP values; the
logistic regression's coefficient x standardised value, summed over the feature's columns,
whose mean over the training data is zero). One Platt sigmoid (positive slope) on top keeps
the order of applicants and of reasons.

Training (`Blend.fit`), all inside the data it is given (nested under outer CV):
- the boosted trees as `risk.boosted.BoostedTrees`, uncalibrated; their inner 5-fold CV's
  out-of-fold log-odds are kept;
- on the same inner folds, the logistic regression (C by a further inner CV) gives its
  out-of-fold log-odds;
- the weight w (0, 0.05, ..., 1) and the Platt sigmoid minimise the log loss of the blended
  out-of-fold log-odds; then the logistic regression is refitted on all the data.

The logistic part leaves age out too (`EXCLUDED`): the trees leave it out for fairness
(docs/model.md), and blending it back in through the linear part would undo that.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from risk.boosted import EXCLUDED, BoostedTrees
from risk.calibration import LogOddsClassifier, best_calibrated, inner_splits
from risk.datasets import reason_code_of

C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
WEIGHTS = tuple(float(w) for w in np.round(np.linspace(0.0, 1.0, 21), 2))
# The logistic part's derived columns are explained as the applicant's own figures (the same
# codes as the trees': `risk.datasets.reason_code_of`).


def linear_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The logistic part's input: the model row without the excluded fields."""
    return [{k: v for k, v in row.items() if k not in EXCLUDED} for row in rows]


def _tuned_logistic(rows: list[dict[str, Any]], labels: np.ndarray, seed: int) -> Pipeline:
    """Standardised one-hot logistic regression, C by inner 5-fold CV on log loss, refitted as
    a plain `LogisticRegression` on all of `rows`."""
    vectorizer = DictVectorizer(sparse=False)
    scaler = StandardScaler()
    z = scaler.fit_transform(vectorizer.fit_transform(rows))
    search = LogisticRegressionCV(
        Cs=list(C_GRID),
        l1_ratios=(0.0,),
        cv=StratifiedKFold(5, shuffle=True, random_state=seed),
        scoring="neg_log_loss",
        max_iter=3000,
        use_legacy_attributes=False,
    ).fit(z, labels)
    classifier = LogisticRegression(C=float(np.ravel(search.C_)[0]), max_iter=3000).fit(z, labels)
    return Pipeline([("vectorize", vectorizer), ("scale", scaler), ("classify", classifier)])


class Blend(LogOddsClassifier):
    """P(bad) from a logit-space blend of boosted trees and a logistic regression."""

    def __init__(
        self, seed: int = 0, inner_folds: int = 5, explain: bool = True, dataset: str = "german_credit"
    ) -> None:
        self.seed = seed
        self.inner_folds = inner_folds
        self.explain = explain
        self.dataset = dataset

    def fit(self, rows: list[dict[str, Any]], y: Any) -> Blend:
        # One thread for BLAS and OpenMP: on 800 rows, more only synchronise (6x slower for
        # the logistic part on 2 cores).
        with threadpool_limits(limits=1):
            return self._fit(rows, y)

    def _fit(self, rows: list[dict[str, Any]], y: Any) -> Blend:
        labels = np.asarray(y, dtype=bool)
        self.classes_ = np.array([False, True])
        self.boosted_ = BoostedTrees(
            seed=self.seed,
            inner_folds=self.inner_folds,
            calibrate=False,
            explain=self.explain,
            dataset=getattr(self, "dataset", "german_credit"),
        ).fit(rows, labels)
        boosted_oof = self.boosted_.out_of_fold_
        linear = linear_rows(rows)
        linear_oof = np.zeros(len(labels))
        for train, test in inner_splits(labels, self.inner_folds, self.seed):
            part = _tuned_logistic([linear[i] for i in train], labels[train], self.seed)
            linear_oof[test] = part.decision_function([linear[i] for i in test])
        self.weight_, self.slope_, self.intercept_ = best_calibrated(
            ((w, w * boosted_oof + (1 - w) * linear_oof) for w in WEIGHTS), labels
        )
        self.logistic_ = _tuned_logistic(linear, labels, self.seed)
        self.params_ = {**self.boosted_.params_, "weight": self.weight_}
        return self

    def _linear_logit(self, rows: list[dict[str, Any]]) -> np.ndarray:
        return np.asarray(self.logistic_.decision_function(linear_rows(rows)))

    def decision_function(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """The calibrated log-odds of bad."""
        w = self.weight_
        blended = w * self.boosted_.raw_score(rows) + (1 - w) * self._linear_logit(rows)
        return np.asarray(self.slope_ * blended + self.intercept_)

    @property
    def base_value(self) -> float:
        """The calibrated log-odds the contributions start from."""
        classifier: LogisticRegression = self.logistic_.named_steps["classify"]
        w = self.weight_
        blended = w * self.boosted_.base_value + (1 - w) * float(classifier.intercept_[0])
        return float(self.slope_ * blended + self.intercept_)

    def linear_contributions(self, row: dict[str, Any]) -> dict[str, float]:
        """The logistic part's exact contributions (its log-odds minus its intercept), per code."""
        vectorizer: DictVectorizer = self.logistic_.named_steps["vectorize"]
        scaler: StandardScaler = self.logistic_.named_steps["scale"]
        classifier: LogisticRegression = self.logistic_.named_steps["classify"]
        z = scaler.transform(vectorizer.transform(linear_rows([row])))[0]
        out = dict.fromkeys(self.boosted_.layout.columns, 0.0)
        for column, push in zip(vectorizer.get_feature_names_out(), classifier.coef_[0] * z, strict=True):
            out[reason_code_of(str(column).split("=", 1)[0])] += float(push)
        return out

    def explain_row(self, row: dict[str, Any]) -> tuple[float, dict[str, float]]:
        """(calibrated log-odds, contribution per code): the contributions sum to the log-odds
        minus `base_value`, and are the weighted sum of the parts' exact contributions."""
        raw_boosted, boosted = self.boosted_.explain_row(row)
        linear = self.linear_contributions(row)
        w, slope = self.weight_, self.slope_
        logit = slope * (w * raw_boosted + (1 - w) * float(self._linear_logit([row])[0])) + self.intercept_
        pushes = {name: slope * (w * boosted[name] + (1 - w) * linear[name]) for name in self.boosted_.layout.columns}
        return float(logit), pushes
