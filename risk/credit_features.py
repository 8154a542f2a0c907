"""The applicant features of the second data set, R modeldata's `credit_data` (risk/data/
credit_data.csv): the signup event's field names and codes, mapped to the data set.

The service uses this contract instead of the German credit one when ONBOARDING_DATASET is
`credit_data` (`risk.datasets`). `Marital` (marital status) is a protected attribute and not
a field of the event: it is read from the data set for the fairness report only, like age
bands. Fields with the same meaning as the German contract's keep its names
(`duration_months`, `credit_amount`, `age_years`), so enrichment and the monthly-repayment
reason are shared.

Missing values, explicitly (docs/model.md, "The second data set"):
- a categorical field that the data set leaves empty (`Home` 6 times, `Job` twice) is the
  code `not_stated`, a category of its own for every model;
- `income`, `assets` and `debt` may be `null` in an event (`Income` is missing for 381
  applicants, `Assets` 47, `Debt` 18). The model row then carries 0 and the indicator
  `<field>_stated = no` (the linear models learn the indicator's weight); the boosted trees
  see a missing value and send it the way each split learned for missing values in
  training (scikit-learn's native handling, kept by the compiled trees).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from risk.features import Feature

NOT_STATED = "not_stated"

FEATURES: tuple[Feature, ...] = (
    Feature(
        "seniority_years",
        "Seniority",
        "Years with the present employer",
        "Years the applicant has worked for the present employer.",
        minimum=0,
        maximum=70,
    ),
    Feature(
        "home",
        "Home",
        "Housing",
        "Whether the applicant owns, rents, lives with parents or otherwise.",
        codes={
            "owner": "owner",
            "rent": "rent",
            "parents": "parents",
            "private": "priv",
            "other": "other",
            "ignore": "ignore",
            NOT_STATED: "",
        },
    ),
    Feature(
        "duration_months",
        "Time",
        "Length of the credit requested",
        "Requested credit duration in months.",
        minimum=1,
        maximum=120,
    ),
    Feature("age_years", "Age", "Age", "Applicant's age in years.", minimum=18, maximum=120),
    Feature(
        "has_arrears_records",
        "Records",
        "Arrears on record",
        "Whether the applicant has past arrears on record.",
        codes={"true": "yes", "false": "no"},
    ),
    Feature(
        "job",
        "Job",
        "Kind of employment",
        "The applicant's kind of employment.",
        codes={
            "fixed": "fixed",
            "freelance": "freelance",
            "part_time": "partime",
            "others": "others",
            NOT_STATED: "",
        },
    ),
    Feature(
        "expenses",
        "Expenses",
        "Monthly expenses",
        "The applicant's monthly expenses.",
        minimum=0,
        maximum=1_000_000,
    ),
    Feature(
        "income",
        "Income",
        "Income",
        "The applicant's monthly income; null if not stated.",
        minimum=0,
        maximum=10_000_000,
        integer=False,
    ),
    Feature(
        "assets",
        "Assets",
        "Assets",
        "The applicant's assets; null if not stated.",
        minimum=0,
        maximum=100_000_000,
        integer=False,
    ),
    Feature(
        "debt",
        "Debt",
        "Debt",
        "The applicant's debt; null if not stated.",
        minimum=0,
        maximum=100_000_000,
        integer=False,
    ),
    Feature(
        "credit_amount",
        "Amount",
        "Amount of credit requested",
        "Requested credit amount.",
        minimum=1,
        maximum=1_000_000,
        integer=False,
    ),
    Feature(
        "price",
        "Price",
        "Price of the goods financed",
        "Price of the goods the credit pays for.",
        minimum=1,
        maximum=10_000_000,
        integer=False,
    ),
)

FEATURES_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
NULLABLE = ("income", "assets", "debt")
BOOLEAN = ("has_arrears_records",)
LABEL_COLUMN = "Status"
BAD_LABEL = "bad"
MARITAL_COLUMN = "Marital"
AGE_COLUMN = "Age"
DERIVED_FEATURES = (
    "log_credit_amount",
    "log_duration_months",
    "log_monthly_amount",
    "log_price",
    "log_amount_to_price",
)
# Derived reasons (trees' columns beyond the fields) and their texts.
DERIVED_REASONS = {
    "monthly_amount": "Monthly repayment for the credit requested",
    "amount_to_price": "Share of the price financed",
}


def stated(name: str) -> str:
    """The indicator column of a nullable field: `yes` if the applicant stated it."""
    return f"{name}_stated"


def raw_model_row(application: Mapping[str, Any]) -> dict[str, str | float]:
    """Map a validated application (event codes) to data set labels and floats; a nullable
    field not stated is 0 with its indicator `no`."""
    row: dict[str, str | float] = {}
    for feature in FEATURES:
        value = application[feature.name]
        if feature.name in NULLABLE:
            row[feature.name] = 0.0 if value is None else float(value)
            row[stated(feature.name)] = "no" if value is None else "yes"
        elif isinstance(value, bool):
            row[feature.name] = feature.codes["true" if value else "false"]
        else:
            row[feature.name] = feature.to_model_value(value)
    return row


def application_to_model_row(application: Mapping[str, Any]) -> dict[str, str | float]:
    """The model's input row: the raw features plus the derived ones."""
    row = raw_model_row(application)
    amount = max(1.0, float(row["credit_amount"]))
    months = max(1.0, float(row["duration_months"]))
    price = max(1.0, float(row["price"]))
    row["log_credit_amount"] = math.log(amount)
    row["log_duration_months"] = math.log(months)
    row["log_monthly_amount"] = math.log(amount / months)
    row["log_price"] = math.log(price)
    row["log_amount_to_price"] = math.log(amount / price)
    return row


def csv_row_to_application(record: Mapping[str, str]) -> dict[str, Any]:
    """Map one data set row to an application in event codes (an empty cell: not stated)."""
    application: dict[str, Any] = {}
    for feature in FEATURES:
        raw = record[feature.column]
        if feature.name in BOOLEAN:
            application[feature.name] = raw == feature.codes["true"]
        elif feature.categorical:
            application[feature.name] = next(c for c, label in feature.codes.items() if label == raw)
        elif raw == "" and feature.name in NULLABLE:
            application[feature.name] = None
        elif feature.integer:
            application[feature.name] = int(raw)
        else:
            application[feature.name] = float(raw)
    return application


def application_json_schema() -> dict[str, Any]:
    """The JSON Schema of the `application` object of a credit_data signup event."""
    properties: dict[str, Any] = {}
    for feature in FEATURES:
        if feature.name in BOOLEAN:
            prop: dict[str, Any] = {"type": "boolean"}
        elif feature.categorical:
            prop = {"type": "string", "enum": list(feature.codes)}
        else:
            kind = "integer" if feature.integer else "number"
            prop = {"type": [kind, "null"] if feature.name in NULLABLE else kind}
            prop["minimum"] = feature.minimum
            prop["maximum"] = feature.maximum
        prop["description"] = feature.description
        properties[feature.name] = prop
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [f.name for f in FEATURES],
        "properties": properties,
    }
