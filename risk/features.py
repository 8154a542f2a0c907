"""The applicant features: the signup event's field names and codes, mapped to the data set.

One table drives the event's JSON Schema, the training data loader and the reason codes, so
the three cannot drift apart. Two columns of the data set are deliberately not features:
`personal_status_and_sex` (sex and marital status) and `foreign_worker` (national origin)
are protected attributes that a lender must not decide on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Feature:
    """One application field: its event name, its data set column and how to explain it."""

    name: str
    column: str
    reason: str
    description: str
    # Categorical features: event code -> data set label.
    codes: dict[str, str] = field(default_factory=dict)
    # Numeric features: inclusive bounds accepted in an event.
    minimum: float | None = None
    maximum: float | None = None
    integer: bool = True

    @property
    def categorical(self) -> bool:
        return bool(self.codes)

    def to_model_value(self, value: Any) -> str | float:
        """The value as the model sees it: the data set's label, or a float."""
        if self.categorical:
            return self.codes[value]
        return float(value)


FEATURES: tuple[Feature, ...] = (
    Feature(
        "checking_account",
        "status_of_existing_checking_account",
        "Status of existing checking account",
        "Balance of the applicant's checking account at this bank.",
        codes={
            "negative": "... < 0 DM",
            "under_200": "0 <= ... < 200 DM",
            "200_or_more": "... >= 200 DM / salary assignments for at least 1 year",
            "none": "no checking account",
        },
    ),
    Feature(
        "duration_months",
        "duration_in_month",
        "Length of the credit requested",
        "Requested credit duration in months.",
        minimum=1,
        maximum=120,
    ),
    Feature(
        "credit_history",
        "credit_history",
        "Credit history",
        "How the applicant has repaid credit before.",
        codes={
            "no_credits_or_all_paid": "no credits taken/ all credits paid back duly",
            "all_paid_at_this_bank": "all credits at this bank paid back duly",
            "existing_paid_duly": "existing credits paid back duly till now",
            "past_delays": "delay in paying off in the past",
            "critical_account": "critical account/ other credits existing (not at this bank)",
        },
    ),
    Feature(
        "purpose",
        "purpose",
        "Purpose of the credit",
        "What the credit is for.",
        codes={
            "car_new": "car (new)",
            "car_used": "car (used)",
            "furniture_equipment": "furniture/equipment",
            "radio_television": "radio/television",
            "domestic_appliances": "domestic appliances",
            "repairs": "repairs",
            "education": "education",
            "retraining": "retraining",
            "business": "business",
            "others": "others",
        },
    ),
    Feature(
        "credit_amount",
        "credit_amount",
        "Amount of credit requested",
        "Requested credit amount (DM).",
        minimum=1,
        maximum=1_000_000,
        integer=False,
    ),
    Feature(
        "savings",
        "savings_account_and_bonds",
        "Savings and bonds",
        "Balance of savings accounts and bonds.",
        codes={
            "under_100": "... < 100 DM",
            "100_to_500": "100 <= ... < 500 DM",
            "500_to_1000": "500 <= ... < 1000 DM",
            "1000_or_more": "... >= 1000 DM",
            "unknown_or_none": "unknown/ no savings account",
        },
    ),
    Feature(
        "employment_since",
        "present_employment_since",
        "Length of present employment",
        "How long the applicant has held the present job.",
        codes={
            "unemployed": "unemployed",
            "under_1_year": "... < 1 year",
            "1_to_4_years": "1 <= ... < 4 years",
            "4_to_7_years": "4 <= ... < 7 years",
            "7_years_or_more": "... >= 7 years",
        },
    ),
    Feature(
        "installment_rate_pct",
        "installment_rate_in_percentage_of_disposable_income",
        "Instalment as a share of disposable income",
        "Instalment rate as a percentage of disposable income, in bands 1 (low) to 4 (high).",
        minimum=1,
        maximum=4,
    ),
    Feature(
        "other_debtors",
        "other_debtors_or_guarantors",
        "Other debtors or guarantors",
        "Whether someone else shares or guarantees the credit.",
        codes={"none": "none", "co_applicant": "co-applicant", "guarantor": "guarantor"},
    ),
    Feature(
        "residence_since",
        "present_residence_since",
        "Length of present residence",
        "Years at the present residence, in bands 1 (short) to 4 (long).",
        minimum=1,
        maximum=4,
    ),
    Feature(
        "property",
        "property",
        "Property owned",
        "The most valuable property the applicant owns.",
        codes={
            "real_estate": "real estate",
            "savings_or_insurance": "building society savings agreement/ life insurance",
            "car_or_other": "car or other, not in attribute Savings account/bonds",
            "unknown_or_none": "unknown / no property",
        },
    ),
    Feature(
        "age_years",
        "age_in_years",
        "Age",
        "Applicant's age in years.",
        minimum=18,
        maximum=120,
    ),
    Feature(
        "other_installment_plans",
        "other_installment_plans",
        "Other instalment plans",
        "Instalment plans the applicant has elsewhere.",
        codes={"none": "none", "bank": "bank", "stores": "stores"},
    ),
    Feature(
        "housing",
        "housing",
        "Housing",
        "Whether the applicant rents, owns or lives for free.",
        codes={"rent": "rent", "own": "own", "for_free": "for free"},
    ),
    Feature(
        "existing_credits",
        "number_of_existing_credits_at_this_bank",
        "Number of existing credits at this bank",
        "Credits the applicant already has at this bank.",
        minimum=0,
        maximum=50,
    ),
    Feature(
        "job",
        "job",
        "Occupation",
        "The applicant's kind of employment.",
        codes={
            "unemployed_or_unskilled_nonresident": "unemployed/ unskilled - non-resident",
            "unskilled_resident": "unskilled - resident",
            "skilled": "skilled employee / official",
            "highly_qualified": "management/ self-employed/ highly qualified employee/ officer",
        },
    ),
    Feature(
        "dependents",
        "number_of_people_being_liable_to_provide_maintenance_for",
        "Number of dependants",
        "People the applicant is liable to provide maintenance for.",
        minimum=0,
        maximum=20,
    ),
    Feature(
        "has_telephone",
        "telephone",
        "No telephone registered",
        "Whether a telephone is registered under the applicant's name.",
        codes={"true": "yes, registered under the customers name", "false": "none"},
    ),
)

FEATURES_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
LABEL_COLUMN = "creditability"
BAD_LABEL = "bad"


# Derived features: the model sees these next to the raw ones. Credit amount and duration
# are strongly skewed, and what an applicant must pay per month matters more than either.
DERIVED_FEATURES = ("log_credit_amount", "log_duration_months", "log_monthly_amount")


def raw_model_row(application: Mapping[str, Any]) -> dict[str, str | float]:
    """Map a validated application (event codes) to data set labels and floats."""
    row: dict[str, str | float] = {}
    for feature in FEATURES:
        value = application[feature.name]
        if isinstance(value, bool):
            value = "true" if value else "false"
        row[feature.name] = feature.to_model_value(value)
    return row


def application_to_model_row(application: Mapping[str, Any]) -> dict[str, str | float]:
    """The model's input row: the raw features plus the derived ones."""
    row = raw_model_row(application)
    amount = max(1.0, float(row["credit_amount"]))
    months = max(1.0, float(row["duration_months"]))
    row["log_credit_amount"] = math.log(amount)
    row["log_duration_months"] = math.log(months)
    row["log_monthly_amount"] = math.log(amount / months)
    return row


def csv_row_to_application(record: dict[str, str]) -> dict[str, Any]:
    """Map one data set row to an application in event codes (for training and samples)."""
    application: dict[str, Any] = {}
    for feature in FEATURES:
        raw = record[feature.column]
        if feature.categorical:
            code = next(c for c, label in feature.codes.items() if label == raw)
            application[feature.name] = (code == "true") if feature.name == "has_telephone" else code
        elif feature.integer:
            application[feature.name] = int(raw)
        else:
            application[feature.name] = float(raw)
    return application


def application_json_schema() -> dict[str, Any]:
    """The JSON Schema of the `application` object of a signup event."""
    properties: dict[str, Any] = {}
    for feature in FEATURES:
        if feature.name == "has_telephone":
            prop: dict[str, Any] = {"type": "boolean"}
        elif feature.categorical:
            prop = {"type": "string", "enum": list(feature.codes)}
        else:
            prop = {"type": "integer" if feature.integer else "number"}
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


def signup_schema_document() -> dict[str, Any]:
    """The signup contract v1 (onboarding/schemas/signup.v1.json) as generated from the feature
    table; a test keeps the file and the table in sync."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:onboarding:signup:v1",
        "title": "Signup event",
        "description": "A new applicant, published by a product app to the signups stream.",
        "type": "object",
        "additionalProperties": False,
        "required": ["schema_version", "event_id", "user_id", "occurred_at", "application"],
        "properties": {
            "schema_version": {"const": 1, "description": "Version of this schema."},
            "event_id": {
                "type": "string",
                "pattern": "^[A-Za-z0-9][A-Za-z0-9._:~+-]{0,127}$",
                "description": "Unique id of this event (at most 128 characters: letters, "
                "digits and . _ : ~ + -). A retry of the same signup reuses it.",
            },
            "user_id": {
                "type": "string",
                "minLength": 1,
                "maxLength": 128,
                "pattern": "^[^\\u0000-\\u001f\\u007f]+$",
                "description": "The applicant's id in the product app.",
            },
            "occurred_at": {
                "type": "string",
                "format": "date-time",
                "description": "When the applicant signed up (RFC 3339, with offset).",
            },
            "application": application_json_schema(),
        },
    }
