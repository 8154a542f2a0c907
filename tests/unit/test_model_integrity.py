"""Model integrity (issue 29, item 4): a version's files are hashed into a manifest signed with
Ed25519 (risk.integrity); the realtime task verifies it before loading the version, and a
tampered, unsigned or foreign-key version is refused and answered with `review`."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from airflow.sdk.exceptions import AirflowFailException

from airflow_adapter import tasks
from onboarding.decision import MODEL_INTEGRITY_ERROR_PREFIX, decision_errors
from onboarding.errors import ConfigError
from risk.artifacts import current_version, load_model, model_store
from risk.cli import main as model_cli
from risk.integrity import DEV_SEED, MANIFEST_FILE, SIGNATURE_FILE, ModelIntegrityError, Signer, verify_version
from risk.model import probability_bad
from risk.policy import Decision
from risk.samples import new_signup
from risk.settings import RiskSettings
from tests.conftest import TEST_REDIS_URL

OTHER_SEED = "11" * 32
DEV = Signer(DEV_SEED).verifier()


@pytest.fixture
def model_dir(trained_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session's trained (and dev-signed) model directory to tamper with."""
    return Path(shutil.copytree(trained_model_dir, tmp_path / "models"))


def folder_of(model_dir: Path) -> Path:
    return model_dir / current_version(model_dir)


def declined_applicant(model_dir: Path) -> tuple[dict, float]:
    """A sample applicant the signed model declines, and its score."""
    loaded = load_model(model_dir, current_version(model_dir), verifier=DEV)
    for seed in range(500):
        signup = new_signup(rng=__import__("random").Random(seed))
        score = probability_bad(loaded.scorer, signup["application"])
        if loaded.policy.decide(score) is Decision.DECLINE:
            return signup, score
    raise AssertionError("no declined sample applicant in 500")


def turn_decline_into_approve(model_dir: Path, score: float) -> None:
    """The issue's attack: edit only metadata.json so the policy approves this score."""
    path = folder_of(model_dir) / "metadata.json"
    meta = json.loads(path.read_text())
    meta["policy"] = {"approve_max": round(score + 0.01, 6), "decline_min": 0.99}
    path.write_text(json.dumps(meta, indent=2) + "\n")


def test_a_signed_version_loads_with_its_content_hash(model_dir: Path) -> None:
    loaded = load_model(model_dir, current_version(model_dir), verifier=DEV)
    assert loaded.content_hash == verify_version(folder_of(model_dir), DEV)
    assert len(loaded.content_hash or "") == 64
    manifest = json.loads((folder_of(model_dir) / MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == {"model.skops", "metadata.json"}


def test_the_issues_tampering_turns_decline_into_approve_without_the_check_and_is_refused_with_it(
    model_dir: Path,
) -> None:
    _signup, score = declined_applicant(model_dir)
    turn_decline_into_approve(model_dir, score)
    unchecked = load_model(model_dir, current_version(model_dir))  # what the service did before
    assert unchecked.policy.decide(score) is Decision.APPROVE
    with pytest.raises(ModelIntegrityError, match=r"metadata\.json was changed after signing"):
        load_model(model_dir, current_version(model_dir), verifier=DEV)
    with pytest.raises(ModelIntegrityError):
        model_store(model_dir, verifier=DEV).current()


@pytest.mark.parametrize("name", ["model.skops", "metadata.json"])
def test_each_signed_file_changed_by_one_byte_is_refused(model_dir: Path, name: str) -> None:
    path = folder_of(model_dir) / name
    path.write_bytes(path.read_bytes() + b" ")
    with pytest.raises(ModelIntegrityError, match=f"{re.escape(name)} was changed after signing"):
        load_model(model_dir, current_version(model_dir), verifier=DEV)


def test_a_manifest_rewritten_to_match_the_tampered_file_fails_its_signature(model_dir: Path) -> None:
    import hashlib

    folder = folder_of(model_dir)
    (folder / "metadata.json").write_text(
        (folder / "metadata.json").read_text().replace('"approve_max"', '"approve_max" ')
    )
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest["files"]["metadata.json"] = hashlib.sha256((folder / "metadata.json").read_bytes()).hexdigest()
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    with pytest.raises(ModelIntegrityError, match="signature does not verify"):
        verify_version(folder, DEV)


@pytest.mark.parametrize("missing", [MANIFEST_FILE, SIGNATURE_FILE])
def test_an_unsigned_version_is_refused(model_dir: Path, missing: str) -> None:
    (folder_of(model_dir) / missing).unlink()
    with pytest.raises(ModelIntegrityError, match=f"unsigned: {missing} is missing"):
        load_model(model_dir, current_version(model_dir), verifier=DEV)


def test_a_version_signed_with_another_key_is_refused_and_accepted_with_that_key(model_dir: Path) -> None:
    from risk.integrity import sign_version

    folder = folder_of(model_dir)
    sign_version(folder, Signer(OTHER_SEED))
    with pytest.raises(ModelIntegrityError, match="does not verify with the service's key"):
        verify_version(folder, DEV)
    assert verify_version(folder, Signer(OTHER_SEED).verifier())


def test_a_manifest_copied_from_another_version_is_refused(model_dir: Path, tmp_path: Path) -> None:
    folder = folder_of(model_dir)
    other = model_dir / "20990101T000000Z-copy"
    shutil.copytree(folder, other)
    with pytest.raises(ModelIntegrityError, match="signed for version"):
        verify_version(other, DEV)


def test_settings_refuse_the_development_key_when_a_key_is_required() -> None:
    required = RiskSettings.from_env({"MODEL_SIGNING_REQUIRE_KEY": "true"})
    with pytest.raises(ConfigError, match="MODEL_SIGNING_KEY"):
        required.signer()
    with pytest.raises(ConfigError, match="MODEL_VERIFY_KEY"):
        required.verifier()
    production = RiskSettings.from_env({"MODEL_SIGNING_REQUIRE_KEY": "true", "MODEL_SIGNING_KEY": OTHER_SEED})
    assert production.verifier() == Signer(OTHER_SEED).verifier() == production.signer().verifier()
    public = Signer(OTHER_SEED).verifier().public_key_hex
    assert RiskSettings.from_env({"MODEL_VERIFY_KEY": public}).verifier().public_key_hex == public
    with pytest.raises(ConfigError, match="MODEL_SIGNING_KEY is not 64 hex digits"):
        RiskSettings.from_env({"MODEL_SIGNING_KEY": "secret"})
    assert OTHER_SEED not in repr(production) and OTHER_SEED not in repr(production.signer())


def test_verify_and_sign_commands(model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("RISK_MODEL_DIR", str(model_dir))
    assert model_cli(["verify"]) == 0
    (folder_of(model_dir) / SIGNATURE_FILE).unlink()
    assert model_cli(["verify"]) == 1
    assert "unsigned" in capsys.readouterr().err
    assert model_cli(["sign", current_version(model_dir)]) == 0
    assert model_cli(["verify"]) == 0


@pytest.fixture
def task_env(monkeypatch: pytest.MonkeyPatch, model_dir: Path) -> Iterator[Path]:
    monkeypatch.setenv("REDIS_URL", TEST_REDIS_URL)
    monkeypatch.setenv("RISK_MODEL_DIR", str(model_dir))
    tasks.settings.cache_clear()
    yield model_dir
    tasks.settings.cache_clear()


def test_the_task_answers_review_with_the_integrity_error_and_fails_without_retries(
    redis_client: redis.Redis, task_env: Path
) -> None:
    signup, score = declined_applicant(task_env)
    turn_decline_into_approve(task_env, score)
    conf = {**signup, "accepted_at": "2026-12-04T10:00:00+00:00"}
    with pytest.raises(AirflowFailException, match=r"metadata\.json was changed after signing"):
        tasks.decide_and_publish(conf, None, f"signup__{signup['event_id']}")
    (entry,) = redis_client.xrange("decisions")
    decision = json.loads(entry[1][b"payload"])
    assert decision_errors(decision) == []
    assert decision["decision"] == "review" and decision["event_id"] == signup["event_id"]
    assert decision["error"].startswith(MODEL_INTEGRITY_ERROR_PREFIX)
    assert "metadata.json was changed after signing" in decision["error"]


def test_the_task_decides_with_a_signed_model(redis_client: redis.Redis, task_env: Path) -> None:
    signup, _score = declined_applicant(task_env)
    decided = tasks.decide_and_publish({**signup, "accepted_at": None}, None, f"signup__{signup['event_id']}")
    assert decided["decision"] == "decline"


def test_a_missing_version_is_a_model_error_not_an_integrity_failure(model_dir: Path) -> None:
    """A CURRENT naming no folder is a broken promotion: it must not page ModelIntegrityFailure."""
    from risk.errors import ModelError

    with pytest.raises(ModelError, match="does not exist") as raised:
        verify_version(model_dir / "does-not-exist", DEV)
    assert not isinstance(raised.value, ModelIntegrityError)


# Promotion and rollback verify before they write CURRENT: the batch side never puts in service a
# version the realtime side would refuse (which would answer `review` to every signup).

GATE_CV = {"repeats": 3, "folds": 10, "seed": 0, "data_sha256": "x"}


def signed_copy(model_dir: Path, name: str, auc: float, cost: float, seed: str = DEV_SEED) -> str:
    """A version named `name`: the trained version's files, with gate metrics, signed with `seed`."""
    from risk.integrity import sign_version

    source = folder_of(model_dir)
    folder = model_dir / name
    folder.mkdir()
    (folder / "model.skops").write_bytes((source / "model.skops").read_bytes())
    meta = json.loads((source / "metadata.json").read_text())
    meta |= {
        "version": name,
        "cv": GATE_CV,
        "metrics": {"auc": {"mean": auc, "std": 0.01}, "cost_policy": {"mean": cost, "std": 0.01}},
    }
    (folder / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    sign_version(folder, Signer(seed))
    return name


def history_of(model_dir: Path) -> list[dict]:
    from risk.registry import history

    return history(model_dir)


@pytest.fixture
def promoted(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, str, str]:
    """A model directory where signed version A is in service through `onboarding-model promote`,
    and signed version B, better on the gate, is waiting."""
    monkeypatch.setenv("RISK_MODEL_DIR", str(model_dir))
    a = signed_copy(model_dir, "20990101T000000Z-a", auc=0.78, cost=0.55)
    assert model_cli(["promote", a, "--force"]) == 0  # the session's baseline has no CV record to gate on
    b = signed_copy(model_dir, "20990102T000000Z-b", auc=0.79, cost=0.54)
    return model_dir, a, b


def test_promote_of_a_signed_version_puts_it_in_service(promoted: tuple[Path, str, str], capsys) -> None:
    model_dir, a, b = promoted
    capsys.readouterr()
    assert model_cli(["promote", b]) == 0
    assert json.loads(capsys.readouterr().out)["current"] == b
    assert current_version(model_dir) == b
    assert history_of(model_dir)[-1] | {"at": None, "reasons": None} == {
        "at": None,
        "action": "promote",
        "version": b,
        "previous": a,
        "reasons": None,
        "sequence": history_of(model_dir)[-2]["sequence"] + 1,  # CURRENT's signed promotion number
    }
    assert model_store(model_dir, verifier=DEV).current().version == b  # what the realtime side loads


def tamper(folder: Path, how: str) -> str:
    """Damage a signed version the three ways the realtime side refuses; the reason it gives."""
    from risk.integrity import sign_version

    if how == "tampered":
        meta = json.loads((folder / "metadata.json").read_text())
        meta["policy"] = {"approve_max": 0.9, "decline_min": 0.99}  # the issue's attack
        (folder / "metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
        return "metadata.json was changed after signing"
    if how == "unsigned":
        (folder / SIGNATURE_FILE).unlink()
        return f"unsigned: {SIGNATURE_FILE} is missing"
    sign_version(folder, Signer(OTHER_SEED))  # another key than the service's
    return "signature does not verify with the service's key"


@pytest.mark.parametrize("force", [[], ["--force"]], ids=["gate", "force"])
@pytest.mark.parametrize("how", ["tampered", "unsigned", "foreign-key"])
def test_promote_refuses_a_version_that_does_not_verify_and_current_stays(
    promoted: tuple[Path, str, str], capsys, how: str, force: list[str]
) -> None:
    model_dir, a, b = promoted
    reason = tamper(model_dir / b, how)
    before = (model_dir / "CURRENT").read_bytes()
    capsys.readouterr()
    assert model_cli(["promote", b, *force]) == 1
    err = capsys.readouterr().err
    assert f"version {b!r} refused: " in err and reason in err
    assert f"not put in service by promote, {a} stays in service" in err
    if force:
        assert "--force overrides the promotion gate, never the signature" in err
    assert (model_dir / "CURRENT").read_bytes() == before
    assert current_version(model_dir) == a
    refusal = history_of(model_dir)[-1]
    assert (refusal["action"], refusal["version"], refusal["previous"]) == ("refused", b, a)
    assert refusal["reasons"][0].startswith(f"promote: {MODEL_INTEGRITY_ERROR_PREFIX} version {b!r} refused")
    assert reason in refusal["reasons"][0]


def test_force_still_overrides_the_gate_for_a_signed_version(promoted: tuple[Path, str, str]) -> None:
    """The control for the test above: --force does promote a signed version the gate refuses."""
    model_dir, a, _b = promoted
    worse = signed_copy(model_dir, "20990103T000000Z-worse", auc=0.70, cost=0.60)
    assert model_cli(["promote", worse]) == 1
    assert current_version(model_dir) == a
    assert model_cli(["promote", worse, "--force"]) == 0
    assert current_version(model_dir) == worse
    assert history_of(model_dir)[-1]["forced"] is True  # HISTORY says the gate was overridden


def test_rollback_refuses_a_previous_version_that_no_longer_verifies_and_goes_no_further(
    promoted: tuple[Path, str, str], capsys
) -> None:
    model_dir, _a, b = promoted
    assert model_cli(["promote", b]) == 0
    c = signed_copy(model_dir, "20990104T000000Z-c", auc=0.80, cost=0.53)
    assert model_cli(["promote", c]) == 0  # history: a, then b (replacing a), then c (replacing b)
    reason = tamper(model_dir / b, "tampered")
    capsys.readouterr()
    assert model_cli(["rollback"]) == 1
    err = capsys.readouterr().err
    assert f"version {b!r} refused: {reason}" in err
    assert f"not put in service by rollback, {c} stays in service" in err
    assert current_version(model_dir) == c  # neither b nor _a, the older version that verifies
    refusal = history_of(model_dir)[-1]
    assert (refusal["action"], refusal["version"], refusal["previous"]) == ("refused", b, c)
    assert refusal["reasons"][0].startswith("rollback: ")
    # Once b verifies again (an operator re-signed what they checked), the rollback goes to it.
    from risk.integrity import sign_version

    sign_version(model_dir / b, Signer())
    assert model_cli(["rollback"]) == 0
    assert current_version(model_dir) == b


def test_promotion_verifies_with_the_configured_key(
    promoted: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """With MODEL_SIGNING_KEY set, a version signed with the development key is refused and
    one signed with the configured key is promoted (MODEL_VERIFY_KEY alone: the same)."""
    model_dir, a, b = promoted
    ours = signed_copy(model_dir, "20990105T000000Z-ours", auc=0.79, cost=0.54, seed=OTHER_SEED)
    monkeypatch.setenv("MODEL_SIGNING_KEY", OTHER_SEED)
    monkeypatch.setenv("MODEL_SIGNING_REQUIRE_KEY", "true")
    capsys.readouterr()
    assert model_cli(["promote", b]) == 1  # signed with the development key
    assert "signature does not verify with the service's key" in capsys.readouterr().err
    assert current_version(model_dir) == a
    assert model_cli(["promote", ours]) == 0  # the champion a, dev-signed, is not defended
    assert current_version(model_dir) == ours
    monkeypatch.delenv("MODEL_SIGNING_KEY")
    monkeypatch.setenv("MODEL_VERIFY_KEY", Signer(OTHER_SEED).verifier().public_key_hex)
    assert model_cli(["promote", b]) == 1
    assert current_version(model_dir) == ours


def test_the_retraining_dags_promotion_fails_without_retries_on_a_version_that_does_not_verify(
    promoted: tuple[Path, str, str],
) -> None:
    from airflow_adapter.maintenance import gate_and_promote

    model_dir, a, b = promoted
    reason = tamper(model_dir / b, "tampered")
    with pytest.raises(AirflowFailException, match=re.escape(reason)):
        gate_and_promote(b)
    assert current_version(model_dir) == a
    assert history_of(model_dir)[-1]["action"] == "refused"


# CURRENT is signed too: whoever can write the model volume without the key cannot point the
# service at another version, signed or not (risk.integrity.verify_pointer).


def test_current_edited_by_hand_to_another_signed_version_is_refused_and_answered_review(
    promoted: tuple[Path, str, str], redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The attack: B is signed (a good version, or an old worse one) but nobody holding the key
    put it in service; an edit of CURRENT by hand, unsigned or with A's signature line kept,
    is refused by the realtime side, and the task answers `review` with the integrity error."""
    model_dir, a, b = promoted
    signed = (model_dir / "CURRENT").read_text()
    assert model_store(model_dir, verifier=DEV).current().version == a
    for text, reason in (
        (f"{b}\n", "CURRENT is not signed"),
        (f"{b}\n{signed.splitlines()[1]}\n", "CURRENT's signature does not verify"),
    ):
        (model_dir / "CURRENT").write_text(text)
        with pytest.raises(ModelIntegrityError, match=reason) as raised:
            model_store(model_dir, verifier=DEV).current()
        assert raised.value.version == b
    monkeypatch.setenv("REDIS_URL", TEST_REDIS_URL)
    tasks.settings.cache_clear()
    try:
        signup = new_signup(rng=__import__("random").Random(5))
        with pytest.raises(AirflowFailException):
            tasks.decide_and_publish({**signup, "accepted_at": None}, None, f"signup__{signup['event_id']}")
    finally:
        tasks.settings.cache_clear()
    decision = json.loads(redis_client.get(f"decisions:event:{signup['event_id']}"))
    assert decision["decision"] == "review"
    assert decision["error"].startswith(MODEL_INTEGRITY_ERROR_PREFIX) and "CURRENT's signature" in decision["error"]
    assert model_cli(["verify"]) == 1  # the operator's check says the same


def test_an_old_current_put_back_is_refused_by_a_process_that_served_a_newer_one(
    promoted: tuple[Path, str, str],
) -> None:
    """A replayed pointer: a copy of CURRENT from A's promotion, put back after B's. A process
    that served B refuses it; a rollback through the command (a newer promotion) is accepted.
    A process started after the copy was put back cannot know (docs/security.md, C15)."""
    from risk.artifacts import ModelStore

    model_dir, a, b = promoted
    old_pointer = (model_dir / "CURRENT").read_text()
    store = ModelStore(model_dir, verifier=DEV)
    assert store.current().version == a
    assert model_cli(["promote", b]) == 0
    assert store.current().version == b
    (model_dir / "CURRENT").write_text(old_pointer)
    with pytest.raises(ModelIntegrityError, match="CURRENT went back to promotion"):
        store.current()
    assert ModelStore(model_dir, verifier=DEV).current().version == a  # a fresh process: the residual
    assert model_cli(["promote", b]) == 0 and model_cli(["rollback"]) == 0
    assert store.current().version == a  # the rollback is a newer promotion


def test_current_is_signed_with_the_batch_key_and_sign_current_upgrades_an_unsigned_one(
    promoted: tuple[Path, str, str], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Promotion signs CURRENT with MODEL_SIGNING_KEY (a realtime side with the development key
    refuses it); `onboarding-model sign-current` signs a pointer written before pointers were
    signed, only if the version it names verifies, and records it in HISTORY."""
    from risk.artifacts import current_pointer
    from risk.integrity import sign_version

    model_dir, _a, b = promoted
    other = Signer(OTHER_SEED)
    sign_version(model_dir / b, other)
    monkeypatch.setenv("MODEL_SIGNING_KEY", OTHER_SEED)
    assert model_cli(["promote", b]) == 0
    assert current_pointer(model_dir, other.verifier()).version == b
    with pytest.raises(ModelIntegrityError, match="CURRENT's signature does not verify"):
        current_pointer(model_dir, DEV)
    (model_dir / "CURRENT").write_text(f"{b}\n")  # as a release before signed pointers wrote it
    capsys.readouterr()
    assert model_cli(["sign-current"]) == 0
    assert json.loads(capsys.readouterr().out) | {"sequence": None} == {"current": b, "sequence": None, "signed": True}
    assert current_pointer(model_dir, other.verifier()).version == b
    assert history_of(model_dir)[-1]["action"] == "sign-current"
    tamper(model_dir / b, "tampered")
    assert model_cli(["sign-current"]) == 1  # never vouches for a version that does not verify
