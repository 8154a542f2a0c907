"""The service model's reasons are exact: TreeSHAP tables against a brute-force Shapley
computation, contributions that sum to the log-odds, a calibration that keeps the order,
and reasons that stay the same when the model is retrained on resampled data."""

from __future__ import annotations

import itertools
import math
import random
from functools import cache

import numpy as np
import pytest

from benchmarks.model_stability import bootstrap_models, explained_applicants, reason_agreement
from risk.blend import Blend
from risk.boosted import COLUMNS, BoostedTrees, encode
from risk.features import application_to_model_row
from risk.model import contributions, fit, load_training_data, probability_bad, reason_codes
from risk.samples import sample_application


@cache
def rows() -> list[dict]:
    return [application_to_model_row(a) for a in load_training_data().applications]


@cache
def compiled() -> tuple[BoostedTrees, object]:
    """A small booster (trees of 8 leaves: 7 splits, the most a table holds) and the same trees
    compiled into tables."""
    data = load_training_data()
    model = BoostedTrees(seed=0, explain=True)
    booster = model._booster(8, 1.0, 40).fit(encode(rows()), np.array(data.bad))
    model._compile(booster)
    model.slope_, model.intercept_ = 1.0, 0.0
    return model, booster


@cache
def service_model() -> BoostedTrees:
    return fit(load_training_data())


def test_compiled_trees_score_exactly_like_the_booster() -> None:
    model, booster = compiled()
    jittered = [application_to_model_row(sample_application(random.Random(i))) for i in range(300)]
    for batch in (rows(), jittered):
        assert np.abs(model.raw_score(batch) - booster.decision_function(encode(batch))).max() < 1e-9


def _brute_force_shapley(booster, tree: int, x: np.ndarray) -> dict[int, float]:
    """Path-dependent Shapley values of one tree by definition: the mean marginal contribution
    over every order of the tree's features, v(S) computed by walking the sklearn nodes."""
    predictor = booster._predictors[tree][0]
    nodes = predictor.nodes
    is_cat = np.array(booster.is_categorical_)
    order = np.concatenate([np.flatnonzero(is_cat), np.flatnonzero(~is_cat)])
    encoded = booster._preprocessor.transform(x.reshape(1, -1))[0]

    def goes_left(n: int) -> bool:
        value = encoded[nodes["feature_idx"][n]]
        if nodes["is_categorical"][n]:
            if math.isnan(value):
                return bool(nodes["missing_go_to_left"][n])
            bits = predictor.raw_left_cat_bitsets[nodes["bitset_idx"][n]]
            return bool((int(bits[int(value) // 32]) >> (int(value) % 32)) & 1)
        return bool(value <= nodes["num_threshold"][n])

    def v(known: frozenset[int], n: int = 0) -> float:
        if nodes["is_leaf"][n]:
            return float(nodes["value"][n])
        left, right = int(nodes["left"][n]), int(nodes["right"][n])
        if int(order[nodes["feature_idx"][n]]) in known:
            return v(known, left if goes_left(n) else right)
        c_left, c_right = float(nodes["count"][left]), float(nodes["count"][right])
        return (c_left * v(known, left) + c_right * v(known, right)) / (c_left + c_right)

    used = sorted({int(order[nodes["feature_idx"][n]]) for n in range(len(nodes)) if not nodes["is_leaf"][n]})
    phi = dict.fromkeys(used, 0.0)
    permutations = list(itertools.permutations(used))
    for permutation in permutations:
        known: frozenset[int] = frozenset()
        for feature in permutation:
            phi[feature] += (v(known | {feature}) - v(known)) / len(permutations)
            known = known | {feature}
    return phi


def test_treeshap_tables_equal_brute_force_shapley_values() -> None:
    model, booster = compiled()
    x = encode(rows())
    for i in (0, 1, 7, 123, 999):
        patterns = model._patterns(x[i : i + 1])[0]
        for t in range(12):
            expected = _brute_force_shapley(booster, t, x[i])
            got = dict.fromkeys(range(len(COLUMNS)), 0.0)
            for feature, value in zip(model.shap_feature_[t], model.shap_value_[t, patterns[t]], strict=True):
                if feature < len(COLUMNS):
                    got[int(feature)] += float(value)
            for feature in range(len(COLUMNS)):
                assert got[feature] == pytest.approx(expected.get(feature, 0.0), abs=1e-12), (i, t, feature)


def test_contributions_sum_exactly_to_the_log_odds_minus_the_base_value() -> None:
    model = service_model()
    for application in load_training_data().applications[:200]:
        log_odds, pushes = model.explain_row(application_to_model_row(application))
        p = probability_bad(model, application)
        assert log_odds == pytest.approx(math.log(p / (1 - p)), abs=1e-9)
        assert sum(pushes.values()) == pytest.approx(log_odds - model.base_value, abs=1e-9)
        assert set(pushes) == set(COLUMNS)


def test_calibration_keeps_the_order() -> None:
    model = service_model()
    assert model.slope_ > 0
    raw = model.raw_score(rows())
    p = model.predict_proba(rows())[:, 1]
    order = np.argsort(raw, kind="stable")
    assert np.all(np.diff(p[order]) >= 0)


def test_reasons_are_the_pushes_toward_decline_largest_first_in_words() -> None:
    model = service_model()
    for application in load_training_data().applications[:100]:
        reasons = reason_codes(model, application)
        pushes = contributions(model, application)
        positive = sorted((v for v in pushes.values() if v > 0), reverse=True)[:4]
        assert [r.contribution for r in reasons] == positive
        assert all(r.code in COLUMNS and r.text for r in reasons)


def test_reasons_are_stable_across_retrains_on_resampled_data() -> None:
    """Two bootstrap retrains here; the figures in docs/model.md are from ten
    (`python -m benchmarks.model_stability`)."""
    data = load_training_data()
    models = bootstrap_models(data, 2)
    applicants = explained_applicants(models[0], data)[:150]
    overlap, first = reason_agreement(models, applicants)
    assert overlap >= 0.6
    assert first >= 0.6


def test_the_number_of_trees_is_chosen_on_sklearn_log_loss_of_the_staged_scores() -> None:
    """The inner CV's per-stage log losses, computed at once, are scikit-learn's."""
    from sklearn.metrics import log_loss

    from risk.calibration import log_losses, sigmoid

    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.3
    logits = rng.normal(scale=2.0, size=(5, 300))
    expected = [log_loss(labels, sigmoid(z), labels=[False, True]) for z in logits]
    assert log_losses(logits, labels) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("inner_repeats", [1, 2])
def test_trees_and_calibration_are_chosen_on_an_inner_cv_of_applicants_each_model_had_not_seen(
    inner_repeats: int,
) -> None:
    """The service's procedure scores every applicant it is given with a model trained on the
    other four fifths (the inner 5-fold CV), and fits its Platt sigmoid on exactly those scores:
    the calibration never sees a score of an applicant the scoring model learned from. With
    repeated inner CV (candidate `boosted_inner5x2`), the score is the mean over the repetitions."""
    from risk.boosted import REPEAT_SEED_STEP
    from risk.calibration import inner_splits, platt
    from risk.model import build_model

    data = load_training_data()
    given, labels = rows()[:500], np.array(data.bad[:500])
    model = build_model(seed=2).set_params(max_trees=60, inner_repeats=inner_repeats, explain=False)
    model.fit(given, labels)
    x, chosen = encode(given), model.params_
    out_of_fold = np.zeros(len(labels))
    for repeat in range(inner_repeats):
        splits = inner_splits(labels, 5, 2 + REPEAT_SEED_STEP * repeat)
        assert sorted(len(train) for train, _ in splits) == [400] * 5
        for train, test in splits:
            booster = model._booster(chosen["leaves"], chosen["l2_regularization"], chosen["trees"])
            out_of_fold[test] += booster.fit(x[train], labels[train]).decision_function(x[test]) / inner_repeats
    assert np.abs(model.out_of_fold_ - out_of_fold).max() < 1e-9
    assert (model.slope_, model.intercept_) == pytest.approx(platt(out_of_fold, labels), abs=1e-9)
    assert model.slope_ != 1.0  # calibrated, not the identity


def test_fitting_runs_the_booster_on_one_openmp_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """More threads only synchronise on this data (docs/model.md); the limit holds during
    the fit and is lifted after it."""
    from threadpoolctl import threadpool_info

    from risk import boosted

    seen: list[int] = []
    booster = boosted.BoostedTrees._booster

    def spying(self: BoostedTrees, leaves: int, l2: float, trees: int) -> object:
        seen.extend(p["num_threads"] for p in threadpool_info() if p["user_api"] == "openmp")
        return booster(self, leaves, l2, trees)

    monkeypatch.setattr(boosted.BoostedTrees, "_booster", spying)
    BoostedTrees(seed=0, leaves=(4,), max_trees=30, inner_folds=2, explain=False).fit(
        rows()[:300], load_training_data().bad[:300]
    )
    assert seen and set(seen) == {1}


@cache
def blend_model() -> Blend:
    return fit(load_training_data(), kind="blend")


def test_a_blends_reasons_are_exact_and_the_weighted_sum_of_its_parts() -> None:
    """Shapley values are linear: the blend's contributions are the weighted sum of the trees'
    TreeSHAP values and the logistic part's coef * z, times the Platt slope; they sum to the
    calibrated log-odds minus the base value; the codes are the trees' codes."""
    model = blend_model()
    assert 0.0 <= model.weight_ <= 1.0 and model.slope_ > 0
    for application in load_training_data().applications[:200]:
        row = application_to_model_row(application)
        log_odds, pushes = model.explain_row(row)
        p = probability_bad(model, application)
        assert log_odds == pytest.approx(math.log(p / (1 - p)), abs=1e-9)
        assert sum(pushes.values()) == pytest.approx(log_odds - model.base_value, abs=1e-9)
        assert set(pushes) == set(COLUMNS)
        _, trees = model.boosted_.explain_row(row)
        linear = model.linear_contributions(row)
        for name in COLUMNS:
            expected = model.slope_ * (model.weight_ * trees[name] + (1 - model.weight_) * linear[name])
            assert pushes[name] == pytest.approx(expected, abs=1e-12)
        assert "age_years" not in linear and "age_years" not in pushes  # the logistic part leaves age out too
        assert pushes == contributions(model, application)
        assert all(r.code in COLUMNS for r in reason_codes(model, application))
