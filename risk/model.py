"""The risk model: a scikit-learn Pipeline, trained on the credit data, explained per applicant.

The pipeline takes a dict per applicant (DictVectorizer one-hot encodes the categorical
labels), standardises, and fits a logistic regression for P(bad). Because the model is
linear in standardised features, each feature's push toward "bad" is exactly
coef * z, summed over the feature's one-hot columns; those pushes are the reason codes.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from risk.features import (
    BAD_LABEL,
    FEATURES,
    FEATURES_BY_NAME,
    LABEL_COLUMN,
    application_to_model_row,
    csv_row_to_application,
)
from risk.policy import CostMatrix, Decision, Policy, expected_cost

DEFAULT_DATA_PATH = Path(__file__).parent / "data" / "german_credit.csv"


@dataclass(frozen=True)
class TrainingData:
    applications: list[dict[str, Any]]
    bad: list[bool]
    sha256: str


@dataclass(frozen=True)
class ReasonCode:
    code: str
    text: str
    contribution: float

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "text": self.text, "contribution": round(self.contribution, 4)}


def load_training_data(path: Path = DEFAULT_DATA_PATH) -> TrainingData:
    raw = path.read_bytes()
    with path.open(newline="", encoding="utf-8") as fh:
        records = list(csv.DictReader(fh))
    return TrainingData(
        applications=[csv_row_to_application(r) for r in records],
        bad=[r[LABEL_COLUMN] == BAD_LABEL for r in records],
        sha256=hashlib.sha256(raw).hexdigest(),
    )


def build_pipeline(c: float = 0.3) -> Pipeline:
    return Pipeline(
        [
            ("vectorize", DictVectorizer(sparse=False)),
            ("scale", StandardScaler()),
            ("classify", LogisticRegression(C=c, max_iter=2000)),
        ]
    )


def fit(data: TrainingData, c: float = 0.3) -> Pipeline:
    pipeline = build_pipeline(c)
    pipeline.fit([application_to_model_row(a) for a in data.applications], np.array(data.bad))
    return pipeline


def evaluate(data: TrainingData, costs: CostMatrix, policy: Policy, seed: int = 0) -> dict[str, float]:
    """10-fold stratified cross-validated AUC and expected cost per applicant."""
    rows = [application_to_model_row(a) for a in data.applications]
    y = np.array(data.bad)
    folds = StratifiedKFold(n_splits=10, shuffle=True, random_state=seed)
    p_bad = cross_val_predict(build_pipeline(), rows, y, cv=folds, method="predict_proba")[:, 1]
    decisions = [policy.decide(float(p)) for p in p_bad]
    bayes = Policy.from_costs(CostMatrix(review_cost=costs.good_declined_cost))
    return {
        "cv_auc": float(roc_auc_score(y, p_bad)),
        "cv_cost_per_applicant": expected_cost(decisions, list(data.bad), costs),
        "cv_cost_bayes_rule": expected_cost([bayes.decide(float(p)) for p in p_bad], list(data.bad), costs),
        "cv_review_rate": sum(d is Decision.REVIEW for d in decisions) / len(decisions),
    }


def probability_bad(pipeline: Pipeline, application: dict[str, Any]) -> float:
    row = application_to_model_row(application)
    return float(pipeline.predict_proba([row])[0, 1])


def reason_codes(pipeline: Pipeline, application: dict[str, Any], top: int = 4) -> list[ReasonCode]:
    """The features that pushed this applicant's score furthest toward decline, largest first."""
    vectorizer: DictVectorizer = pipeline.named_steps["vectorize"]
    scaler: StandardScaler = pipeline.named_steps["scale"]
    classifier: LogisticRegression = pipeline.named_steps["classify"]
    z = scaler.transform(vectorizer.transform([application_to_model_row(application)]))[0]
    pushes = classifier.coef_[0] * z
    per_feature: dict[str, float] = {}
    for column, push in zip(vectorizer.get_feature_names_out(), pushes, strict=True):
        name = str(column).split("=", 1)[0]
        per_feature[name] = per_feature.get(name, 0.0) + float(push)
    ranked = sorted(
        ((name, push) for name, push in per_feature.items() if push > 0),
        key=lambda item: item[1],
        reverse=True,
    )
    return [
        ReasonCode(code=name, text=_reason_text(name, application[name]), contribution=push)
        for name, push in ranked[:top]
    ]


def _reason_text(name: str, value: Any) -> str:
    feature = FEATURES_BY_NAME[name]
    if feature.name == "has_telephone":
        return feature.reason
    shown = str(value).replace("_", " ") if feature.categorical else f"{value:g}"
    return f"{feature.reason}: {shown}"


def feature_schema() -> list[dict[str, Any]]:
    """What the model expects, stored with it and checked against the event schema on load."""
    return [
        {"name": f.name, "kind": "categorical" if f.categorical else "numeric", "codes": sorted(f.codes)}
        for f in FEATURES
    ]
