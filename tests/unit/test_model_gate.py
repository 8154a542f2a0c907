"""The gate on new data: a challenger trained on other data is compared with the champion's
training procedure re-run on the challenger's folds, like with like."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from risk.artifacts import current_version
from risk.errors import ModelError
from risk.integrity import Signer, sign_version
from risk.model import TrainingData, load_training_data
from risk.policy import CostMatrix
from risk.registry import Gate, history, metadata, promote, train_version

COSTS = CostMatrix(review_cost=0.7)
KIND = "logistic_plain"  # the fastest real training procedure; the gate treats every kind alike


@pytest.fixture(scope="module")
def old_and_new(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, TrainingData]:
    """A champion trained on the first 900 applicants, a challenger on all 1000."""
    model_dir = tmp_path_factory.mktemp("models")
    full = load_training_data()
    old = TrainingData(full.applications[:900], full.bad[:900], "0" * 64, full.protected[:900])
    champion = train_version(model_dir, old, COSTS, 0.15, repeats=1, kind=KIND)
    challenger = train_version(model_dir, full, COSTS, 0.15, repeats=1, kind=KIND)
    return model_dir, champion, challenger, full


def _fresh(tmp_path: Path, source: Path, *versions: str) -> Path:
    for v in versions:
        (tmp_path / v).mkdir()
        for f in (source / v).iterdir():
            (tmp_path / v / f.name).write_bytes(f.read_bytes())
    return tmp_path


def test_challenger_on_new_data_is_judged_against_the_champion_retrained_on_its_folds(
    tmp_path: Path, old_and_new
) -> None:
    source, champion, challenger, data = old_and_new
    model_dir = _fresh(tmp_path, source, champion, challenger)
    promote(model_dir, champion)
    reasons = promote(model_dir, challenger, Gate(), data=data)
    assert current_version(model_dir) == challenger
    assert f"{champion} ({KIND}) re-trained and evaluated on the challenger's folds" in reasons[0]
    # The same procedure on the same folds: the same figures, so nothing is worse.
    meta = metadata(model_dir, challenger)
    assert f"cost per applicant {meta['metrics']['cost_policy']['mean']:.4f} vs champion" in reasons[1]
    assert any(r.startswith("sex: disparate impact") for r in reasons)
    assert history(model_dir)[-1]["reasons"] == reasons


def test_challenger_on_new_data_that_is_worse_than_the_retrained_champion_is_refused(
    tmp_path: Path, old_and_new
) -> None:
    source, champion, challenger, data = old_and_new
    model_dir = _fresh(tmp_path, source, champion, challenger)
    promote(model_dir, champion)
    path = model_dir / challenger / "metadata.json"
    meta = json.loads(path.read_text())
    meta["metrics"]["cost_policy"]["mean"] += 0.02
    path.write_text(json.dumps(meta))
    sign_version(model_dir / challenger, Signer())  # a signed challenger with these metrics
    with pytest.raises(ModelError, match="re-trained and evaluated on the challenger's folds; cost per applicant"):
        promote(model_dir, challenger, Gate(), data=data)
    assert current_version(model_dir) == champion


def test_challenger_on_new_data_is_refused_when_its_data_is_not_at_hand(tmp_path: Path, old_and_new) -> None:
    source, champion, challenger, data = old_and_new
    model_dir = _fresh(tmp_path, source, champion, challenger)
    promote(model_dir, champion)
    with pytest.raises(ModelError, match="other folds"):
        promote(model_dir, challenger, Gate())
    with pytest.raises(ModelError, match="other folds"):  # data, but not the challenger's
        promote(model_dir, challenger, Gate(), data=replace(data, sha256="f" * 64))
    assert current_version(model_dir) == champion


def test_a_champion_of_an_unknown_kind_cannot_be_retrained(tmp_path: Path, old_and_new) -> None:
    source, champion, challenger, data = old_and_new
    model_dir = _fresh(tmp_path, source, champion, challenger)
    promote(model_dir, champion)
    path = model_dir / champion / "metadata.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"kind": "retired"}))
    sign_version(model_dir / champion, Signer())  # a signed champion of that kind
    with pytest.raises(ModelError, match="'retired' is not a known training procedure"):
        promote(model_dir, challenger, Gate(), data=data)
