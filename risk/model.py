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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction import DictVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from risk.blend import Blend
from risk.boosted import BoostedTrees
from risk.datasets import dataset, dataset_of, reason_code_of
from risk.datasets import generic_reason_text as _generic_reason_text
from risk.errors import ModelError
from risk.fairness import protected_attributes
from risk.features import BAD_LABEL, LABEL_COLUMN, csv_row_to_application
from risk.records import ReasonCode

DEFAULT_DATA_PATH = Path(__file__).parent / "data" / "german_credit.csv"


@dataclass(frozen=True)
class TrainingData:
    applications: list[dict[str, Any]]
    bad: list[bool]
    sha256: str
    # Sex, age band and foreign-worker status per applicant (credit_data: age band and marital
    # status): for the fairness report only.
    protected: list[dict[str, str]] = field(default_factory=list)
    dataset: str = "german_credit"  # whose feature contract (risk.datasets)


class Scorer(Protocol):
    """A fitted model as the service uses it: P(bad) per application row. The service's kind
    is `risk.boosted.BoostedTrees`; older versions load as a `Blend` or a (calibrated)
    scikit-learn pipeline."""

    def predict_proba(self, rows: list[dict[str, Any]]) -> np.ndarray: ...


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


def load_dataset(name: str | None = None) -> TrainingData:
    """A data set's training data by its name (ONBOARDING_DATASET; default German credit)."""
    contract = dataset(name)
    records, sha256 = _load_records(contract.name)
    return TrainingData(
        applications=[contract.to_application(r) for r in records],
        bad=[r[contract.label_column] == contract.bad_label for r in records],
        sha256=sha256,
        protected=[contract.protected(r) for r in records],
        dataset=contract.name,
    )


def _load_records(name: str) -> tuple[list[dict[str, str]], str]:
    from risk.datasets import load

    return load(name)


MODEL_KIND = "boosted"


def build_model(seed: int = 0, kind: str = MODEL_KIND, dataset: str | None = None) -> Any:
    """The training procedure of a model kind (the service's by default), ready to fit, for
    a data set's contract (default German credit)."""
    from risk.evaluation import CANDIDATES

    candidate = CANDIDATES.get(kind)
    if candidate is None or candidate.make is None:
        raise ModelError(f"model kind {kind!r} has no estimator to build")
    model = candidate.build(seed, dataset)
    if isinstance(model, BoostedTrees | Blend):
        model.set_params(explain=True)  # the version in service explains every decision
    return model


def fit(data: TrainingData, seed: int = 0, kind: str | None = None) -> Any:
    """The training procedure of `kind` (default: the data set's service kind) fitted on all of `data`."""
    model = build_model(seed, kind or dataset(data.dataset).service_kind, data.dataset)
    model.fit([dataset(data.dataset).model_row(a) for a in data.applications], np.array(data.bad))
    return model


def linear_part(model: Scorer) -> Pipeline:
    """The fitted linear pipeline inside the (calibrated) model, for explanations."""
    if isinstance(model, CalibratedClassifierCV):
        return model.calibrated_classifiers_[0].estimator
    return model


def probability_bad(model: Scorer, application: Mapping[str, Any]) -> float:
    row = dataset_of(model).model_row(application)
    return float(model.predict_proba([row])[0, 1])


def contributions(model: Scorer, application: Mapping[str, Any]) -> dict[str, float]:
    """Each reason code's push toward "bad" for this applicant, in log-odds.

    Exact for every kind: for boosted trees the TreeSHAP values (they sum to the calibrated
    log-odds minus `BoostedTrees.base_value`); for a blend the same weighted sum of the trees'
    TreeSHAP values and the logistic part's coef * z (they sum to its calibrated log-odds
    minus `Blend.base_value`); for the linear model coef * z summed over the
    feature's columns (in the uncalibrated linear model's units; the calibration is monotonic).
    """
    if isinstance(model, BoostedTrees | Blend):
        return model.explain_row(dataset_of(model).model_row(application))[1]
    pipeline = linear_part(model)
    vectorizer: DictVectorizer = pipeline.named_steps["vectorize"]
    scaler: StandardScaler = pipeline.named_steps["scale"]
    classifier: LogisticRegression = pipeline.named_steps["classify"]
    z = scaler.transform(vectorizer.transform([dataset_of(model).model_row(application)]))[0]
    pushes = classifier.coef_[0] * z
    per_feature: dict[str, float] = {}
    for column, push in zip(vectorizer.get_feature_names_out(), pushes, strict=True):
        name = reason_code_of(str(column).split("=", 1)[0])
        per_feature[name] = per_feature.get(name, 0.0) + float(push)
    return per_feature


def reason_codes(model: Scorer, application: Mapping[str, Any], top: int = 4) -> list[ReasonCode]:
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
    holds the application itself; other readers of the decisions stream need no more).
    Either data set's codes (`risk.datasets.generic_reason_text`)."""
    return _generic_reason_text(name)


def _reason_text(name: str, application: Mapping[str, Any]) -> str:
    if name == "monthly_amount":
        monthly = float(application["credit_amount"]) / max(1, int(application["duration_months"]))
        return f"Monthly repayment for the credit requested: {monthly:.0f}"
    if name == "amount_to_price":
        share = float(application["credit_amount"]) / max(1.0, float(application["price"]))
        return f"{_generic_reason_text(name)}: {share:.0%}"
    value = application.get(name)
    if name not in application or isinstance(value, bool):
        return _generic_reason_text(name)
    if value is None:
        return f"{_generic_reason_text(name)}: not stated"
    shown = str(value).replace("_", " ") if isinstance(value, str) else f"{value:g}"
    return f"{_generic_reason_text(name)}: {shown}"


def feature_schema(name: str | None = None) -> list[dict[str, Any]]:
    """What a model of a data set expects (default German credit), stored with it and checked
    against the event schema on load."""
    return dataset(name).feature_schema()
