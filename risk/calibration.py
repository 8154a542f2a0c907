"""What the service's log-odds models share: their inner cross-validation and Platt calibration.

A model here (`risk.boosted.BoostedTrees`, `risk.blend.Blend`) makes every choice inside the
data it is given, on the out-of-fold log-odds of an inner stratified k-fold CV
(`inner_splits`: the same folds for every part of a model, so that out-of-fold scores of
its parts line up), then calibrates with a Platt sigmoid fitted on those out-of-fold scores
(`platt`). The sigmoid's slope is kept positive: a calibration that reversed the order of
applicants would turn every reason around.

`LogOddsClassifier` turns a model's calibrated log-odds (`decision_function`) into the
scikit-learn classifier interface.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

Key = TypeVar("Key")
Split = tuple[np.ndarray, np.ndarray]


def sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def log_losses(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Mean log loss of each row of `logits` (log-odds of bad) against `labels`, all at once:
    log(1 + e^z) - y z, the same figure as `sklearn.metrics.log_loss` of their sigmoid."""
    return np.asarray(np.mean(np.logaddexp(0.0, logits) - labels * logits, axis=-1))


def inner_splits(labels: np.ndarray, folds: int, seed: int) -> list[Split]:
    """The inner CV's (train, test) index pairs: stratified, shuffled by `seed`."""
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(labels)), labels))


def platt(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Slope and intercept of a sigmoid on `scores`; the identity unless the slope is positive."""
    fitted = LogisticRegression(C=1e6, max_iter=1000).fit(scores.reshape(-1, 1), labels)
    slope, intercept = float(fitted.coef_[0, 0]), float(fitted.intercept_[0])
    return (slope, intercept) if slope > 0 else (1.0, 0.0)


def best_calibrated(candidates: Iterable[tuple[Key, np.ndarray]], labels: np.ndarray) -> tuple[Key, float, float]:
    """Of several out-of-fold log-odds, the one whose Platt-calibrated log loss is lowest:
    (its key, slope, intercept)."""
    best: tuple[float, Key, float, float] | None = None
    for key, scores in candidates:
        slope, intercept = platt(scores, labels)
        loss = float(log_losses(slope * scores + intercept, labels))
        if best is None or loss < best[0]:
            best = (loss, key, slope, intercept)
    if best is None:
        raise ValueError("no candidate scores to calibrate")
    return best[1], best[2], best[3]


class LogOddsClassifier(ClassifierMixin, BaseEstimator):
    """P(bad) = sigmoid(`decision_function`), the calibrated log-odds of bad."""

    classes_: np.ndarray

    def decision_function(self, rows: list[dict[str, Any]]) -> np.ndarray:
        raise NotImplementedError

    def predict_proba(self, rows: list[dict[str, Any]]) -> np.ndarray:
        p = sigmoid(self.decision_function(rows))
        return np.column_stack([1 - p, p])

    def predict(self, rows: list[dict[str, Any]]) -> np.ndarray:
        return self.predict_proba(rows)[:, 1] > 0.5
