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
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from risk.errors import ModelError
from risk.features import (
    BAD_LABEL,
    DERIVED_FEATURES,
    FEATURES,
    FEATURES_BY_NAME,
    LABEL_COLUMN,
    application_to_model_row,
    csv_row_to_application,
)

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


MODEL_KIND = "logistic"


def build_model(seed: int = 0) -> Any:
    """The service's model: calibrated logistic regression, C tuned by inner CV."""
    from risk.evaluation import CANDIDATES

    factory = CANDIDATES[MODEL_KIND].make
    if factory is None:
        raise ModelError(f"model kind {MODEL_KIND!r} has no estimator to build")
    return factory(seed)


def fit(data: TrainingData, seed: int = 0) -> Any:
    model = build_model(seed)
    model.fit([application_to_model_row(a) for a in data.applications], np.array(data.bad))
    return model


def linear_part(model: Any) -> Pipeline:
    """The fitted linear pipeline inside the (calibrated) model, for explanations."""
    if isinstance(model, CalibratedClassifierCV):
        return model.calibrated_classifiers_[0].estimator
    return model


def probability_bad(model: Any, application: dict[str, Any]) -> float:
    row = application_to_model_row(application)
    return float(model.predict_proba([row])[0, 1])


def reason_codes(model: Any, application: dict[str, Any], top: int = 4) -> list[ReasonCode]:
    """The features that pushed this applicant's score furthest toward decline, largest first.

    Exact for the linear model: each feature's push is coef * z summed over its columns;
    the calibration is monotonic, so it keeps the order.
    """
    pipeline = linear_part(model)
    vectorizer: DictVectorizer = pipeline.named_steps["vectorize"]
    scaler: StandardScaler = pipeline.named_steps["scale"]
    classifier: LogisticRegression = pipeline.named_steps["classify"]
    z = scaler.transform(vectorizer.transform([application_to_model_row(application)]))[0]
    pushes = classifier.coef_[0] * z
    per_feature: dict[str, float] = {}
    for column, push in zip(vectorizer.get_feature_names_out(), pushes, strict=True):
        name = str(column).split("=", 1)[0]
        name = REASON_GROUP.get(name, name)
        per_feature[name] = per_feature.get(name, 0.0) + float(push)
    ranked = sorted(
        ((name, push) for name, push in per_feature.items() if push > 0),
        key=lambda item: item[1],
        reverse=True,
    )
    return [
        ReasonCode(code=name, text=_reason_text(name, application), contribution=push) for name, push in ranked[:top]
    ]


# Derived features are explained as the applicant's own figures.
REASON_GROUP = {
    "log_credit_amount": "credit_amount",
    "log_duration_months": "duration_months",
    "log_monthly_amount": "monthly_amount",
}


def generic_reason_text(name: str) -> str:
    """A reason's text without the applicant's value: what a decision event carries (the app
    holds the application itself; other readers of the decisions stream need no more)."""
    if name == "monthly_amount":
        return "Monthly repayment for the credit requested"
    feature = FEATURES_BY_NAME.get(name)
    return feature.reason if feature is not None else name.replace("_", " ")


def _reason_text(name: str, application: dict[str, Any]) -> str:
    if name == "monthly_amount":
        monthly = float(application["credit_amount"]) / max(1, int(application["duration_months"]))
        return f"Monthly repayment for the credit requested: {monthly:.0f}"
    feature = FEATURES_BY_NAME[name]
    value = application[name]
    if feature.name == "has_telephone":
        return feature.reason
    shown = str(value).replace("_", " ") if feature.categorical else f"{value:g}"
    return f"{feature.reason}: {shown}"


def feature_schema() -> list[dict[str, Any]]:
    """What the model expects, stored with it and checked against the event schema on load."""
    return [
        {"name": f.name, "kind": "categorical" if f.categorical else "numeric", "codes": sorted(f.codes)}
        for f in FEATURES
    ] + [{"name": name, "kind": "derived", "codes": []} for name in DERIVED_FEATURES]
