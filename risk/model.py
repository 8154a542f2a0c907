"""The risk model: trained on the credit data, explained per applicant.

The service's model (`MODEL_KIND`, "boosted") is gradient-boosted trees with exact TreeSHAP
contributions (`risk.boosted`; it does not use age): each feature's push toward "bad", in calibrated log-odds,
and the pushes sum exactly to the applicant's log-odds minus the base value. Versions of the
earlier kind ("logistic", a calibrated logistic regression) still load and explain: their
pushes are coef * z summed over the feature's one-hot columns. The largest positive pushes
are the reason codes.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from risk.blend import Blend
from risk.boosted import BoostedTrees
from risk.errors import ModelError
from risk.fairness import protected_attributes
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
    # Sex, age band and foreign-worker status per applicant: for the fairness report only.
    protected: list[dict[str, str]] = field(default_factory=list)


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
        protected=[protected_attributes(r) for r in records],
    )


MODEL_KIND = "boosted"


def build_model(seed: int = 0, kind: str = MODEL_KIND) -> Any:
    """The training procedure of a model kind (the service's by default), ready to fit."""
    from risk.evaluation import CANDIDATES

    candidate = CANDIDATES.get(kind)
    if candidate is None or candidate.make is None:
        raise ModelError(f"model kind {kind!r} has no estimator to build")
    model = candidate.make(seed)
    if isinstance(model, BoostedTrees | Blend):
        model.set_params(explain=True)  # the version in service explains every decision
    return model


def fit(data: TrainingData, seed: int = 0, kind: str = MODEL_KIND) -> Any:
    model = build_model(seed, kind)
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


def contributions(model: Any, application: dict[str, Any]) -> dict[str, float]:
    """Each reason code's push toward "bad" for this applicant, in log-odds.

    Exact for every kind: for boosted trees the TreeSHAP values (they sum to the calibrated
    log-odds minus `BoostedTrees.base_value`); for a blend the same weighted sum of the trees'
    TreeSHAP values and the logistic part's coef * z (they sum to its calibrated log-odds
    minus `Blend.base_value`); for the linear model coef * z summed over the
    feature's columns (in the uncalibrated linear model's units; the calibration is monotonic).
    """
    if isinstance(model, BoostedTrees | Blend):
        return model.explain_row(application_to_model_row(application))[1]
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
    return per_feature


def reason_codes(model: Any, application: dict[str, Any], top: int = 4) -> list[ReasonCode]:
    """The features that pushed this applicant's score furthest toward decline, largest first
    (adverse-action reasons): the positive `contributions`, at most `top`."""
    ranked = sorted(
        ((name, push) for name, push in contributions(model, application).items() if push > 0),
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
